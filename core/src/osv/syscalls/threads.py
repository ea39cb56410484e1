"""Threads: clone and clone3 for new threads, futex, and the end of a thread."""

from __future__ import annotations

import errno
import logging
import struct
import time

from osv.sched import FutexTable, ProcessExit, ThreadExit
from osv.sched import _signal as signals
from osv.sched._futex import Waiter
from osv.sched._lock import blocking
from osv.sched._signal import interrupted, interruptible
from osv.syscalls._common import SyscallError, read_timespec, s32, unsupported
from osv.syscalls._numbers import NUMBERS

logger = logging.getLogger(__name__)

CLONE_VM = 0x00000100
CLONE_FS = 0x00000200
CLONE_FILES = 0x00000400
CLONE_SIGHAND = 0x00000800
CLONE_PIDFD = 0x00001000
CLONE_VFORK = 0x00004000
CLONE_THREAD = 0x00010000
CLONE_SYSVSEM = 0x00040000
CLONE_SETTLS = 0x00080000
CLONE_PARENT_SETTID = 0x00100000
CLONE_CHILD_CLEARTID = 0x00200000
CLONE_DETACHED = 0x00400000
CLONE_CHILD_SETTID = 0x01000000
THREAD_FLAGS = CLONE_VM | CLONE_THREAD | CLONE_SIGHAND
# Flags a thread-creating clone may carry and this kernel honours.
ACCEPTED = (
    THREAD_FLAGS
    | CLONE_FS
    | CLONE_FILES
    | CLONE_SYSVSEM
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
    | CLONE_DETACHED
    | CLONE_CHILD_SETTID
)


def _clone(t, flags: int, stack: int, parent_tid: int, child_tid: int, tls: int) -> int:  # noqa: ANN001
    if flags & THREAD_FLAGS != THREAD_FLAGS:
        # A new process (fork, vfork, posix_spawn) needs a second address
        # space and exec; a unikernel runs one program.
        return unsupported("fork (a clone without CLONE_VM|CLONE_THREAD)", errno.ENOSYS)
    if flags & ~ACCEPTED & ~0xFF:
        return unsupported(f"clone flags {flags & ~ACCEPTED:#x}", errno.EINVAL)
    child = t.kernel.create_thread(t, stack, tls if flags & CLONE_SETTLS else None)
    if flags & CLONE_PARENT_SETTID:
        t.mm.write(parent_tid, struct.pack("<i", child.tid))
    if flags & CLONE_CHILD_SETTID:
        t.mm.write(child_tid, struct.pack("<i", child.tid))
    if flags & CLONE_CHILD_CLEARTID:
        child.clear_child_tid = child_tid
    t.kernel.start_thread(child)
    return child.tid


def sys_clone(t, flags, stack, parent_tid, child_tid, tls, *_):  # noqa: ANN001, ANN002
    return _clone(t, flags & 0xFFFFFFFF, stack, parent_tid, child_tid, tls)


CLONE_ARGS_SIZE_VER0 = 64


def sys_clone3(t, args, size, *_):  # noqa: ANN001, ANN002
    if size < CLONE_ARGS_SIZE_VER0:
        raise SyscallError(errno.EINVAL)
    (flags, _pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls) = (
        struct.unpack("<8Q", t.mm.read(args, CLONE_ARGS_SIZE_VER0))
    )
    if exit_signal and flags & CLONE_THREAD:
        raise SyscallError(errno.EINVAL)
    top = stack + stack_size if stack else 0
    return _clone(t, flags, top, parent_tid, child_tid, tls)


def sys_fork(t, *_):  # noqa: ANN001, ANN002
    return unsupported("fork", errno.ENOSYS)


def sys_execve(t, *_):  # noqa: ANN001, ANN002
    # The image runs one program; replacing it is not offered, as in OSv.
    return unsupported("execve", errno.ENOSYS)


def sys_wait4(t, *_):  # noqa: ANN001, ANN002
    # No child process can exist (fork is not offered): Linux's answer then.
    return -errno.ECHILD


def sys_exit(t, status, *_):  # noqa: ANN001, ANN002
    """End the calling thread; the last thread's end is the program's."""
    if t.kernel.end_thread(t):
        raise ProcessExit(status & 0xFF)
    raise ThreadExit()


