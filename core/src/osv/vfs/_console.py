"""The guest console: a character device on top of host file descriptors."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import threading

from osv.sched._lock import blocking

from ._abi import (
    FIONREAD,
    O_ACCMODE,
    O_NONBLOCK,
    O_RDONLY,
    POLLIN,
    POLLOUT,
    POLLRDNORM,
    POLLWRNORM,
    TCGETS,
    TCSETS,
    TCSETSF,
    TCSETSW,
    TIOCGWINSZ,
)
from ._devfs import DeviceVnode
from ._errors import FsError
from ._file import File, StreamFile
from ._signals import interruption, wait_host_fd
from ._vnode import Mount

logger = logging.getLogger(__name__)

# The kernel's struct termios on x86-64: four tcflag_t, c_line, c_cc[19].
TERMIOS_SIZE = 36
# struct winsize: four unsigned shorts.
WINSIZE_SIZE = 8

# How many argument bytes the caller must read from guest memory for ioctl
# requests that take a structure in; File.ioctl then receives those bytes.
IOCTL_IN_SIZES: dict[int, int] = {
    TCSETS: TERMIOS_SIZE,
    TCSETSW: TERMIOS_SIZE,
    TCSETSF: TERMIOS_SIZE,
}


def _host_error(err: OSError) -> FsError:
    return FsError(err.errno or errno.EIO, f"host console: {err.strerror}")


class Console:
    """The terminal the guest talks to: host fd ``input_fd`` in, ``output_fd`` out.

    What the guest writes is the product's output, so it goes to the host
    fd unchanged and completely. Terminal ioctls are passed to the host
    terminal when there is one; settings the guest changes are put back by
    ``close``.
    """

    def __init__(self, input_fd: int = 0, output_fd: int = 1) -> None:
        self.input_fd = input_fd
        self.output_fd = output_fd
        self._owned_fd: int | None = None
        self._write_lock = threading.Lock()
        self._saved_termios: dict[int, bytes] = {}

    def redirect_output(self, path: str | os.PathLike[str]) -> None:
        """Send output to the host file ``path`` (created or truncated)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        if self._owned_fd is not None:
            os.close(self._owned_fd)
        self._owned_fd = fd
        self.output_fd = fd
        logger.debug("console output goes to %s", os.fspath(path))

    def close(self) -> None:
        """Put back host terminal settings and close a redirect target."""
        for fd, saved in self._saved_termios.items():
            try:
                fcntl.ioctl(fd, TCSETS, saved)
            except OSError as err:
                logger.warning(
                    "could not restore terminal settings of fd %d: %s", fd, err
                )
        self._saved_termios.clear()
        if self._owned_fd is not None:
            os.close(self._owned_fd)
            self._owned_fd = None

    # -- data -------------------------------------------------------------------

    def write(self, data: bytes | memoryview) -> int:
        """Write all of ``data`` to the host, waiting while the host fd is full.

        A host fd in blocking mode waits inside the host's write, where no
        signal reaches it; the host fd's mode is shared with whoever started
        `osv run`, so it is left as it is.
        """
        view = memoryview(data)
        total = len(view)
        fd = self.output_fd
        with blocking(), self._write_lock:
            while view:
                try:
                    n = os.write(fd, view)
                except BlockingIOError:
                    # Only a host fd in non-blocking mode gets here, and only
                    # then can a signal cut the write short (see _signals).
                    if not wait_host_fd(fd, writing=True):
                        if len(view) < total:
                            return total - len(view)
                        raise interruption() from None
                    continue
                except OSError as err:
                    raise _host_error(err) from None
                view = view[n:]
        return total

    def read(self, size: int, nonblocking: bool = False) -> bytes:
        """Up to ``size`` bytes of input; b"" at host end of file."""
        fd = self.input_fd
        with blocking():
            while True:
                self._wait_readable(fd, nonblocking)
                try:
                    return os.read(fd, size)
                except BlockingIOError:
                    continue
                except OSError as err:
                    raise _host_error(err) from None

    def readinto(self, buf: memoryview, nonblocking: bool = False) -> int:
        """Read input straight into ``buf``; 0 at host end of file."""
        fd = self.input_fd
        with blocking():
            while True:
                self._wait_readable(fd, nonblocking)
                try:
                    return os.readv(fd, [buf])
                except BlockingIOError:
                    continue
                except OSError as err:
                    raise _host_error(err) from None

    def input_ready(self) -> bool:
        """Whether a read would return at once."""
        readable, _, _ = select.select([self.input_fd], [], [], 0)
        return bool(readable)

    @staticmethod
    def _wait_readable(fd: int, nonblocking: bool) -> None:
        # A guest that asked for O_NONBLOCK gets EAGAIN rather than a wait.
        # A blocking read waits in select, not in the host read, so that a
        # signal can end the wait (EINTR, or a restart under SA_RESTART);
        # input already there costs one select and no more.
        try:
            readable, _, _ = select.select([fd], [], [], 0)
        except OSError as err:
            raise _host_error(err) from None
        if readable:
            return
        if nonblocking:
            raise FsError(errno.EAGAIN, "no console input yet")
        if not wait_host_fd(fd):
            raise interruption()

    # -- terminal ---------------------------------------------------------------

    def isatty(self, for_input: bool = False) -> bool:
        """Whether the host side (input or output) is a terminal."""
        return os.isatty(self.input_fd if for_input else self.output_fd)

    def ioctl(
        self, request: int, arg: int | bytes, for_input: bool = False
    ) -> int | bytes:
        """Terminal ioctls, answered by the host terminal behind the console.

        TCGETS and TIOCGWINSZ return the structure's bytes; TCSETS, TCSETSW
        and TCSETSF take the termios bytes in ``arg``; FIONREAD returns the
        count of waiting input bytes. ENOTTY when the host side is not a
        terminal, or for any other request.
        """
        if request == FIONREAD:
            try:
                return fcntl.ioctl(self.input_fd, FIONREAD, bytes(4))
            except OSError as err:
                raise _host_error(err) from None
        fd = self.input_fd if for_input else self.output_fd
        if request not in (TCGETS, TIOCGWINSZ) and request not in IOCTL_IN_SIZES:
            raise FsError(errno.ENOTTY, f"console ioctl {request:#x} not supported")
        if not os.isatty(fd):
            raise FsError(errno.ENOTTY, "the console is not a terminal")
        try:
            if request == TCGETS:
                return fcntl.ioctl(fd, TCGETS, bytes(TERMIOS_SIZE))
            if request == TIOCGWINSZ:
                return fcntl.ioctl(fd, TIOCGWINSZ, bytes(WINSIZE_SIZE))
            if not isinstance(arg, bytes) or len(arg) != TERMIOS_SIZE:
                raise FsError(
                    errno.EINVAL, "TCSETS* needs the termios bytes (see IOCTL_IN_SIZES)"
                )
            if fd not in self._saved_termios:
                self._saved_termios[fd] = fcntl.ioctl(fd, TCGETS, bytes(TERMIOS_SIZE))
            fcntl.ioctl(fd, request, arg)
        except OSError as err:
            raise _host_error(err) from None
        return 0


