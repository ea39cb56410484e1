"""Signals: sending them, waiting for them, and running the program's handlers."""

from __future__ import annotations

import contextlib
import errno
import logging
import signal as host_signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple, NoReturn

from osv.mm import MemoryFault
from osv.sched import _sigframe
from osv.sched._lock import KERNEL_LOCK, blocking
from osv.sched._sigqueue import (
    DEFAULT_ACTION,
    SA_NODEFER,
    SA_ONSTACK,
    SA_RESETHAND,
    SA_RESTART,
    SA_RESTORER,
    SI_KERNEL,
    SIG_DFL,
    SIGALRM,
    SIGSEGV,
    UNBLOCKABLE,
    SigAction,
    bit,
    first_signal,
    siginfo,
    signal_name,
)
from osv.sched._task import (
    Process,
    RegistersLoaded,
    Task,
    ThreadExit,
    current_task,
)

logger = logging.getLogger(__name__)

# Rationale: how a signal reaches a thread.
#
# Sending (kill, tgkill, a fault, SIGPIPE, a timer) happens under the kernel
# lock. The signal is recorded as pending, on the thread or on the whole
# process, and the thread that is to take it is made to stop before it runs
# program code again: its kvm_run.immediate_exit is set, and its host thread,
# if it is another one, gets KICK_SIGNAL, which ends a KVM_RUN in progress
# with EINTR. KVM_RUN also returns EINTR at once when entered with
# immediate_exit set, so a thread that is in a system call stops right after
# the fast path has written the call's result. Either way the thread reaches
# the slow path, which calls `deliver`: it pushes a Linux signal frame on the
# program's stack and points the vCPU at the handler. The fast path itself
# checks nothing per call.
#
# A thread waiting in the kernel (futex, nanosleep, poll, sigsuspend) first
# registers a waker with `interruptible`, and the sender calls it. The wait
# then returns -EINTR through `interrupted`, which records the call's number:
# once the handler has been chosen, `deliver` rewinds the program to its
# `syscall` instruction to restart the call when Linux would (no handler ran,
# or SA_RESTART for a call that allows it).
#
# A signal whose action ends the program ends it when sent, as Linux's
# complete_signal does: a thread blocked somewhere no waker reaches cannot
# keep the program alive.

# The host signal that interrupts a vCPU's KVM_RUN. A caught signal ends the
# ioctl with EINTR; SIGURG is chosen because its default action is to be
# ignored, so one that arrives while the interpreter shuts down (when Python
# has put the default actions back) cannot kill `osv run`.
KICK_SIGNAL = host_signal.SIGURG

SS_ONSTACK = 1
SS_DISABLE = 2
SS_AUTODISARM = 1 << 31
MINSIGSTKSZ = 2048

# The flags rt_sigreturn takes from the frame (Linux's FIX_EFLAGS): CF PF AF
# ZF SF TF DF OF NT RF AC. IF and IOPL stay as they are.
FIX_EFLAGS = 0x54DD5
RFLAGS_DF = 0x400
RFLAGS_TF = 0x100
RFLAGS_RF = 0x10000
RFLAGS_IF = 0x200
# The first address past the lower half: a RIP or RSP beyond it cannot be
# returned to.
USER_LIMIT = 1 << 47
USER_CS = 0x33
USER_SS = 0x2B


class SignalError(Exception):
    """A signal operation the program asked for is invalid (carries an errno)."""

    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(message or errno.errorcode.get(err, str(err)))
        self.errno = err


# ---- state ------------------------------------------------------------------------


def action(process: Process, sig: int) -> SigAction:
    return process.signal_actions.get(sig, DEFAULT_ACTION)


def set_action(process: Process, sig: int, new: SigAction) -> None:
    """Install a disposition; pending instances it ignores are dropped (POSIX)."""
    process.signal_actions[sig] = new
    if new.ignores(sig):
        process.pending.discard(sig)
        for task in process.tasks:
            task.pending.discard(sig)


