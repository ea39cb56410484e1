"""The file-descriptor table: small integers naming shared open files."""

from __future__ import annotations

import errno
import threading

from ._abi import O_CLOEXEC
from ._errors import FsError
from ._file import File

# The soft RLIMIT_NOFILE Linux gives a process by default.
DEFAULT_FD_LIMIT = 1024


class FdTable:
    """Maps fds to File objects, each with its close-on-exec flag.

    Every fd holds one reference to its File: ``install`` takes over the
    caller's reference, ``dup`` adds one, ``close`` drops one.
    ``limit`` is the soft RLIMIT_NOFILE: fds are always below it.
    """

    def __init__(self, limit: int = DEFAULT_FD_LIMIT) -> None:
        self.limit = limit
        self._files: dict[int, File] = {}
        self._cloexec: set[int] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, fd: int) -> bool:
        return fd in self._files

    def install(
        self, file: File, fd: int | None = None, min_fd: int = 0, cloexec: bool = False
    ) -> int:
        """Give ``file`` an fd and return it.

        Without ``fd``: the lowest free fd at or above ``min_fd`` (EINVAL if
        ``min_fd`` is past the limit, EMFILE if none is free). With ``fd``:
        exactly that one, closing what it held before (EBADF when out of
        range), as dup2 does.
        """
        with self._lock:
            if fd is None:
                fd = self._lowest_free(min_fd)
            elif fd < 0 or fd >= self.limit:
                raise FsError(errno.EBADF, f"fd {fd} is out of range")
            old = self._files.get(fd)
            self._files[fd] = file
            self._set_flag(fd, cloexec)
        if old is not None:
            old.close()
        return fd

    def get(self, fd: int) -> File:
        """The File behind ``fd``; EBADF when there is none."""
        try:
            return self._files[fd]
        except KeyError:
            raise FsError(errno.EBADF, f"fd {fd} is not open") from None

    def close(self, fd: int) -> None:
        """close(2): forget ``fd`` and drop its reference to the File."""
        with self._lock:
            file = self._files.pop(fd, None)
            if file is None:
                raise FsError(errno.EBADF, f"fd {fd} is not open")
            self._cloexec.discard(fd)
        file.close()

    def dup(self, fd: int, min_fd: int = 0, cloexec: bool = False) -> int:
        """dup(2) and fcntl(F_DUPFD[_CLOEXEC]): lowest free fd >= ``min_fd``."""
        with self._lock:
            file = self.get(fd)
            new = self._lowest_free(min_fd)
            self._files[new] = file.acquire()
            self._set_flag(new, cloexec)
        return new

    def dup2(self, old: int, new: int) -> int:
        """dup2(2): make ``new`` refer to the file of ``old``."""
        file = self.get(old)
        if old == new:
            return new
        return self.install(file.acquire(), fd=new)

    def dup3(self, old: int, new: int, flags: int) -> int:
        """dup3(2): like dup2, but EINVAL when equal; ``flags`` is 0 or O_CLOEXEC."""
        if flags & ~O_CLOEXEC:
            raise FsError(errno.EINVAL, f"unknown dup3 flags {flags:#x}")
        if old == new:
            raise FsError(errno.EINVAL, "dup3 with equal fds")
        file = self.get(old)
        return self.install(file.acquire(), fd=new, cloexec=bool(flags & O_CLOEXEC))

    def get_cloexec(self, fd: int) -> bool:
        """fcntl(F_GETFD) & FD_CLOEXEC."""
        self.get(fd)
        return fd in self._cloexec

    def set_cloexec(self, fd: int, cloexec: bool) -> None:
        """fcntl(F_SETFD, FD_CLOEXEC or 0)."""
        with self._lock:
            self.get(fd)
            self._set_flag(fd, cloexec)

    def items(self) -> list[tuple[int, File]]:
        """Open fds and their Files, lowest fd first."""
        return sorted(self._files.items())

    def close_all(self) -> None:
        """Close every fd, as process exit does."""
        with self._lock:
            files = list(self._files.values())
            self._files.clear()
            self._cloexec.clear()
        for file in files:
            file.close()

    def _lowest_free(self, min_fd: int) -> int:
        if min_fd < 0 or min_fd >= self.limit:
            raise FsError(errno.EINVAL, f"fd {min_fd} is out of range")
        fd = min_fd
        files = self._files
        while fd in files:
            fd += 1
        if fd >= self.limit:
            raise FsError(errno.EMFILE, "too many open files")
        return fd

    def _set_flag(self, fd: int, cloexec: bool) -> None:
        if cloexec:
            self._cloexec.add(fd)
        else:
            self._cloexec.discard(fd)
