"""Pipes, poll and select, and extended attributes."""

from __future__ import annotations

import errno
import logging
import struct
import time

from osv.sched import _signal as signals
from osv.sched._signal import Again, interrupted, wait_for
from osv.sched._sigqueue import UNBLOCKABLE
from osv.syscalls._common import SyscallError, path_arg, read_timespec, s32
from osv.syscalls._numbers import NUMBERS
from osv.vfs import EFD_SEMAPHORE, POLLNVAL, EpollFile, EventFile, FsError, make_pipe

logger = logging.getLogger(__name__)

O_CLOEXEC = 0o2000000
O_NONBLOCK = 0o4000
O_DIRECT = 0o40000
POLLIN = 0x1
POLLOUT = 0x4
POLLERR = 0x8
POLLHUP = 0x10
# How often a blocked poll looks again at sources it cannot wait on directly
# (console input, files served by other threads).
POLL_INTERVAL = 0.005


# ---- pipes -------------------------------------------------------------------


def sys_pipe2(t, fds_ptr, flags, *_):  # noqa: ANN001, ANN002
    flags = s32(flags)
    if flags & ~(O_CLOEXEC | O_NONBLOCK | O_DIRECT):
        raise SyscallError(errno.EINVAL)
    read_end, write_end = make_pipe(flags & O_NONBLOCK)
    cloexec = bool(flags & O_CLOEXEC)
    read_fd = t.fds.install(read_end, cloexec=cloexec)
    try:
        write_fd = t.fds.install(write_end, cloexec=cloexec)
    except FsError:
        t.fds.close(read_fd)
        raise
    t.mm.write(fds_ptr, struct.pack("<ii", read_fd, write_fd))
    return 0


def sys_pipe(t, fds_ptr, *_):  # noqa: ANN001, ANN002
    return sys_pipe2(t, fds_ptr, 0)


# ---- poll and select ---------------------------------------------------------


def _revents(t, fd: int, events: int) -> int:  # noqa: ANN001
    if fd < 0:
        return 0
    try:
        f = t.fds.get(fd)
    except FsError:
        return POLLNVAL
    return f.poll_ready(events | POLLERR | POLLHUP)


def _wait(t, deadline: float | None, ready) -> int:  # noqa: ANN001
    """Call ``ready()`` until it reports something or the deadline passes.

    A signal to handle cuts the wait short with -EINTR (these calls are
    never restarted after a handler, signal(7)); so does the end of the
    program.
    """

    def step() -> int | Again:
        count = ready()
        if count or (deadline is not None and time.monotonic() >= deadline):
            return count
        if signals.signal_pending(t):
            return interrupted(t, restartable=False)
        pause = POLL_INTERVAL
        if deadline is not None:
            pause = min(pause, max(0.0, deadline - time.monotonic()))
        return Again(pause)

    return wait_for(t, step)


def _with_sigmask(t, sigmask: int, sigsetsize: int, call):  # noqa: ANN001, ANN202
    """Run a wait with the signal mask the caller gave (ppoll, pselect, epoll_pwait).

    The mask is put back when the call returns, except after EINTR: then
    the handler's frame saves the original and runs under the temporary one,
    as Linux does.
    """
    if not sigmask:
        return call()
    if sigsetsize != 8:
        raise SyscallError(errno.EINVAL)
    t.saved_mask = t.signal_mask
    t.signal_mask = t.mm.read_u64(sigmask) & ~UNBLOCKABLE
    result = None
    try:
        result = call()
    finally:
        if result != -errno.EINTR and t.saved_mask is not None:
            saved, t.saved_mask = t.saved_mask, None
            signals.set_mask(t, saved)
    return result


def _poll(t, fds_ptr: int, nfds: int, deadline: float | None) -> int:  # noqa: ANN001
    if nfds > t.fds.limit:
        raise SyscallError(errno.EINVAL)
    raw = t.mm.read(fds_ptr, 8 * nfds) if nfds else b""
    entries = [struct.unpack_from("<ihh", raw, 8 * i) for i in range(nfds)]
    results = [0] * nfds

    def ready() -> int:
        count = 0
        for i, (fd, events, _) in enumerate(entries):
            results[i] = _revents(t, fd, events & 0xFFFF) & 0xFFFF
            count += results[i] != 0
        return count

    count = _wait(t, deadline, ready)
    if count < 0:
        return count
    out = b"".join(
        struct.pack("<ihH", fd, events, results[i])
        for i, (fd, events, _) in enumerate(entries)
    )
    if out:
        t.mm.write(fds_ptr, out)
    return count


def sys_poll(t, fds_ptr, nfds, timeout_ms, *_):  # noqa: ANN001, ANN002
    timeout_ms = s32(timeout_ms)
    deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
    return _poll(t, fds_ptr, nfds & 0xFFFFFFFF, deadline)


