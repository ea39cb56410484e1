"""Signal numbers, dispositions (struct sigaction) and queues of pending signals."""

from __future__ import annotations

import struct
from collections import deque
from typing import NamedTuple

NSIG = 64
SIGRTMIN = 32

SIGHUP = 1
SIGINT = 2
SIGQUIT = 3
SIGILL = 4
SIGTRAP = 5
SIGABRT = 6
SIGBUS = 7
SIGFPE = 8
SIGKILL = 9
SIGUSR1 = 10
SIGSEGV = 11
SIGUSR2 = 12
SIGPIPE = 13
SIGALRM = 14
SIGTERM = 15
SIGSTKFLT = 16
SIGCHLD = 17
SIGCONT = 18
SIGSTOP = 19
SIGTSTP = 20
SIGTTIN = 21
SIGTTOU = 22
SIGURG = 23
SIGXCPU = 24
SIGXFSZ = 25
SIGVTALRM = 26
SIGPROF = 27
SIGWINCH = 28
SIGIO = 29
SIGPWR = 30
SIGSYS = 31

SIGNAL_NAMES = {
    value: name
    for name, value in list(globals().items())
    if name.startswith("SIG") and "_" not in name and 1 <= value < SIGRTMIN
}


def signal_name(sig: int) -> str:
    """The name Linux gives a signal number (SIGRTMIN+n for real-time ones)."""
    if sig >= SIGRTMIN:
        return f"SIGRTMIN+{sig - SIGRTMIN}" if sig > SIGRTMIN else "SIGRTMIN"
    return SIGNAL_NAMES.get(sig, f"signal {sig}")


def bit(sig: int) -> int:
    """The bit of ``sig`` in a kernel sigset_t (signal 1 is bit 0)."""
    return 1 << (sig - 1)


# Neither can be caught, blocked or ignored (signal(7)).
UNBLOCKABLE = bit(SIGKILL) | bit(SIGSTOP)
# What signal(7) lists as each signal's default action, for those that do not
# end the program: ignore, or stop (which a unikernel cannot do).
IGNORED_BY_DEFAULT = bit(SIGCHLD) | bit(SIGCONT) | bit(SIGURG) | bit(SIGWINCH)
STOP_BY_DEFAULT = bit(SIGSTOP) | bit(SIGTSTP) | bit(SIGTTIN) | bit(SIGTTOU)
# The signals a CPU exception raises; the kernel delivers these before others
# so that a handler sees the fault before any signal that came meanwhile.
SYNCHRONOUS = (
    bit(SIGSEGV) | bit(SIGBUS) | bit(SIGILL) | bit(SIGTRAP) | bit(SIGFPE) | bit(SIGSYS)
)

SIG_DFL = 0
SIG_IGN = 1

# sa_flags bits (asm-generic/signal-defs.h and x86's SA_RESTORER).
SA_NOCLDSTOP = 0x00000001
SA_NOCLDWAIT = 0x00000002
SA_SIGINFO = 0x00000004
SA_EXPOSE_TAGBITS = 0x00000800
SA_RESTORER = 0x04000000
SA_ONSTACK = 0x08000000
SA_RESTART = 0x10000000
SA_NODEFER = 0x40000000
SA_RESETHAND = 0x80000000
# Linux clears flag bits it does not know, so that a program can probe support.
SA_KNOWN = (
    SA_NOCLDSTOP
    | SA_NOCLDWAIT
    | SA_SIGINFO
    | SA_EXPOSE_TAGBITS
    | SA_RESTORER
    | SA_ONSTACK
    | SA_RESTART
    | SA_NODEFER
    | SA_RESETHAND
)

# si_code values (asm-generic/siginfo.h).
SI_USER = 0
SI_KERNEL = 0x80
SI_QUEUE = -1
SI_TKILL = -6
SEGV_MAPERR = 1
SEGV_ACCERR = 2
ILL_ILLOPN = 2
FPE_INTDIV = 1
FPE_FLTDIV = 3
FPE_FLTOVF = 4
FPE_FLTUND = 5
FPE_FLTRES = 6
FPE_FLTINV = 7
BUS_ADRALN = 1
BUS_ADRERR = 2
TRAP_BRKPT = 1
TRAP_TRACE = 2