def deliverable(task: Task) -> int:
    """The pending signals ``task`` can take on its way back to the program."""
    return (task.pending.bits | task.process.pending.bits) & ~task.signal_mask


def signal_pending(task: Task) -> bool:
    """True when a signal should cut short a wait of ``task``."""
    pending = task.pending.bits | task.process.pending.bits
    return bool(pending & (~task.signal_mask | task.waiting_for))


def set_mask(task: Task, mask: int) -> None:
    """Change the thread's blocked set; stop it if that unblocked a pending one."""
    newly_blocked = mask & ~task.signal_mask
    task.signal_mask = mask & ~UNBLOCKABLE
    if deliverable(task):
        task.vcpu.kick()
    if newly_blocked & task.process.pending.bits:
        retarget(task.process)


def _wants(task: Task, sig: int) -> bool:
    return not task.signal_mask & bit(sig) or bool(task.waiting_for & bit(sig))


def _taker(process: Process, sig: int) -> Task | None:
    """The thread to take a process-wide signal: the caller if it can."""
    current = current_task()
    if current is not None and current.process is process and _wants(current, sig):
        return current
    for task in process.tasks:
        if _wants(task, sig):
            return task
    return None


def kick(task: Task) -> None:
    """Make ``task`` stop before it runs program code again (see above)."""
    task.vcpu.kick()
    thread = task.thread
    if (
        thread is not None
        and thread.ident not in (None, threading.get_ident())
        and thread.is_alive()
    ):
        try:
            host_signal.pthread_kill(thread.ident, KICK_SIGNAL)
        except (ProcessLookupError, OSError):
            pass
    waker = task.waker
    if waker is not None:
        waker()


def retarget(process: Process) -> None:
    """Find takers again for process-wide signals (a thread ended or blocked them)."""
    bits = process.pending.bits
    while bits:
        sig = first_signal(bits)
        bits &= ~bit(sig)
        taker = _taker(process, sig)
        if taker is not None:
            kick(taker)


# ---- sending ----------------------------------------------------------------------


def send_to_process(process: Process, sig: int, info: bytes) -> None:
    """Send ``sig`` to a whole process (kill): one thread not blocking it takes it."""
    _send(process, None, sig, info)


def send_to_thread(task: Task, sig: int, info: bytes) -> None:
    """Send ``sig`` to one thread (tgkill, a fault, SIGPIPE)."""
    _send(task.process, task, sig, info)


def _send(process: Process, target: Task | None, sig: int, info: bytes) -> None:
    if process.ended.is_set():
        return
    disposition = action(process, sig)
    taker = target if target is not None else _taker(process, sig)
    # What is blocked is kept even when ignored or fatal: the program may
    # unblock it later, under another disposition.
    blocked = taker is None or bool(taker.signal_mask & bit(sig))
    if disposition.ignores(sig) and not blocked:
        return
    if disposition.stops(sig):
        logger.warning(
            "%s would stop the program, which a unikernel cannot do; ignored",
            signal_name(sig),
        )
        return
    if disposition.kills(sig) and not blocked:
        end_by_signal(process, sig)
        return
    queue = target.pending if target is not None else process.pending
    if queue.add(sig, info) and taker is not None and _wants(taker, sig):
        kick(taker)


def end_by_signal(process: Process, sig: int, detail: str = "") -> None:
    """Take a signal's default action of ending the program.

    The calling thread, when it belongs to the program, stops too.
    """
    process.kernel.kill_process(process, sig, detail)
    current = current_task()
    if current is not None and current.process is process:
        raise ThreadExit()


# ---- waiting ----------------------------------------------------------------------


@contextlib.contextmanager
def interruptible(task: Task, wake: Callable[[], None]) -> Iterator[None]:
    """Let a signal, or the end of the program, cut short a wait of ``task``.

    ``wake`` must end the wait (set the event it waits on). Register first,
    then check for signals and the end of the program, then wait: a signal
    sent in between finds the waker and is not missed.
    """
    task.waker = wake
    try:
        yield
    finally:
        task.waker = None


