"""Where files meet the program's signals: waits that a handler cuts short,
and the signals a terminal sends its session."""

from __future__ import annotations

import errno
import logging
import os
import select
import threading

from osv.sched._lock import KERNEL_LOCK
from osv.sched._signal import interrupted, send_to_process, signal_pending
from osv.sched._sigqueue import SI_KERNEL, siginfo, signal_name
from osv.sched._task import (
    Process,
    Task,
    ThreadExit,
    current_task,
    set_current_task,
)

from ._errors import FsError

logger = logging.getLogger(__name__)

# Rationale: how a blocked read or write gives way to a signal.
#
# Linux puts a thread that waits for a pipe, a terminal or an eventfd to
# sleep interruptibly: a signal to handle wakes it, and the call ends with
# the bytes it moved so far or, when there are none, with ERESTARTSYS. That
# becomes EINTR when the handler lacks SA_RESTART, and a transparent restart
# of the call otherwise (signal(7) lists these calls among those SA_RESTART
# restarts). The file code here waits on a condition variable (or a host
# fd) after giving up the kernel lock, so a sender cannot reach it through
# the lock: `wait` lends the thread's waker slot (see osv.sched._signal) a
# function that notifies that condition. The slot is filled before signals
# are checked and the sender fills the pending set before it reads the
# slot, so a signal sent at any moment is either seen by the check or wakes
# the wait. A waker stays registered only across one wait: the operations
# that never block (data already there) pay nothing.
#
# The end of the program reaches the same waker; the wait then ends the
# thread (ThreadExit), as the kernel's own waits do.


def wait(changed: threading.Condition, timeout: float | None = None) -> bool:
    """Wait on ``changed``, which the caller holds, as a blocking file call does.

    Returns False at once, without waiting, when the calling guest thread has
    a signal to handle first: the caller then returns what it moved so far,
    or raises `interruption()`. Returns True after a notify or the timeout,
    so the caller checks its state again. Outside a guest thread (the
    kernel's own use) the wait cannot be interrupted.
    """
    task = _served_task()
    if task is None:
        changed.wait(timeout)
        return True

    def wake() -> None:
        with changed:
            changed.notify_all()

    task.waker = wake
    try:
        if not _may_wait(task):
            return False
        changed.wait(timeout)
        return True
    finally:
        task.waker = None


def wait_host_fd(fd: int, writing: bool = False) -> bool:
    """Wait until host ``fd`` is readable (or writable); False for a signal.

    The same contract as `wait`, for the console, whose waits are on the
    host's file descriptors: an eventfd of its own wakes the select.
    """
    task = _served_task()
    if task is None:
        _select(fd, writing, None)
        return True
    wake = _HostWake()
    task.waker = wake
    try:
        while True:
            if not _may_wait(task):
                return False
            if _select(fd, writing, wake.fd):
                return True
            wake.drain()
    finally:
        task.waker = None
        wake.close()


def interruption() -> FsError:
    """The EINTR that ends a call a signal cut short before it moved anything.

    The call is marked so that a handler with SA_RESTART (or no handler at
    all) starts it again, as Linux's ERESTARTSYS does.
    """
    task = _served_task()
    if task is not None:
        interrupted(task, restartable=True)
    return FsError(errno.EINTR, "interrupted by a signal")


def _served_task() -> Task | None:
    """The guest thread the calling host thread serves, if it still does.

    A host thread keeps the last task it served after that program ended
    and its threads were cleared away (the kernel's own thread goes on to
    the next command; tests run several kernels in one process): a wait
    there is the kernel's, which no signal interrupts.
    """
    task = current_task()
    if task is None:
        return None
    process = task.process
    if process.ended.is_set() and task not in process.tasks:
        return None
    return task


def _may_wait(task: Task) -> bool:
    if task.process.ended.is_set():
        raise ThreadExit()
    return not signal_pending(task)


def _select(fd: int, writing: bool, wake_fd: int | None) -> bool:
    """One host select on ``fd`` (and the wake fd); True when ``fd`` is ready."""
    watched = [fd]
    others = [wake_fd] if wake_fd is not None else []
    try:
        if writing:
            readable, writable, _ = select.select(others, watched, [])
            return bool(writable)
        readable, _, _ = select.select(watched + others, [], [])
    except OSError as err:
        raise FsError(err.errno or errno.EIO, f"host select: {err.strerror}") from None
    return fd in readable


class _HostWake:
    """An eventfd that a sender writes to end a host select."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        # The sender may call this after the wait ended: the lock and the
        # closed marker keep it from writing to a number the host reused.
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            if self.fd >= 0:
                os.eventfd_write(self.fd, 1)

    def drain(self) -> None:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self._lock:
            os.close(self.fd)
            self.fd = -1


# ---- the terminal's signals -----------------------------------------------------


def calling_process() -> Process | None:
    """The program whose thread makes the current call (None outside one)."""
    task = _served_task()
    return task.process if task is not None else None


def send_from_terminal(process: Process | None, signals: tuple[int, ...]) -> None:
    """Send ``signals`` to ``process`` the way a terminal does (si_code SI_KERNEL).

    The caller holds no terminal lock: sending takes the kernel lock (when
    the calling thread does not hold it already) and calls wakers, which
    take the lock of whatever their thread waits on.
    """
    if not signals:
        return
    if process is None:
        names = ", ".join(signal_name(sig) for sig in signals)
        logger.debug("no session to send %s to", names)
        return

    # On Linux these come from the terminal's worker, not from the thread
    # whose write carried the interrupt character: the program's first
    # thread that does not block the signal takes it, so a ^C that one
    # thread types ends the read another thread waits in. send_to_process
    # lets a sending thread of the program take a signal itself, so the
    # signal is sent as from outside any program, as a timer sends.
    held = KERNEL_LOCK.held()
    if not held:
        KERNEL_LOCK.acquire()
    caller = current_task()
    set_current_task(None)
    try:
        for sig in signals:
            logger.debug("terminal sends %s to %d", signal_name(sig), process.pid)
            send_to_process(process, sig, siginfo(sig, SI_KERNEL))
    finally:
        set_current_task(caller)
        if not held:
            KERNEL_LOCK.release()