SIGINFO_SIZE = 128


def siginfo(
    signo: int,
    code: int,
    *,
    pid: int = 0,
    uid: int = 0,
    address: int | None = None,
) -> bytes:
    """A siginfo_t: si_signo, si_errno, si_code, then the union at offset 16.

    The union holds (si_pid, si_uid) for signals a process sends, or si_addr
    for faults.
    """
    head = struct.pack("<iii4x", signo, 0, code)
    if address is not None:
        body = struct.pack("<Q", address & 0xFFFFFFFFFFFFFFFF)
    else:
        body = struct.pack("<iI", pid, uid)
    return (head + body).ljust(SIGINFO_SIZE, b"\0")


class SigAction(NamedTuple):
    """The kernel's struct sigaction on x86-64 (32 bytes)."""

    handler: int = SIG_DFL
    flags: int = 0
    restorer: int = 0
    mask: int = 0

    @classmethod
    def unpack(cls, raw: bytes) -> SigAction:
        handler, flags, restorer, mask = struct.unpack("<4Q", raw)
        return cls(handler, flags & SA_KNOWN, restorer, mask & ~UNBLOCKABLE)

    def pack(self) -> bytes:
        return struct.pack("<4Q", self.handler, self.flags, self.restorer, self.mask)

    def ignores(self, sig: int) -> bool:
        """True when sending ``sig`` under this action does nothing."""
        if sig == SIGKILL:
            return False
        if self.handler == SIG_IGN:
            return True
        return self.handler == SIG_DFL and bool(IGNORED_BY_DEFAULT & bit(sig))

    def stops(self, sig: int) -> bool:
        """True when the action is to stop the program (SIGSTOP, SIGTSTP...)."""
        if sig == SIGSTOP:
            return True
        return self.handler == SIG_DFL and bool(STOP_BY_DEFAULT & bit(sig))

    def kills(self, sig: int) -> bool:
        """True when the action ends the program (the default of most signals)."""
        if sig == SIGKILL:
            return True
        return self.handler == SIG_DFL and not (
            (IGNORED_BY_DEFAULT | STOP_BY_DEFAULT) & bit(sig)
        )

    @property
    def catches(self) -> bool:
        """True when the program's own handler runs."""
        return self.handler not in (SIG_DFL, SIG_IGN)


DEFAULT_ACTION = SigAction()

# RLIMIT_SIGPENDING's default: how many real-time signals may wait at once.
MAX_QUEUED = 63704


class PendingSignals:
    """Signals sent and not yet delivered, each instance with its siginfo.

    A standard signal (1-31) is pending at most once: sending it again while
    it waits does nothing. Real-time signals queue, in the order sent.
    """

    __slots__ = ("bits", "_infos", "_count")

    def __init__(self) -> None:
        self.bits = 0
        self._infos: dict[int, deque[bytes]] = {}
        self._count = 0

    def add(self, sig: int, info: bytes) -> bool:
        """Queue one instance; False when it merged with one already pending."""
        if self.bits & bit(sig) and sig < SIGRTMIN:
            return False
        if sig >= SIGRTMIN and self._count >= MAX_QUEUED:
            return False
        self._infos.setdefault(sig, deque()).append(info)
        self.bits |= bit(sig)
        self._count += 1
        return True

    def take(self, sig: int) -> bytes:
        """Dequeue the oldest instance of ``sig``."""
        queue = self._infos[sig]
        info = queue.popleft()
        self._count -= 1
        if not queue:
            del self._infos[sig]
            self.bits &= ~bit(sig)
        return info

    def discard(self, sig: int) -> None:
        """Drop every pending instance of ``sig``."""
        queue = self._infos.pop(sig, None)
        if queue is not None:
            self._count -= len(queue)
            self.bits &= ~bit(sig)


def first_signal(bits: int) -> int:
    """The signal to deliver first from a set: faults first, then the lowest."""
    chosen = bits & SYNCHRONOUS or bits
    return (chosen & -chosen).bit_length()
