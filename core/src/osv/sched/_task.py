"""The running program: its process state and its threads (tasks)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

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


# Process and Task are plain classes, not dataclasses: making a dataclass
# compiles generated code at import, on every boot. Both compare by identity.
class Process:
    """What all threads of the one application share."""

    def __init__(
        self,
        pid: int,
        argv: list[str],
        envp: list[str],
        exe: str,
        mm: object,  # osv.mm.AddressSpace
        fds: object,  # osv.vfs.FdTable
        vfs: object,  # osv.vfs.Vfs
        cwd: object,  # osv.vfs Vnode
        kernel: object,
        umask: int = 0o022,
        nice: int = 0,
        name: str = "",
    ) -> None:
        self.pid = pid
        self.argv = argv
        self.envp = envp
        self.exe = exe
        self.mm = mm
        self.fds = fds
        self.vfs = vfs
        self.cwd = cwd
        self.kernel = kernel
        self.umask = umask
        self.nice = nice
        self.name = name
        self.rlimits: dict[int, tuple[int, int]] = dict(DEFAULT_RLIMITS)
        self.signal_actions: dict[int, SigAction] = {}
        # Signals sent to the whole process, taken by whichever thread can first.
        self.pending = PendingSignals()
        self.real_timer: object = None  # osv.sched._signal.RealTimer, once armed
        self.start_ns = time.monotonic_ns()
        self.loaded: object = None  # osv.elf.LoadedProgram of the main program
        self.interpreter: object = None  # osv.elf.LoadedProgram of the dynamic linker
        self.exit_status: int | None = None
        self.tasks: list[Task] = []
        self.futexes = FutexTable()
        # Set once the whole program ends (exit_group, the last thread's exit, or
        # a fault); the status or the fault report is recorded first.
        self.ended = threading.Event()
        self.fault: object = None
        self.finished_tasks: list[Task] = []
        self.result: object = None  # the RunResult of a process run in the background

    def __repr__(self) -> str:
        return f"<Process {self.pid} {self.exe!r}>"


class Task:
    """One thread: a vCPU and the per-thread kernel state."""

    def __init__(self, tid: int, process: Process, vcpu: object) -> None:
        self.tid = tid
        self.process = process
        self.vcpu = vcpu  # osv.hv.VCpu
        # Shortcuts used by every system call: one attribute lookup instead of two.
        self.mm = process.mm
        self.fds = process.fds
        self.vfs = process.vfs
        self.kernel = process.kernel
        self.fs_base = 0
        self.clear_child_tid = 0
        self.robust_list = 0
        self.signal_mask = 0
        # ss_sp, ss_flags (SS_DISABLE), size
        self.alt_stack: tuple[int, int, int] = (0, 2, 0)
        # Signals sent to this thread only (tgkill, faults, SIGPIPE).
        self.pending = PendingSignals()
        # The mask to put back once a signal is handled, while a call such as
        # sigsuspend or ppoll runs with a temporary one.
        self.saved_mask: int | None = None
        # Signals rt_sigtimedwait is waiting for: pending ones wake the thread.
        self.waiting_for = 0
        # Set by a wait cut short by a signal: (system call number, True when
        # SA_RESTART makes it start again after the handler).
        self.restart: tuple[int, bool] | None = None
        # While the thread waits in an interruptible call: what wakes it.
        self.waker: Callable[[], None] | None = None
        # The last CPU exception, as sigcontext reports it (trapno, err, cr2).
        self.fault = Fault()
        self.syscalls = [0]
        self.thread: threading.Thread | None = None
        self.start_ns = time.monotonic_ns()
        # The host thread serving this guest thread (threading.get_ident()),
        # known once it runs.
        self.host_thread_id = 0

    def __repr__(self) -> str:
        return f"<Task {self.tid} of process {self.process.pid}>"

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
