"""The running program: its process state and its threads (tasks)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from osv.sched._futex import FutexTable
from osv.sched._sigframe import Fault
from osv.sched._sigqueue import PendingSignals, SigAction

logger = logging.getLogger(__name__)

RLIM_INFINITY = 0xFFFFFFFFFFFFFFFF

# Linux's defaults for an ordinary login session.
DEFAULT_RLIMITS = {
    0: (RLIM_INFINITY, RLIM_INFINITY),  # RLIMIT_CPU
    1: (RLIM_INFINITY, RLIM_INFINITY),  # RLIMIT_FSIZE
    2: (RLIM_INFINITY, RLIM_INFINITY),  # RLIMIT_DATA
    3: (8 << 20, RLIM_INFINITY),  # RLIMIT_STACK
    4: (0, RLIM_INFINITY),  # RLIMIT_CORE
    5: (RLIM_INFINITY, RLIM_INFINITY),  # RLIMIT_RSS
    6: (63704, 63704),  # RLIMIT_NPROC
    7: (1024, 1048576),  # RLIMIT_NOFILE
    8: (8 << 20, 8 << 20),  # RLIMIT_MEMLOCK
    9: (RLIM_INFINITY, RLIM_INFINITY),  # RLIMIT_AS
    10: (RLIM_INFINITY, RLIM_INFINITY),  # RLIMIT_LOCKS
    11: (63704, 63704),  # RLIMIT_SIGPENDING
    12: (819200, 819200),  # RLIMIT_MSGQUEUE
    13: (0, 0),  # RLIMIT_NICE
    14: (0, 0),  # RLIMIT_RTPRIO
    15: (RLIM_INFINITY, RLIM_INFINITY),  # RLIMIT_RTTIME
}


class ThreadExit(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside a system call to end the calling thread only."""


class ProcessExit(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside a system call to end the whole program with a status."""

    def __init__(self, status: int, signal: int = 0) -> None:
        super().__init__(status)
        self.status = status
        self.signal = signal


class RegistersLoaded(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a system call that has set all of the thread's registers itself.

    rt_sigreturn ends this way: the fast path must not then write a result
    to RAX or copy RCX and R11 to RIP and RFLAGS, as it does after every
    other call. Raising costs nothing on the path of ordinary calls.
    """


# The guest thread a host thread serves (procfs's "self", a signal's sender).
_current = threading.local()


def current_task() -> Task | None:
    """The guest thread served by the calling host thread (None outside one)."""
    return getattr(_current, "task", None)


def set_current_task(task: Task | None) -> None:
    _current.task = task


@dataclass(eq=False)
class Process:
    """What all threads of the one application share."""

    pid: int
    argv: list[str]
    envp: list[str]
    exe: str
    mm: object  # osv.mm.AddressSpace
    fds: object  # osv.vfs.FdTable
    vfs: object  # osv.vfs.Vfs
    cwd: object  # osv.vfs Vnode
    kernel: object
    umask: int = 0o022
    nice: int = 0
    name: str = ""
    rlimits: dict[int, tuple[int, int]] = field(
        default_factory=lambda: dict(DEFAULT_RLIMITS)
    )
    signal_actions: dict[int, SigAction] = field(default_factory=dict)
    # Signals sent to the whole process, taken by whichever thread can first.
    pending: PendingSignals = field(default_factory=PendingSignals)
    real_timer: object = None  # osv.sched._signal.RealTimer, once armed
    start_ns: int = field(default_factory=time.monotonic_ns)
    loaded: object = None  # osv.elf.LoadedProgram of the main program
    interpreter: object = None  # osv.elf.LoadedProgram of the dynamic linker
    exit_status: int | None = None
    tasks: list[Task] = field(default_factory=list)
    futexes: FutexTable = field(default_factory=FutexTable)
    # Set once the whole program ends (exit_group, the last thread's exit, or
    # a fault); the status or the fault report is recorded first.
    ended: threading.Event = field(default_factory=threading.Event)
    fault: object = None
    finished_tasks: list[Task] = field(default_factory=list)
    result: object = None  # the RunResult of a process run in the background


@dataclass(eq=False)
class Task:
    """One thread: a vCPU and the per-thread kernel state."""

    tid: int
    process: Process
    vcpu: object  # osv.hv.VCpu
    mm: object = None
    fds: object = None
    vfs: object = None
    kernel: object = None
    fs_base: int = 0
    clear_child_tid: int = 0
    robust_list: int = 0
    signal_mask: int = 0
    alt_stack: tuple[int, int, int] = (0, 2, 0)  # ss_sp, ss_flags (SS_DISABLE), size
    # Signals sent to this thread only (tgkill, faults, SIGPIPE).
    pending: PendingSignals = field(default_factory=PendingSignals)
    # The mask to put back once a signal is handled, while a call such as
    # sigsuspend or ppoll runs with a temporary one.
    saved_mask: int | None = None
    # Signals rt_sigtimedwait is waiting for: pending ones wake the thread.
    waiting_for: int = 0
    # Set by a wait cut short by a signal: (system call number, True when
    # SA_RESTART makes it start again after the handler).
    restart: tuple[int, bool] | None = None
    # While the thread waits in an interruptible call: what wakes it.
    waker: Callable[[], None] | None = None
    # The last CPU exception, as sigcontext reports it (trapno, err, cr2).
    fault: Fault = field(default_factory=Fault)
    syscalls: list[int] = field(default_factory=lambda: [0])
    thread: threading.Thread | None = None
    start_ns: int = field(default_factory=time.monotonic_ns)
    # The host thread serving this guest thread (threading.get_ident()),
    # known once it runs.
    host_thread_id: int = 0

    def __post_init__(self) -> None:
        # Shortcuts used by every system call: one attribute lookup instead of two.
        self.mm = self.process.mm
        self.fds = self.process.fds
        self.vfs = self.process.vfs
        self.kernel = self.process.kernel

    def cpu_ns(self) -> int:
        """CPU time this guest thread has used: its host thread's, which runs
        the guest code inside KVM_RUN and the thread's system calls."""
        if not self.host_thread_id:
            return 0
        try:
            clock = time.pthread_getcpuclockid(self.host_thread_id)
            return time.clock_gettime_ns(clock)
        except OSError:  # the host thread has ended
            return 0
