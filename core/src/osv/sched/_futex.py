"""Futex wait queues, keyed by the address of the futex word."""

from __future__ import annotations

import threading
from collections import defaultdict

FUTEX_BITSET_MATCH_ANY = 0xFFFFFFFF


class Waiter:
    """One thread waiting on a futex word; ``woken`` once FUTEX_WAKE chose it."""

    __slots__ = ("address", "bitset", "event", "woken")

    def __init__(self, bitset: int, address: int = 0) -> None:
        self.bitset = bitset
        self.address = address
        self.event = threading.Event()
        self.woken = False


class FutexTable:
    """Wait queues keyed by the futex word's address (one address space)."""

    # Rationale: the kernel lock is held from reading the futex word to queueing
    # the waiter, and FUTEX_WAKE needs the same lock, so a wake that follows the
    # program's change of the word can never run between the check and the
    # queueing: no wake-up is lost. The wait itself happens outside the lock.

    def __init__(self) -> None:
        self.queues: defaultdict[int, list[Waiter]] = defaultdict(list)
        self.closed = False

    def wake(
        self, address: int, count: int, bitset: int = FUTEX_BITSET_MATCH_ANY
    ) -> int:
        queue = self.queues.get(address)
        if not queue:
            return 0
        woken = 0
        for waiter in list(queue):
            if woken >= count:
                break
            if waiter.bitset & bitset:
                queue.remove(waiter)
                waiter.woken = True
                waiter.event.set()
                woken += 1
        if not queue:
            del self.queues[address]
        return woken

    def requeue(self, address: int, count: int, target: int, limit: int) -> int:
        woken = self.wake(address, count)
        queue = self.queues.get(address, [])
        moved = queue[:limit]
        del queue[:limit]
        if not queue:
            self.queues.pop(address, None)
        if moved:
            for waiter in moved:
                waiter.address = target
            self.queues[target].extend(moved)
        return woken + len(moved)

    def cancel(self, waiter: Waiter) -> None:
        """Take a waiter that stops waiting (timeout, signal) off its queue."""
        queue = self.queues.get(waiter.address)
        if queue and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self.queues[waiter.address]

    def wake_everyone(self) -> None:
        """The process is ending: release every waiter."""
        self.closed = True
        for queue in self.queues.values():
            for waiter in queue:
                waiter.event.set()
        self.queues.clear()