class Again(NamedTuple):
    """What a wait_for step returns to be called again after a wait.

    ``timeout`` is the longest wait in seconds; None waits until woken.
    """

    timeout: float | None = None


def wait_for(task: Task, step: Callable[[], object]) -> object:
    """Call ``step`` until it returns anything but an Again; return that.

    Between calls the thread waits, the kernel lock given up, until the
    Again's timeout passes or it is woken: by a signal, by the end of the
    program, which ends the wait with ThreadExit, or by whatever the waker
    was handed to. Each step runs holding the kernel lock, so a signal sent
    while it decides is seen at its next call.
    """
    wake = threading.Event()
    with interruptible(task, wake.set):
        while True:
            wake.clear()
            if task.process.ended.is_set():
                raise ThreadExit()
            outcome = step()
            if type(outcome) is not Again:
                return outcome
            with blocking():
                wake.wait(outcome.timeout)


def interrupted(task: Task, restartable: bool) -> int:
    """The result of a wait a signal cut short: -EINTR, and a stop on the way out.

    ``restartable``: SA_RESTART starts the call again after the handler
    (Linux's ERESTARTSYS). Without a handler to run, every such call starts
    again.
    """
    task.restart = (task.vcpu.reg("rax"), restartable)
    task.vcpu.kick()
    return -errno.EINTR


# ---- delivery ---------------------------------------------------------------------


def deliver(task: Task, registers: dict[str, int] | None = None) -> None:
    """Before ``task`` runs program code again: a frame for each signal it takes.

    ``registers`` are the program's registers when the caller knows them (a
    fault); otherwise the vCPU's stop tells them. Runs under the kernel lock.
    """
    if task.restart is None and task.saved_mask is None and not deliverable(task):
        return
    if registers is None:
        registers = task.vcpu.user_registers()
        if registers is None:
            _kick_later(task)
            return
    process = task.process
    restart, task.restart = task.restart, None
    changed = False
    while bits := deliverable(task):
        sig = first_signal(bits)
        info = take(task, sig)
        disposition = action(process, sig)
        if disposition.ignores(sig) or disposition.stops(sig):
            continue
        if not disposition.catches:
            end_by_signal(process, sig)
            raise ThreadExit()
        if restart is not None:
            number, restartable = restart
            if restartable and disposition.flags & SA_RESTART:
                registers = dict(registers, rip=registers["rip"] - 2, rax=number)
            restart = None
        registers = _push_frame(task, registers, sig, info, disposition)
        changed = True
    if restart is not None:
        registers = dict(registers, rip=registers["rip"] - 2, rax=restart[0])
        changed = True
    if task.saved_mask is not None:
        saved, task.saved_mask = task.saved_mask, None
        set_mask(task, saved)
    if changed:
        task.vcpu.enter_user(registers)


def take(task: Task, sig: int) -> bytes:
    """Dequeue a pending ``sig`` for ``task``: its own first, then the process's."""
    if task.pending.bits & bit(sig):
        return task.pending.take(sig)
    return task.process.pending.take(sig)


def _kick_later(task: Task) -> None:
    # The vCPU stopped inside a stub (see VCpu.user_registers); a moment
    # later it is back in the program or at an exit of its own.
    timer = threading.Timer(0.001, kick, args=(task,))
    timer.daemon = True
    timer.start()
    logger.debug("signal for thread %d deferred: vCPU inside a stub", task.tid)


