"""eventfd and epoll objects: files with no path that count or watch others."""

from __future__ import annotations

import dataclasses
import errno
import itertools
import stat
import struct
import threading

from osv._record import Record
from osv.sched._lock import blocking

from ._abi import O_NONBLOCK, O_RDWR, POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM
from ._errors import FsError
from ._file import File
from ._signals import interruption, wait
from ._vnode import Vnode

# Both live on Linux's anonymous-inode file system.
ANON_INODE_DEV = 0x0D
EVENTFD_MAX = 0xFFFFFFFFFFFFFFFE
EFD_SEMAPHORE = 1
_inodes = itertools.count(2_000_000)


class AnonVnode(Vnode):
    """The single inode behind an eventfd or epoll file."""

    def __init__(self) -> None:
        super().__init__(None, next(_inodes), stat.S_IRUSR | stat.S_IWUSR)

    def stat(self):  # noqa: ANN201
        return dataclasses.replace(super().stat(), st_dev=ANON_INODE_DEV)


class EventFile(File):
    """eventfd(2): a 64-bit counter that read drains and write adds to."""

    def __init__(self, initial: int, flags: int, semaphore: bool) -> None:
        super().__init__(
            AnonVnode(), O_RDWR | (flags & O_NONBLOCK), "anon_inode:[eventfd]"
        )
        self.counter = initial
        self.semaphore = semaphore
        self.changed = threading.Condition()

    def readinto(self, buf: memoryview) -> int:
        if len(buf) < 8:
            raise FsError(errno.EINVAL, "eventfd reads need 8 bytes")
        with blocking(), self.changed:
            while self.counter == 0:
                if self.flags & O_NONBLOCK:
                    raise FsError(errno.EAGAIN, "eventfd counter is zero")
                # A signal ends the wait: EINTR, or a restart with SA_RESTART.
                if not wait(self.changed):
                    raise interruption()
            value = 1 if self.semaphore else self.counter
            self.counter -= value
            self.changed.notify_all()
        buf[:8] = struct.pack("<Q", value)
        return 8

    def read(self, size: int) -> bytes:
        buffer = bytearray(max(size, 0))
        return bytes(buffer[: self.readinto(memoryview(buffer))])

    def write(self, data: bytes | memoryview) -> int:
        if len(data) < 8:
            raise FsError(errno.EINVAL, "eventfd writes need 8 bytes")
        (value,) = struct.unpack("<Q", bytes(data[:8]))
        if value == 0xFFFFFFFFFFFFFFFF:
            raise FsError(errno.EINVAL, "eventfd cannot add 2**64-1")
        with blocking(), self.changed:
            while self.counter + value > EVENTFD_MAX:
                if self.flags & O_NONBLOCK:
                    raise FsError(errno.EAGAIN, "eventfd counter would overflow")
                if not wait(self.changed):
                    raise interruption()
            self.counter += value
            self.changed.notify_all()
        return 8

    def lseek(self, offset: int, whence: int) -> int:
        raise FsError(errno.ESPIPE, "cannot seek on an eventfd")

    def poll_ready(self, events: int) -> int:
        ready = 0
        if self.counter > 0:
            ready |= events & (POLLIN | POLLRDNORM)
        if self.counter < EVENTFD_MAX:
            ready |= events & (POLLOUT | POLLWRNORM)
        return ready


EPOLLIN = 0x1
EPOLLOUT = 0x4
EPOLLERR = 0x8
EPOLLHUP = 0x10
EPOLLRDHUP = 0x2000
EPOLLEXCLUSIVE = 1 << 28
EPOLLWAKEUP = 1 << 29
EPOLLONESHOT = 1 << 30
EPOLLET = 1 << 31
EPOLL_CTL_ADD = 1
EPOLL_CTL_DEL = 2
EPOLL_CTL_MOD = 3


class Interest(Record):
    """One file on an epoll interest list: the events asked for, the user data."""

    __slots__ = ("file", "events", "data", "reported", "disabled")

    def __init__(
        self,
        file: File,
        events: int,
        data: int,
        reported: int = 0,
        disabled: bool = False,
    ) -> None:
        self.file = file
        self.events = events
        self.data = data
        self.reported = reported
        self.disabled = disabled


class EpollFile(File):
    """epoll(7): an interest list, polled for readiness when waited on."""

    # Rationale: the files behind the interest list (pipes, eventfds, the
    # console, sockets of a module) report readiness through poll_ready, so
    # epoll_wait asks each of them, as poll(2) does. Edge-triggered entries
    # (EPOLLET) are reported once per change from not ready to ready, which is
    # what a program written for edge triggering relies on; EPOLLONESHOT
    # entries are disabled after one report until EPOLL_CTL_MOD.

    def __init__(self) -> None:
        super().__init__(AnonVnode(), O_RDWR, "anon_inode:[eventpoll]")
        self.interests: dict[int, Interest] = {}

    def control(self, op: int, fd: int, target: File, events: int, data: int) -> None:
        if target is self:
            raise FsError(errno.EINVAL, "an epoll instance cannot watch itself")
        if op == EPOLL_CTL_ADD:
            if fd in self.interests:
                raise FsError(errno.EEXIST, "fd already watched")
            self.interests[fd] = Interest(target, events, data)
        elif op == EPOLL_CTL_MOD:
            if fd not in self.interests:
                raise FsError(errno.ENOENT, "fd not watched")
            self.interests[fd] = Interest(target, events, data)
        elif op == EPOLL_CTL_DEL:
            if self.interests.pop(fd, None) is None:
                raise FsError(errno.ENOENT, "fd not watched")
        else:
            raise FsError(errno.EINVAL, f"unknown epoll_ctl operation {op}")

    def ready(self, max_events: int) -> list[tuple[int, int]]:
        """(events, data) of the watched files that are ready now."""
        found = []
        for fd, interest in list(self.interests.items()):
            if interest.file.closed:
                del self.interests[fd]
                continue
            if interest.disabled:
                continue
            wanted = interest.events | EPOLLERR | EPOLLHUP
            events = interest.file.poll_ready(wanted & 0xFFFF) & wanted
            if interest.events & EPOLLET:
                fresh = events & ~interest.reported
                interest.reported = events
                events = fresh
            if not events:
                continue
            found.append((events, interest.data))
            if interest.events & EPOLLONESHOT:
                interest.disabled = True
            if len(found) >= max_events:
                break
        return found

    def lseek(self, offset: int, whence: int) -> int:
        raise FsError(errno.ESPIPE, "cannot seek on an epoll file")

    def poll_ready(self, events: int) -> int:
        has_ready = any(
            not i.disabled and i.file.poll_ready(i.events & 0xFFFF)
            for i in self.interests.values()
            if not i.file.closed
        )
        return events & (POLLIN | POLLRDNORM) if has_ready else 0