class ConsoleDevice(DeviceVnode):
    """/dev/console and /dev/tty: both lead to the one Console."""

    def __init__(
        self, mount: Mount, ino: int, console: Console, rdev: int, perm: int
    ) -> None:
        super().__init__(mount, ino, rdev, perm)
        self.console = console

    def read(self, offset: int, size: int) -> bytes:
        return self.console.read(size)

    def readinto(self, offset: int, buf: memoryview) -> int:
        return self.console.readinto(buf)

    def write(self, offset: int, data: bytes | memoryview) -> int:
        return self.console.write(data)

    def open(self, flags: int, path: str) -> File:
        return ConsoleFile(self, flags, path, self.console)


class ConsoleFile(StreamFile):
    """An open console. A read-only open speaks for the host input side
    (isatty, terminal ioctls); any other open for the output side.
    """

    no_position = "a terminal has no file position"

    def __init__(
        self, vnode: ConsoleDevice, flags: int, path: str, console: Console
    ) -> None:
        super().__init__(vnode, flags, path)
        self.console = console
        self._for_input = flags & O_ACCMODE == O_RDONLY

    def read(self, size: int) -> bytes:
        if not self.readable:
            raise FsError(errno.EBADF, "file not open for reading")
        return self.console.read(size, bool(self.flags & O_NONBLOCK))

    def readinto(self, buf: memoryview) -> int:
        if not self.readable:
            raise FsError(errno.EBADF, "file not open for reading")
        return self.console.readinto(buf, bool(self.flags & O_NONBLOCK))

    def write(self, data: bytes | memoryview) -> int:
        if not self.writable:
            raise FsError(errno.EBADF, "file not open for writing")
        return self.console.write(data)

    def isatty(self) -> bool:
        return self.console.isatty(self._for_input)

    def ioctl(self, request: int, arg: int | bytes) -> int | bytes:
        return self.console.ioctl(request, arg, self._for_input)

    def poll_ready(self, events: int) -> int:
        ready = events & (POLLOUT | POLLWRNORM)
        if events & (POLLIN | POLLRDNORM) and self.console.input_ready():
            ready |= events & (POLLIN | POLLRDNORM)
        return ready