def sys_exit_group(t, status, *_):  # noqa: ANN001, ANN002
    raise ProcessExit(status & 0xFF)


# ---- futex ---------------------------------------------------------------------

FUTEX_WAIT = 0
FUTEX_WAKE = 1
FUTEX_REQUEUE = 3
FUTEX_CMP_REQUEUE = 4
FUTEX_WAIT_BITSET = 9
FUTEX_WAKE_BITSET = 10
FUTEX_CMD_MASK = 0x7F
FUTEX_CLOCK_REALTIME = 256
FUTEX_BITSET_MATCH_ANY = 0xFFFFFFFF


def _deadline(t, timeout: int, absolute: bool, realtime: bool) -> float | None:  # noqa: ANN001
    if not timeout:
        return None
    value = read_timespec(t, timeout) / 1e9
    if not absolute:
        return time.monotonic() + value
    now = time.time() if realtime else time.monotonic()
    return time.monotonic() + (value - now)


def sys_futex(t, uaddr, op, val, timeout, uaddr2, val3):  # noqa: ANN001
    op = s32(op)
    cmd = op & FUTEX_CMD_MASK
    table: FutexTable = t.process.futexes
    if cmd in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
        bitset = (
            val3 & 0xFFFFFFFF if cmd == FUTEX_WAKE_BITSET else FUTEX_BITSET_MATCH_ANY
        )
        if not bitset:
            raise SyscallError(errno.EINVAL)
        return table.wake(uaddr, s32(val), bitset)
    if cmd in (FUTEX_WAIT, FUTEX_WAIT_BITSET):
        bitset = (
            val3 & 0xFFFFFFFF if cmd == FUTEX_WAIT_BITSET else FUTEX_BITSET_MATCH_ANY
        )
        if not bitset or uaddr & 3:
            raise SyscallError(errno.EINVAL)
        deadline = _deadline(
            t, timeout, cmd == FUTEX_WAIT_BITSET, bool(op & FUTEX_CLOCK_REALTIME)
        )
        current = struct.unpack("<I", t.mm.read(uaddr, 4))[0]
        if current != val & 0xFFFFFFFF:
            return -errno.EAGAIN
        waiter = Waiter(bitset, uaddr)
        table.queues[uaddr].append(waiter)
        return _futex_wait(t, table, waiter, deadline)
    if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
        if cmd == FUTEX_CMP_REQUEUE:
            current = struct.unpack("<I", t.mm.read(uaddr, 4))[0]
            if current != val3 & 0xFFFFFFFF:
                return -errno.EAGAIN
        # For the requeue operations the timeout argument carries val2.
        return table.requeue(uaddr, s32(val), uaddr2, timeout & 0x7FFFFFFF)
    return unsupported(f"futex operation {cmd}")


def _futex_wait(t, table: FutexTable, waiter: Waiter, deadline: float | None) -> int:  # noqa: ANN001
    """Wait for FUTEX_WAKE, the timeout, a signal or the end of the program."""
    with interruptible(t, waiter.event.set):
        while True:
            # Cleared before the checks: a wake after them sets it again.
            waiter.event.clear()
            if waiter.woken:
                return 0
            if table.closed:
                raise ThreadExit()
            if signals.signal_pending(t):
                table.cancel(waiter)
                # Without a timeout Linux restarts the wait under SA_RESTART;
                # with one it fails with EINTR.
                return interrupted(t, restartable=deadline is None)
            if deadline is not None and time.monotonic() >= deadline:
                table.cancel(waiter)
                return -errno.ETIMEDOUT
            with blocking():
                if deadline is None:
                    waiter.event.wait()
                else:
                    waiter.event.wait(max(0.0, deadline - time.monotonic()))


SYSCALLS = {
    NUMBERS["clone"]: sys_clone,
    NUMBERS["clone3"]: sys_clone3,
    NUMBERS["fork"]: sys_fork,
    NUMBERS["vfork"]: sys_fork,
    NUMBERS["execve"]: sys_execve,
    NUMBERS["execveat"]: sys_execve,
    NUMBERS["wait4"]: sys_wait4,
    NUMBERS["waitid"]: sys_wait4,
    NUMBERS["exit"]: sys_exit,
    NUMBERS["exit_group"]: sys_exit_group,
    NUMBERS["futex"]: sys_futex,
}