def _push_frame(
    task: Task,
    registers: dict[str, int],
    sig: int,
    info: bytes,
    disposition: SigAction,
) -> dict[str, int]:
    """Write the frame for one handler; return the registers it starts with."""
    if not disposition.flags & SA_RESTORER:
        # x86-64 Linux has no trampoline of its own to return through.
        _fatal(task, SIGSEGV, f"no SA_RESTORER for the {signal_name(sig)} handler")
    alt_sp, alt_flags, alt_size = task.alt_stack
    top = registers["rsp"] - _sigframe.REDZONE
    on_alt = False
    if (
        disposition.flags & SA_ONSTACK
        and alt_size
        and not on_alt_stack(task, top)
        and not alt_flags & SS_DISABLE
    ):
        top = alt_sp + alt_size
        on_alt = True
    fpstate, frame = _sigframe.place(top)
    if on_alt and frame < alt_sp:
        _fatal(task, SIGSEGV, "the signal frame overflows the alternate stack")
    mask = task.saved_mask if task.saved_mask is not None else task.signal_mask
    data = _sigframe.encode(
        registers,
        restorer=disposition.restorer,
        info=info,
        mask=mask,
        stack=task.alt_stack,
        fault=task.fault,
        fpstate=fpstate,
        user_cs=USER_CS,
        user_ss=USER_SS,
    )
    try:
        task.mm.write(fpstate, task.vcpu.fxsave())
        task.mm.write(frame, data)
    except MemoryFault:
        _fatal(task, SIGSEGV, f"cannot write a signal frame at {frame:#x}")
    if on_alt and alt_flags & SS_AUTODISARM:
        task.alt_stack = (0, SS_DISABLE, 0)

    # The handler runs with its sa_mask blocked, and the signal itself
    # unless SA_NODEFER; rt_sigreturn puts back the mask saved in the frame.
    task.saved_mask = None
    blocked = disposition.mask | (0 if disposition.flags & SA_NODEFER else bit(sig))
    task.signal_mask = (task.signal_mask | blocked) & ~UNBLOCKABLE
    if disposition.flags & SA_RESETHAND:
        task.process.signal_actions[sig] = disposition._replace(handler=SIG_DFL)
    logger.debug("thread %d enters the %s handler", task.tid, signal_name(sig))

    # The ABI's state at a function's entry: DF clear, the frame's address as
    # if `call` had pushed the return address. Plain and SA_SIGINFO handlers
    # get the same arguments on x86-64.
    flags = registers["rflags"] & ~(RFLAGS_DF | RFLAGS_TF | RFLAGS_RF)
    return dict(
        registers,
        rip=disposition.handler,
        rsp=frame,
        rdi=sig,
        rsi=frame + _sigframe.FRAME_INFO,
        rdx=frame + 8,
        rax=0,
        rflags=flags | RFLAGS_IF | 0x2,
    )


def _fatal(task: Task, sig: int, detail: str) -> NoReturn:
    logger.info("thread %d: %s", task.tid, detail)
    end_by_signal(task.process, sig, detail)
    raise ThreadExit()


def sigreturn(task: Task) -> NoReturn:
    """rt_sigreturn: the state a handler interrupted, from its frame."""
    vcpu = task.vcpu
    # The handler's `ret` popped the return address: the ucontext is at rsp.
    address = vcpu.reg("rsp")
    try:
        saved = _sigframe.decode(task.mm.read(address, _sigframe.UCONTEXT_SIZE))
        image = None
        if saved.fpstate:
            image = task.mm.read(saved.fpstate, _sigframe.FXSAVE_SIZE)
    except MemoryFault:
        _fatal(task, SIGSEGV, f"rt_sigreturn found no signal frame at {address:#x}")
    registers = saved.registers
    if registers["rip"] >= USER_LIMIT or registers["rsp"] >= USER_LIMIT:
        _fatal(task, SIGSEGV, "rt_sigreturn to a non-canonical address")
    registers["rflags"] = (
        vcpu.reg("r11") & ~FIX_EFLAGS | registers["rflags"] & FIX_EFLAGS | RFLAGS_IF
    )
    if image is not None:
        vcpu.fxrstor(image)
    else:
        vcpu.reset_fpu()
    # Errors are ignored here, as Linux does: on the alternate stack it stays.
    with contextlib.suppress(SignalError):
        change_alt_stack(task, saved.stack, address)
    task.saved_mask = None
    vcpu.enter_user(registers)
    set_mask(task, saved.mask)
    raise RegistersLoaded()


