"""Anonymous pipes: a bounded byte queue with a read end and a write end."""

from __future__ import annotations

import dataclasses
import errno
import itertools
import stat
import threading

from osv.sched._lock import blocking

from ._abi import (
    O_NONBLOCK,
    O_RDONLY,
    O_WRONLY,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLOUT,
    POLLRDNORM,
    POLLWRNORM,
)
from ._errors import FsError
from ._file import StreamFile
from ._signals import interruption, wait
from ._vnode import Vnode

PIPE_BUF = 4096
PIPE_CAPACITY = 65536

# Pipes live on Linux's "pipefs": st_dev of that anonymous mount, fresh inodes.
PIPEFS_DEV = 0x0C
_inodes = itertools.count(1_000_000)


class PipeVnode(Vnode):
    """The shared buffer of one pipe and the count of its open ends."""

    # Rationale: the two ends can be used by different guest threads, each
    # served by its own host thread, so the buffer is guarded by a condition
    # variable: a reader waits for data or for the last writer to close, a
    # writer waits for room or for the last reader to close (then EPIPE).
    # Writes of at most PIPE_BUF bytes are atomic, as POSIX requires. A
    # signal to handle ends either wait (see _signals): a write returns what
    # it wrote so far, a call that moved nothing fails with EINTR, or starts
    # again under SA_RESTART. SIGPIPE goes with EPIPE from the system-call
    # table, which wraps every writing call alike.

    def __init__(self) -> None:
        super().__init__(None, next(_inodes), stat.S_IFIFO | 0o600)
        self.buffer = bytearray()
        self.readers = 0
        self.writers = 0
        self.changed = threading.Condition()

    def stat(self):  # noqa: ANN201
        return dataclasses.replace(
            super().stat(), st_dev=PIPEFS_DEV, st_size=len(self.buffer)
        )


class PipeFile(StreamFile):
    """One end of a pipe."""

    no_position = "a pipe has no file position"

    def __init__(self, pipe: PipeVnode, flags: int) -> None:
        super().__init__(pipe, flags, f"pipe:[{pipe.ino}]")
        self.pipe = pipe
        with pipe.changed:
            if self.readable:
                pipe.readers += 1
            if self.writable:
                pipe.writers += 1

    def release(self) -> None:
        pipe = self.pipe
        with pipe.changed:
            if self.readable:
                pipe.readers -= 1
            if self.writable:
                pipe.writers -= 1
            pipe.changed.notify_all()

    def readinto(self, buf: memoryview) -> int:
        if not self.readable:
            raise FsError(errno.EBADF, "pipe end not open for reading")
        pipe = self.pipe
        with blocking(), pipe.changed:
            while not pipe.buffer:
                if pipe.writers == 0:
                    return 0
                if self.flags & O_NONBLOCK:
                    raise FsError(errno.EAGAIN, "pipe is empty")
                if not wait(pipe.changed):
                    raise interruption()
            count = min(len(buf), len(pipe.buffer))
            buf[:count] = pipe.buffer[:count]
            del pipe.buffer[:count]
            pipe.changed.notify_all()
            return count

    def read(self, size: int) -> bytes:
        buffer = bytearray(size)
        count = self.readinto(memoryview(buffer))
        return bytes(buffer[:count])

    def write(self, data: bytes | memoryview) -> int:
        if not self.writable:
            raise FsError(errno.EBADF, "pipe end not open for writing")
        pipe = self.pipe
        data = memoryview(data).cast("B")
        done = 0
        with blocking(), pipe.changed:
            while done < len(data):
                if pipe.readers == 0:
                    if done:
                        # TODO: Linux sends SIGPIPE with this partial count
                        # too; the system-call table sends it only with EPIPE.
                        return done
                    raise FsError(errno.EPIPE, "no reader on the pipe")
                room = PIPE_CAPACITY - len(pipe.buffer)
                # A write of at most PIPE_BUF bytes goes in whole or not at all.
                if room <= 0 or (len(data) <= PIPE_BUF and room < len(data)):
                    if self.flags & O_NONBLOCK:
                        if done:
                            return done
                        raise FsError(errno.EAGAIN, "pipe is full")
                    if not wait(pipe.changed):
                        if done:
                            return done
                        raise interruption()
                    continue
                count = min(room, len(data) - done)
                pipe.buffer += data[done : done + count]
                done += count
                pipe.changed.notify_all()
        return done

    def poll_ready(self, events: int) -> int:
        pipe = self.pipe
        ready = 0
        with pipe.changed:
            if self.readable:
                if pipe.buffer:
                    ready |= events & (POLLIN | POLLRDNORM)
                if pipe.writers == 0:
                    ready |= POLLHUP
            if self.writable:
                if pipe.readers == 0:
                    ready |= POLLERR
                elif PIPE_CAPACITY - len(pipe.buffer) >= PIPE_BUF:
                    ready |= events & (POLLOUT | POLLWRNORM)
        return ready


def make_pipe(flags: int = 0) -> tuple[PipeFile, PipeFile]:
    """pipe2(2): the read end and the write end of a new pipe."""
    pipe = PipeVnode()
    status = flags & O_NONBLOCK
    return PipeFile(pipe, O_RDONLY | status), PipeFile(pipe, O_WRONLY | status)