def _timespec_deadline(t, address: int) -> float | None:  # noqa: ANN001
    if not address:
        return None
    return time.monotonic() + read_timespec(t, address) / 1e9


def sys_ppoll(t, fds_ptr, nfds, timeout_ptr, sigmask, sigsetsize, *_):  # noqa: ANN001, ANN002
    deadline = _timespec_deadline(t, timeout_ptr)
    return _with_sigmask(
        t, sigmask, sigsetsize, lambda: _poll(t, fds_ptr, nfds & 0xFFFFFFFF, deadline)
    )


def _select(t, nfds, readfds, writefds, exceptfds, deadline):  # noqa: ANN001, ANN202
    nfds = s32(nfds)
    if nfds < 0 or nfds > t.fds.limit:
        raise SyscallError(errno.EINVAL)
    nbytes = (nfds + 63) // 64 * 8
    sets = [
        int.from_bytes(t.mm.read(ptr, nbytes), "little") if ptr and nbytes else 0
        for ptr in (readfds, writefds, exceptfds)
    ]
    wanted = sets[0] | sets[1] | sets[2]
    for fd in range(nfds):
        if wanted >> fd & 1:
            t.fds.get(fd)  # EBADF for a closed descriptor, as Linux
    results = [0, 0, 0]

    def ready() -> int:
        count = 0
        results[:] = [0, 0, 0]
        for fd in range(nfds):
            if not wanted >> fd & 1:
                continue
            revents = _revents(t, fd, POLLIN | POLLOUT)
            if sets[0] >> fd & 1 and revents & (POLLIN | POLLHUP | POLLERR):
                results[0] |= 1 << fd
                count += 1
            if sets[1] >> fd & 1 and revents & (POLLOUT | POLLERR):
                results[1] |= 1 << fd
                count += 1
        return count

    count = _wait(t, deadline, ready)
    if count < 0:
        return count
    for ptr, value in zip((readfds, writefds, exceptfds), results, strict=True):
        if ptr and nbytes:
            t.mm.write(ptr, value.to_bytes(nbytes, "little"))
    return count


def sys_select(t, nfds, readfds, writefds, exceptfds, timeout_ptr, *_):  # noqa: ANN001, ANN002
    deadline = None
    if timeout_ptr:
        sec, usec = struct.unpack("<qq", t.mm.read(timeout_ptr, 16))
        if sec < 0 or usec < 0:
            raise SyscallError(errno.EINVAL)
        deadline = time.monotonic() + sec + usec / 1e6
    return _select(t, nfds, readfds, writefds, exceptfds, deadline)


def sys_pselect6(t, nfds, readfds, writefds, exceptfds, timeout_ptr, sigmask):  # noqa: ANN001
    deadline = _timespec_deadline(t, timeout_ptr)
    # The sixth argument points at {const sigset_t *ss; size_t ss_len}.
    mask_ptr = size = 0
    if sigmask:
        mask_ptr, size = struct.unpack("<QQ", t.mm.read(sigmask, 16))
    return _with_sigmask(
        t,
        mask_ptr,
        size,
        lambda: _select(t, nfds, readfds, writefds, exceptfds, deadline),
    )


# ---- eventfd and epoll -------------------------------------------------------


def sys_eventfd2(t, initval, flags, *_):  # noqa: ANN001, ANN002
    flags = s32(flags)
    if flags & ~(O_CLOEXEC | O_NONBLOCK | EFD_SEMAPHORE):
        raise SyscallError(errno.EINVAL)
    event = EventFile(initval & 0xFFFFFFFF, flags, bool(flags & EFD_SEMAPHORE))
    return t.fds.install(event, cloexec=bool(flags & O_CLOEXEC))


def sys_eventfd(t, initval, *_):  # noqa: ANN001, ANN002
    return sys_eventfd2(t, initval, 0)


def sys_epoll_create1(t, flags, *_):  # noqa: ANN001, ANN002
    flags = s32(flags)
    if flags & ~O_CLOEXEC:
        raise SyscallError(errno.EINVAL)
    return t.fds.install(EpollFile(), cloexec=bool(flags & O_CLOEXEC))


def sys_epoll_create(t, size, *_):  # noqa: ANN001, ANN002
    if s32(size) <= 0:
        raise SyscallError(errno.EINVAL)
    return sys_epoll_create1(t, 0)


def _epoll(t, epfd: int) -> EpollFile:  # noqa: ANN001
    f = t.fds.get(s32(epfd))
    if not isinstance(f, EpollFile):
        raise SyscallError(errno.EINVAL)
    return f


def sys_epoll_ctl(t, epfd, op, fd, event, *_):  # noqa: ANN001, ANN002
    epoll = _epoll(t, epfd)
    target = t.fds.get(s32(fd))
    events = data = 0
    if s32(op) != 2:  # EPOLL_CTL_DEL ignores the event
        events, data = struct.unpack("<IQ", t.mm.read(event, 12))
    epoll.control(s32(op), s32(fd), target, events, data)
    return 0


