"""What every system-call family shares: the error type, argument decoding."""

from __future__ import annotations

import errno
import logging
import struct

from osv.syscalls._numbers import NAMES

logger = logging.getLogger(__name__)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
PATH_MAX = 4096


class SyscallError(Exception):
    """Fails the current system call with ``errno`` (returned as -errno)."""

    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(message or errno.errorcode.get(err, str(err)))
        self.errno = err


def s32(value: int) -> int:
    """A register's low 32 bits as a signed int (fd and flag arguments)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def s64(value: int) -> int:
    """A register as a signed 64-bit int (offsets, results)."""
    return value - (1 << 64) if value & (1 << 63) else value


def read_timespec(t, address: int) -> int:  # noqa: ANN001
    """A struct timespec argument in nanoseconds; EINVAL when malformed."""
    sec, nsec = struct.unpack("<qq", t.mm.read(address, 16))
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise SyscallError(errno.EINVAL)
    return sec * 1_000_000_000 + nsec


def path_arg(t, address: int) -> str:  # noqa: ANN001 - osv.sched.Task
    """Read a path argument: ENOENT for "", ENAMETOOLONG past PATH_MAX."""
    if address == 0:
        raise SyscallError(errno.EFAULT)
    raw = t.mm.read_cstring(address, PATH_MAX + 1)
    if len(raw) >= PATH_MAX:
        raise SyscallError(errno.ENAMETOOLONG)
    return raw.decode("utf-8", "surrogateescape")


def dir_of(t, dirfd: int):  # noqa: ANN001, ANN201 - returns a Vnode
    """The directory a *at() call is relative to."""
    dirfd = s32(dirfd)
    if dirfd == AT_FDCWD:
        return t.process.cwd
    vnode = t.fds.get(dirfd).vnode
    if not vnode.is_dir:
        raise SyscallError(errno.ENOTDIR)
    return vnode


_reported: set[int] = set()

# System calls that belong to a module, and what a program gets when that
# module is not in the image: the errno Linux gives when the feature is not
# configured into the kernel.
MODULE_SYSCALLS = {
    name: (
        "net",
        errno.EAFNOSUPPORT if name in ("socket", "socketpair") else errno.EBADF,
    )
    for name in (
        "socket",
        "socketpair",
        "bind",
        "connect",
        "listen",
        "accept",
        "accept4",
        "getsockname",
        "getpeername",
        "sendto",
        "recvfrom",
        "sendmsg",
        "recvmsg",
        "shutdown",
        "setsockopt",
        "getsockopt",
        "sendmmsg",
        "recvmmsg",
    )
}


def enosys(t, nr: int) -> int:  # noqa: ANN001
    """The answer to a system call nobody implements: ENOSYS, logged once.

    A call that a module would serve gets the errno of a kernel built
    without that feature, and the log says which module to install.
    """
    name = NAMES.get(nr, "unknown")
    owner = MODULE_SYSCALLS.get(name)
    nr = s64(nr)
    if nr not in _reported:
        _reported.add(nr)
        if owner is not None:
            message = (
                f"system call {nr} ({name}) needs the {owner[0]} module "
                f"(pip install osv-mod-{owner[0]})"
            )
            logger.info(message)
        else:
            message = f"unimplemented system call {nr} ({name})"
            logger.warning(message)
        t.kernel.log(message)
    return -(owner[1] if owner is not None else errno.ENOSYS)


def unsupported(what: str, err: int = errno.ENOSYS) -> int:
    """Log once that a feature is not offered, and return its errno."""
    if what not in _reported_features:
        _reported_features.add(what)
        logger.warning("%s is not supported", what)
    return -err


_reported_features: set[str] = set()
