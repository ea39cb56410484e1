"""The kernel lock: one guest thread at a time inside the kernel's own state."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

# Rationale: every guest thread is a vCPU served by its own host thread, and
# system calls from several of them may be handled at once. The kernel's
# structures (address space areas, page tables, the VFS tree, futex queues)
# are not written for concurrent mutation, and the GIL only makes single
# bytecodes atomic, so each system call runs holding this lock. A call that
# waits (futex, pipe, console, sleep, poll) must not hold it while waiting, or
# the thread that would wake it could never get in: such waits go inside
# `blocking()`, which gives the lock up and takes it back afterwards. Waits
# take no other lock while reacquiring this one, so the order is always
# "kernel lock, then object lock" and no cycle can form.


class KernelLock:
    """A plain lock that knows which host thread holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner = 0

    def acquire(self) -> None:
        self._lock.acquire()
        self.owner = threading.get_ident()

    def release(self) -> None:
        self.owner = 0
        self._lock.release()

    def held(self) -> bool:
        return self.owner == threading.get_ident()


KERNEL_LOCK = KernelLock()


@contextlib.contextmanager
def blocking() -> Iterator[None]:
    """Give up the kernel lock (when this thread holds it) for a wait."""
    if not KERNEL_LOCK.held():
        yield
        return
    KERNEL_LOCK.release()
    try:
        yield
    finally:
        KERNEL_LOCK.acquire()