def _epoll_wait(t, epfd, events_ptr, max_events, deadline):  # noqa: ANN001, ANN202
    max_events = s32(max_events)
    if max_events <= 0:
        raise SyscallError(errno.EINVAL)
    epoll = _epoll(t, epfd)
    found: list[tuple[int, int]] = []

    def ready() -> int:
        found[:] = epoll.ready(max_events)
        return len(found)

    count = _wait(t, deadline, ready)
    if count > 0:
        t.mm.write(events_ptr, b"".join(struct.pack("<IQ", e, d) for e, d in found))
    return count


def sys_epoll_wait(t, epfd, events, max_events, timeout_ms, *_):  # noqa: ANN001, ANN002
    timeout_ms = s32(timeout_ms)
    deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
    return _epoll_wait(t, epfd, events, max_events, deadline)


def sys_epoll_pwait(t, epfd, events, max_events, timeout_ms, sigmask, sigsetsize):  # noqa: ANN001
    return _with_sigmask(
        t,
        sigmask,
        sigsetsize,
        lambda: sys_epoll_wait(t, epfd, events, max_events, timeout_ms),
    )


def sys_epoll_pwait2(t, epfd, events, max_events, timeout_ptr, sigmask, sigsetsize):  # noqa: ANN001
    deadline = _timespec_deadline(t, timeout_ptr)
    return _with_sigmask(
        t,
        sigmask,
        sigsetsize,
        lambda: _epoll_wait(t, epfd, events, max_events, deadline),
    )


# ---- extended attributes -----------------------------------------------------

# Rationale: none of the core's file systems stores extended attributes. For a
# file system without them Linux answers "no such attribute" (ENODATA) to a
# get, an empty list to a list, and EOPNOTSUPP to a set; programs such as ls
# and cp rely on exactly these answers to skip ACLs and security labels.


def _xattr_target(t, path_or_fd: int, by_fd: bool, follow: bool) -> None:  # noqa: ANN001
    if by_fd:
        t.fds.get(s32(path_or_fd))
    else:
        t.vfs.resolve(path_arg(t, path_or_fd), t.process.cwd, follow)


def _getxattr(by_fd: bool, follow: bool):  # noqa: ANN202
    def handler(t, target, name, value, size, *_):  # noqa: ANN001, ANN002, ANN202
        _xattr_target(t, target, by_fd, follow)
        return -errno.ENODATA

    return handler


def _listxattr(by_fd: bool, follow: bool):  # noqa: ANN202
    def handler(t, target, buf, size, *_):  # noqa: ANN001, ANN002, ANN202
        _xattr_target(t, target, by_fd, follow)
        return 0

    return handler


def _setxattr(by_fd: bool, follow: bool):  # noqa: ANN202
    def handler(t, target, *_):  # noqa: ANN001, ANN002, ANN202
        _xattr_target(t, target, by_fd, follow)
        return -errno.EOPNOTSUPP

    return handler


SYSCALLS = {
    NUMBERS["eventfd"]: sys_eventfd,
    NUMBERS["eventfd2"]: sys_eventfd2,
    NUMBERS["epoll_create"]: sys_epoll_create,
    NUMBERS["epoll_create1"]: sys_epoll_create1,
    NUMBERS["epoll_ctl"]: sys_epoll_ctl,
    NUMBERS["epoll_wait"]: sys_epoll_wait,
    NUMBERS["epoll_pwait"]: sys_epoll_pwait,
    NUMBERS["epoll_pwait2"]: sys_epoll_pwait2,
    NUMBERS["pipe"]: sys_pipe,
    NUMBERS["pipe2"]: sys_pipe2,
    NUMBERS["poll"]: sys_poll,
    NUMBERS["ppoll"]: sys_ppoll,
    NUMBERS["select"]: sys_select,
    NUMBERS["pselect6"]: sys_pselect6,
    NUMBERS["getxattr"]: _getxattr(False, True),
    NUMBERS["lgetxattr"]: _getxattr(False, False),
    NUMBERS["fgetxattr"]: _getxattr(True, True),
    NUMBERS["listxattr"]: _listxattr(False, True),
    NUMBERS["llistxattr"]: _listxattr(False, False),
    NUMBERS["flistxattr"]: _listxattr(True, True),
    NUMBERS["setxattr"]: _setxattr(False, True),
    NUMBERS["lsetxattr"]: _setxattr(False, False),
    NUMBERS["fsetxattr"]: _setxattr(True, True),
    NUMBERS["removexattr"]: _setxattr(False, True),
    NUMBERS["lremovexattr"]: _setxattr(False, False),
    NUMBERS["fremovexattr"]: _setxattr(True, True),
}