# ---- the alternate signal stack ------------------------------------------------------


def on_alt_stack(task: Task, sp: int) -> bool:
    """True when ``sp`` is inside the thread's alternate signal stack."""
    alt_sp, flags, size = task.alt_stack
    if flags & SS_AUTODISARM:
        return False
    return sp > alt_sp and sp - alt_sp <= size


def alt_stack_flags(task: Task, sp: int) -> int:
    """ss_flags as sigaltstack reports them to a thread whose stack is at ``sp``."""
    _alt_sp, flags, size = task.alt_stack
    if not size:
        return SS_DISABLE
    return flags | (SS_ONSTACK if on_alt_stack(task, sp) else 0)


def change_alt_stack(task: Task, stack: tuple[int, int, int], sp: int) -> None:
    """sigaltstack's change; SignalError with Linux's errno when refused."""
    ss_sp, ss_flags, ss_size = stack
    if on_alt_stack(task, sp):
        raise SignalError(errno.EPERM, "cannot change the stack a handler runs on")
    mode = ss_flags & ~SS_AUTODISARM
    if mode not in (0, SS_ONSTACK, SS_DISABLE):
        raise SignalError(errno.EINVAL)
    if mode == SS_DISABLE:
        task.alt_stack = (0, SS_DISABLE, 0)
        return
    if ss_size < MINSIGSTKSZ:
        raise SignalError(errno.ENOMEM)
    task.alt_stack = (ss_sp, ss_flags & SS_AUTODISARM, ss_size)


# ---- the real-time interval timer ---------------------------------------------------


class RealTimer:
    """A process's ITIMER_REAL (setitimer, alarm): SIGALRM when it expires."""

    # A host thread per armed process sleeps on a condition until the
    # deadline, then sends SIGALRM under the kernel lock. It never holds its
    # condition while it takes the kernel lock, so the lock order stays
    # "kernel lock, then object lock".

    def __init__(self, process: Process) -> None:
        self.process = process
        self.deadline: int | None = None  # time.monotonic_ns()
        self.interval = 0
        self._changed = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def _remaining(self) -> int:
        if self.deadline is None:
            return 0
        # An armed timer about to fire still reports 1 µs, as Linux does.
        return max(self.deadline - time.monotonic_ns(), 1000)

    def get(self) -> tuple[int, int]:
        """(time to the next expiry, interval), in ns; (0, interval) if disarmed."""
        with self._changed:
            return self._remaining(), self.interval

    def set(self, value_ns: int, interval_ns: int) -> tuple[int, int]:
        """Arm (value_ns > 0) or disarm the timer; return the previous setting."""
        with self._changed:
            old = (self._remaining(), self.interval)
            self.interval = interval_ns
            self.deadline = time.monotonic_ns() + value_ns if value_ns else None
            if self.deadline is not None and self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"itimer-{self.process.pid}", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()
        return old

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self.deadline = None
            self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stopped:
                    if self.deadline is None:
                        self._changed.wait()
                        continue
                    delay = self.deadline - time.monotonic_ns()
                    if delay <= 0:
                        break
                    self._changed.wait(delay / 1e9)
                if self._stopped:
                    return
                now = time.monotonic_ns()
                if self.interval:
                    # Expiries missed while the host was busy are merged.
                    self.deadline = max(self.deadline + self.interval, now + 1)
                else:
                    self.deadline = None
            KERNEL_LOCK.acquire()
            try:
                send_to_process(self.process, SIGALRM, siginfo(SIGALRM, SI_KERNEL))
            finally:
                KERNEL_LOCK.release()
