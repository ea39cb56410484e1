"""Process, identity, time, randomness, limits, timers and signal calls."""

from __future__ import annotations

import errno
import logging
import os
import struct
import time

from osv.sched import RLIM_INFINITY
from osv.sched import _signal as signals
from osv.sched._signal import (
    Again,
    RealTimer,
    SignalError,
    interrupted,
    wait_for,
)
from osv.sched._sigqueue import (
    NSIG,
    SI_TKILL,
    SI_USER,
    SIGINFO_SIZE,
    SIGKILL,
    SIGSTOP,
    UNBLOCKABLE,
    SigAction,
    first_signal,
    siginfo,
)
from osv.syscalls._common import SyscallError, read_timespec, s32, s64, unsupported
from osv.syscalls._numbers import NUMBERS

logger = logging.getLogger(__name__)

ARCH_SET_GS = 0x1001
ARCH_SET_FS = 0x1002
ARCH_GET_FS = 0x1003
ARCH_GET_GS = 0x1004

UID = 0
GID = 0


# ---- sending signals -------------------------------------------------------


def _check_signal(sig: int) -> None:
    if not 0 <= sig <= NSIG:
        raise SyscallError(errno.EINVAL)


def _process(t, pid: int):  # noqa: ANN001, ANN202 - an osv.sched.Process
    """The running program with this pid (each one leads its own group)."""
    for process in t.kernel.processes:
        if process.pid == pid:
            return process
    raise SyscallError(errno.ESRCH)


def _thread(t, tid: int, process=None):  # noqa: ANN001, ANN202 - an osv.sched.Task
    processes = [process] if process is not None else t.kernel.processes
    for candidate in processes:
        for task in candidate.tasks:
            if task.tid == tid:
                return task
    raise SyscallError(errno.ESRCH)


def sys_kill(t, pid, sig, *_):  # noqa: ANN001, ANN002
    pid, sig = s32(pid), s32(sig)
    _check_signal(sig)
    own = t.process
    if pid == -1:
        # Every process the caller may signal except itself (and init).
        targets = [p for p in t.kernel.processes if p is not own]
    elif pid in (0, own.pid, -own.pid):
        targets = [own]
    else:
        targets = [_process(t, abs(pid))]
    if not targets:
        raise SyscallError(errno.ESRCH)
    if sig:
        info = siginfo(sig, SI_USER, pid=own.pid, uid=UID)
        for process in targets:
            signals.send_to_process(process, sig, info)
    return 0


def sys_tgkill(t, tgid, tid, sig, *_):  # noqa: ANN001, ANN002
    tgid, tid, sig = s32(tgid), s32(tid), s32(sig)
    if tgid <= 0 or tid <= 0:
        raise SyscallError(errno.EINVAL)
    _check_signal(sig)
    task = _thread(t, tid, _process(t, tgid))
    if sig:
        info = siginfo(sig, SI_TKILL, pid=t.process.pid, uid=UID)
        signals.send_to_thread(task, sig, info)
    return 0


def sys_tkill(t, tid, sig, *_):  # noqa: ANN001, ANN002
    tid, sig = s32(tid), s32(sig)
    if tid <= 0:
        raise SyscallError(errno.EINVAL)
    _check_signal(sig)
    task = _thread(t, tid)
    if sig:
        info = siginfo(sig, SI_TKILL, pid=t.process.pid, uid=UID)
        signals.send_to_thread(task, sig, info)
    return 0


def _queued_info(t, sig: int, uinfo: int, same_process: bool) -> bytes:  # noqa: ANN001
    info = bytearray(t.mm.read(uinfo, SIGINFO_SIZE))
    code = int.from_bytes(info[8:12], "little", signed=True)
    # Only the kernel may claim a positive si_code (or SI_TKILL) to others.
    if (code >= 0 or code == SI_TKILL) and not same_process:
        raise SyscallError(errno.EPERM)
    info[0:4] = sig.to_bytes(4, "little")
    return bytes(info)


def sys_rt_sigqueueinfo(t, tgid, sig, uinfo, *_):  # noqa: ANN001, ANN002
    sig = s32(sig)
    _check_signal(sig)
    process = _process(t, s32(tgid))
    info = _queued_info(t, sig, uinfo, process is t.process)
    if sig:
        signals.send_to_process(process, sig, info)
    return 0


def sys_rt_tgsigqueueinfo(t, tgid, tid, sig, uinfo, *_):  # noqa: ANN001, ANN002
    sig = s32(sig)
    _check_signal(sig)
    process = _process(t, s32(tgid))
    task = _thread(t, s32(tid), process)
    info = _queued_info(t, sig, uinfo, process is t.process)
    if sig:
        signals.send_to_thread(task, sig, info)
    return 0


# ---- identity ----------------------------------------------------------------


def sys_getpid(t, *_):  # noqa: ANN001, ANN002
    return t.process.pid


def sys_getppid(t, *_):  # noqa: ANN001, ANN002
    return 0


def sys_gettid(t, *_):  # noqa: ANN001, ANN002
    return t.tid


def sys_getuid(t, *_):  # noqa: ANN001, ANN002
    return UID


def sys_getgid(t, *_):  # noqa: ANN001, ANN002
    return GID


def sys_setuid(t, uid, *_):  # noqa: ANN001, ANN002
    # The application is the only user; it may "become" the id it has.
    if s32(uid) != UID:
        raise SyscallError(errno.EPERM)
    return 0


def sys_getresuid(t, ruid, euid, suid, *_):  # noqa: ANN001, ANN002
    for address in (ruid, euid, suid):
        t.mm.write(address, struct.pack("<I", UID))
    return 0


def sys_getgroups(t, size, lst, *_):  # noqa: ANN001, ANN002
    return 0


def sys_getpgrp(t, *_):  # noqa: ANN001, ANN002
    return t.process.pid


def sys_getpgid(t, pid, *_):  # noqa: ANN001, ANN002
    return t.process.pid


def sys_setpgid(t, pid, pgid, *_):  # noqa: ANN001, ANN002
    return 0 if s32(pgid) in (0, t.process.pid) else -errno.EPERM


def sys_getsid(t, *_):  # noqa: ANN001, ANN002
    return t.process.pid


def sys_setsid(t, *_):  # noqa: ANN001, ANN002
    # The program already leads its session and process group.
    return -errno.EPERM


PRIO_PROCESS = 0


def sys_getpriority(t, which, who, *_):  # noqa: ANN001, ANN002
    if s32(which) not in (0, 1, 2):
        raise SyscallError(errno.EINVAL)
    # The system call returns 20 - nice, so that it is never negative.
    return 20 - t.process.nice


def sys_setpriority(t, which, who, prio, *_):  # noqa: ANN001, ANN002
    if s32(which) not in (0, 1, 2):
        raise SyscallError(errno.EINVAL)
    t.process.nice = max(-20, min(19, s32(prio)))
    return 0


# ---- the CPU and the thread ------------------------------------------------


def sys_arch_prctl(t, code, address, *_):  # noqa: ANN001, ANN002
    code = s32(code)
    if code == ARCH_SET_FS:
        if address >= 1 << 47:
            raise SyscallError(errno.EPERM)
        t.vcpu.set_fs_base(address)
        t.fs_base = address
        return 0
    if code == ARCH_GET_FS:
        t.mm.write_u64(address, t.fs_base)
        return 0
    if code == ARCH_SET_GS:
        t.vcpu.set_msrs({0xC0000101: address})
        t.gs_base = address
        return 0
    if code == ARCH_GET_GS:
        t.mm.write_u64(address, getattr(t, "gs_base", 0))
        return 0
    raise SyscallError(errno.EINVAL)


def sys_set_tid_address(t, address, *_):  # noqa: ANN001, ANN002
    t.clear_child_tid = address
    return t.tid


def sys_set_robust_list(t, head, length, *_):  # noqa: ANN001, ANN002
    if length != 24:
        raise SyscallError(errno.EINVAL)
    t.robust_list = head
    return 0


def sys_rseq(t, *_):  # noqa: ANN001, ANN002
    # Restartable sequences need the kernel to rewrite the thread's RIP at
    # preemption; glibc treats ENOSYS as "not available" and carries on.
    return -errno.ENOSYS


def sys_sched_getaffinity(t, pid, size, mask, *_):  # noqa: ANN001, ANN002
    ncpus = (
        len(t.kernel.machine.vcpus)
        if t.kernel.vcpu_count is None
        else t.kernel.vcpu_count
    )
    nbytes = max(8, (ncpus + 63) // 64 * 8)
    if size < nbytes:
        raise SyscallError(errno.EINVAL)
    bits = (1 << ncpus) - 1
    t.mm.write(mask, bits.to_bytes(nbytes, "little"))
    return nbytes


def sys_sched_yield(t, *_):  # noqa: ANN001, ANN002
    os.sched_yield()
    return 0


def sys_getcpu(t, cpu, node, *_):  # noqa: ANN001, ANN002
    if cpu:
        t.mm.write(cpu, struct.pack("<I", t.vcpu.index))
    if node:
        t.mm.write(node, struct.pack("<I", 0))
    return 0


PR_SET_NAME = 15
PR_GET_NAME = 16


def sys_prctl(t, option, arg2, *_):  # noqa: ANN001, ANN002
    option = s32(option)
    if option == PR_SET_NAME:
        t.process.name = t.mm.read_cstring(arg2, 16)[:15].decode("utf-8", "replace")
        return 0
    if option == PR_GET_NAME:
        name = (t.process.name or os.path.basename(t.process.exe))[:15]
        t.mm.write(arg2, name.encode().ljust(16, b"\0"))
        return 0
    return unsupported(f"prctl option {option}", errno.EINVAL)


# ---- time ---------------------------------------------------------------------

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
CLOCK_PROCESS_CPUTIME_ID = 2
CLOCK_THREAD_CPUTIME_ID = 3

_CLOCKS = {
    0: time.CLOCK_REALTIME,
    1: time.CLOCK_MONOTONIC,
    4: time.CLOCK_MONOTONIC_RAW,
    5: getattr(time, "CLOCK_REALTIME_COARSE", 5),
    6: getattr(time, "CLOCK_MONOTONIC_COARSE", 6),
    7: time.CLOCK_BOOTTIME,
    # The alarm clocks exist where the host has an alarm-capable RTC; the
    # host's answer (EINVAL without one) is passed on.
    8: 8,  # CLOCK_REALTIME_ALARM
    9: 9,  # CLOCK_BOOTTIME_ALARM
    11: time.CLOCK_TAI,
}


def _clock_ns(t, clock: int) -> int:  # noqa: ANN001
    if clock in (CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID):
        # The guest's own CPU time is what the host thread running it used.
        return time.thread_time_ns()
    host = _CLOCKS.get(clock)
    if host is None:
        raise SyscallError(errno.EINVAL)
    try:
        return time.clock_gettime_ns(host)
    except OSError as error:
        raise SyscallError(error.errno) from None


def sys_clock_gettime(t, clock, tp, *_):  # noqa: ANN001, ANN002
    ns = _clock_ns(t, s32(clock))
    t.mm.write(tp, struct.pack("<qq", ns // 1_000_000_000, ns % 1_000_000_000))
    return 0


def sys_clock_getres(t, clock, tp, *_):  # noqa: ANN001, ANN002
    clock = s32(clock)
    _clock_ns(t, clock)
    if tp:
        host = _CLOCKS.get(clock, time.CLOCK_MONOTONIC)
        res = time.clock_getres(host)
        ns = round(res * 1e9)
        t.mm.write(tp, struct.pack("<qq", ns // 1_000_000_000, ns % 1_000_000_000))
    return 0


def sys_gettimeofday(t, tv, tz, *_):  # noqa: ANN001, ANN002
    ns = time.time_ns()
    if tv:
        t.mm.write(
            tv, struct.pack("<qq", ns // 1_000_000_000, (ns // 1000) % 1_000_000)
        )
    if tz:
        t.mm.write(tz, struct.pack("<ii", 0, 0))
    return 0


def sys_time(t, tloc, *_):  # noqa: ANN001, ANN002
    now = time.time_ns() // 1_000_000_000
    if tloc:
        t.mm.write_u64(tloc, now)
    return now


def _sleep_until(t, deadline_ns: int, clock: int) -> int:  # noqa: ANN001
    """Sleep until the deadline; the time left when a signal cut it short."""

    # Waiting on an event rather than sleeping lets a signal, or the end of
    # the program (exit_group in another thread, a shutdown request), cut
    # the sleep short.
    def step() -> int | Again:
        remaining = deadline_ns - time.clock_gettime_ns(clock)
        if remaining <= 0:
            return 0
        if signals.signal_pending(t):
            return remaining
        return Again(remaining / 1e9)

    return wait_for(t, step)


def _write_timespec(t, address: int, ns: int) -> None:  # noqa: ANN001
    t.mm.write(address, struct.pack("<qq", ns // 1_000_000_000, ns % 1_000_000_000))


def sys_nanosleep(t, req, rem, *_):  # noqa: ANN001, ANN002
    duration = read_timespec(t, req)
    left = _sleep_until(t, time.monotonic_ns() + duration, time.CLOCK_MONOTONIC)
    if not left:
        return 0
    if rem:
        _write_timespec(t, rem, left)
    # A sleep a handler interrupted is never restarted (signal(7)).
    return interrupted(t, restartable=False)


TIMER_ABSTIME = 1


def sys_clock_nanosleep(t, clock, flags, req, rem, *_):  # noqa: ANN001, ANN002
    clock = s32(clock)
    host = _CLOCKS.get(clock)
    if host is None:
        return -errno.EINVAL
    value = read_timespec(t, req)
    if s32(flags) & TIMER_ABSTIME:
        left = _sleep_until(t, value, host)
    else:
        left = _sleep_until(t, time.clock_gettime_ns(host) + value, host)
        if left and rem:
            _write_timespec(t, rem, left)
    return interrupted(t, restartable=False) if left else 0


# ---- interval timers -----------------------------------------------------------

ITIMER_REAL = 0
ITIMER_VIRTUAL = 1
ITIMER_PROF = 2


def _real_timer(t) -> RealTimer:  # noqa: ANN001
    process = t.process
    if process.real_timer is None:
        process.real_timer = RealTimer(process)
    return process.real_timer


def _check_itimer(which: int) -> None:
    if which in (ITIMER_VIRTUAL, ITIMER_PROF):
        # They count the program's CPU time, which the host does not split
        # out per program; ITIMER_REAL is the one offered.
        unsupported("ITIMER_VIRTUAL and ITIMER_PROF timers")
        raise SyscallError(errno.EINVAL)
    if which != ITIMER_REAL:
        raise SyscallError(errno.EINVAL)


def _itimerval(value_ns: int, interval_ns: int) -> bytes:
    """struct itimerval: it_interval, then it_value, each {tv_sec, tv_usec}."""
    return struct.pack(
        "<qqqq",
        interval_ns // 1_000_000_000,
        interval_ns % 1_000_000_000 // 1000,
        value_ns // 1_000_000_000,
        value_ns % 1_000_000_000 // 1000,
    )


def sys_getitimer(t, which, value, *_):  # noqa: ANN001, ANN002
    _check_itimer(s32(which))
    timer = t.process.real_timer
    remaining, interval = timer.get() if timer is not None else (0, 0)
    t.mm.write(value, _itimerval(remaining, interval))
    return 0


def sys_setitimer(t, which, new, old, *_):  # noqa: ANN001, ANN002
    _check_itimer(s32(which))
    value_ns = interval_ns = 0
    if new:
        fields = struct.unpack("<qqqq", t.mm.read(new, 32))
        if (
            any(f < 0 for f in fields)
            or fields[1] >= 1_000_000
            or fields[3] >= 1_000_000
        ):
            raise SyscallError(errno.EINVAL)
        interval_ns = fields[0] * 1_000_000_000 + fields[1] * 1000
        value_ns = fields[2] * 1_000_000_000 + fields[3] * 1000
    previous = _real_timer(t).set(value_ns, interval_ns)
    if old:
        t.mm.write(old, _itimerval(*previous))
    return 0


def sys_alarm(t, seconds, *_):  # noqa: ANN001, ANN002
    remaining, _interval = _real_timer(t).set((seconds & 0xFFFFFFFF) * 10**9, 0)
    whole, rest = divmod(remaining, 1_000_000_000)
    # Linux rounds the seconds left to the nearest, and never reports a
    # pending alarm as 0.
    if rest >= 500_000_000 or (not whole and rest):
        whole += 1
    return whole


def sys_times(t, buf, *_):  # noqa: ANN001, ANN002
    ticks = time.thread_time_ns() // 10_000_000
    if buf:
        t.mm.write(buf, struct.pack("<qqqq", ticks, 0, 0, 0))
    return (time.monotonic_ns() - t.kernel.boot_ns) // 10_000_000


# ---- randomness ------------------------------------------------------------

GRND_NONBLOCK = 1
GRND_RANDOM = 2
GRND_INSECURE = 4


def sys_getrandom(t, buf, count, flags, *_):  # noqa: ANN001, ANN002
    if s32(flags) & ~(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE):
        raise SyscallError(errno.EINVAL)
    count = min(count, 33554431)
    t.mm.write(buf, os.urandom(count))
    return count


# ---- system information -------------------------------------------------------


def sys_uname(t, buf, *_):  # noqa: ANN001, ANN002
    fields = (
        "Linux",
        t.kernel.hostname,
        t.kernel.uname_release,
        t.kernel.uname_version,
        "x86_64",
        "(none)",
    )
    t.mm.write(buf, b"".join(f.encode()[:64].ljust(65, b"\0") for f in fields))
    return 0


def sys_sethostname(t, name, length, *_):  # noqa: ANN001, ANN002
    if length > 64:
        raise SyscallError(errno.EINVAL)
    t.kernel.hostname = t.mm.read(name, length).decode("utf-8", "replace")
    return 0


def sys_sysinfo(t, info, *_):  # noqa: ANN001, ANN002
    kernel = t.kernel
    phys = kernel.phys
    uptime = (time.monotonic_ns() - kernel.boot_ns) // 1_000_000_000
    # struct sysinfo: uptime, loads[3], totalram, freeram, sharedram, bufferram,
    # totalswap, freeswap, procs (u16) + pad, totalhigh, freehigh, mem_unit.
    data = struct.pack(
        "<q3Q6QH6xQQI",
        uptime,
        0,
        0,
        0,
        phys.size,
        phys.free_frames * 4096,
        0,
        0,
        0,
        0,
        len(t.process.tasks),
        0,
        0,
        1,
    )
    t.mm.write(info, data.ljust(112, b"\0"))
    return 0


RUSAGE_SELF = 0
RUSAGE_CHILDREN = -1
RUSAGE_THREAD = 1


def sys_getrusage(t, who, usage, *_):  # noqa: ANN001, ANN002
    who = s32(who)
    if who not in (RUSAGE_SELF, RUSAGE_CHILDREN, RUSAGE_THREAD):
        raise SyscallError(errno.EINVAL)
    if who == RUSAGE_CHILDREN:
        t.mm.write(usage, bytes(144))
        return 0
    cpu = time.thread_time_ns()
    maxrss_kb = t.kernel.phys.used_bytes // 1024
    data = struct.pack(
        "<qqqq14q",
        cpu // 1_000_000_000,
        (cpu // 1000) % 1_000_000,
        0,
        0,
        maxrss_kb,
        *([0] * 13),
    )
    t.mm.write(usage, data)
    return 0


def sys_prlimit64(t, pid, resource_id, new, old, *_):  # noqa: ANN001, ANN002
    if s32(pid) not in (0, t.process.pid):
        raise SyscallError(errno.ESRCH)
    resource_id = s32(resource_id)
    limits = t.process.rlimits
    if resource_id not in limits:
        raise SyscallError(errno.EINVAL)
    current = limits[resource_id]
    if new:
        soft, hard = struct.unpack("<QQ", t.mm.read(new, 16))
        if soft > hard and hard != RLIM_INFINITY:
            raise SyscallError(errno.EINVAL)
        if hard > current[1] and current[1] != RLIM_INFINITY:
            raise SyscallError(errno.EPERM)
    if old:
        t.mm.write(old, struct.pack("<QQ", *current))
    if new:
        limits[resource_id] = (soft, hard)
    return 0


def sys_getrlimit(t, resource_id, old, *_):  # noqa: ANN001, ANN002
    return sys_prlimit64(t, 0, resource_id, 0, old)


def sys_setrlimit(t, resource_id, new, *_):  # noqa: ANN001, ANN002
    return sys_prlimit64(t, 0, resource_id, new, 0)


# ---- dispositions, masks and waiting for signals ---------------------------------

SIG_BLOCK = 0
SIG_UNBLOCK = 1
SIG_SETMASK = 2
SIGACTION_SIZE = 32
SIGSET_SIZE = 8


def sys_rt_sigaction(t, sig, act, oldact, sigsetsize, *_):  # noqa: ANN001, ANN002
    sig = s32(sig)
    if not 1 <= sig <= NSIG or sigsetsize != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL)
    if act and sig in (SIGKILL, SIGSTOP):
        raise SyscallError(errno.EINVAL)
    new = SigAction.unpack(t.mm.read(act, SIGACTION_SIZE)) if act else None
    old = signals.action(t.process, sig)
    if new is not None:
        signals.set_action(t.process, sig, new)
    if oldact:
        t.mm.write(oldact, old.pack())
    return 0


def sys_rt_sigprocmask(t, how, new, old, sigsetsize, *_):  # noqa: ANN001, ANN002
    if sigsetsize != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL)
    current = t.signal_mask
    if new:
        value = t.mm.read_u64(new)
        how = s32(how)
        if how == SIG_BLOCK:
            mask = current | value
        elif how == SIG_UNBLOCK:
            mask = current & ~value
        elif how == SIG_SETMASK:
            mask = value
        else:
            raise SyscallError(errno.EINVAL)
        # A signal this unblocks is delivered before the call returns.
        signals.set_mask(t, mask)
    if old:
        t.mm.write_u64(old, current)
    return 0


def sys_rt_sigpending(t, uset, sigsetsize, *_):  # noqa: ANN001, ANN002
    if sigsetsize > SIGSET_SIZE:
        raise SyscallError(errno.EINVAL)
    pending = (t.pending.bits | t.process.pending.bits) & t.signal_mask
    t.mm.write(uset, pending.to_bytes(SIGSET_SIZE, "little")[:sigsetsize])
    return 0


def _wait_for_handler(t) -> int:  # noqa: ANN001
    """Sleep until a signal is to be handled (pause, sigsuspend): -EINTR."""
    return wait_for(
        t,
        lambda: (
            interrupted(t, restartable=False) if signals.signal_pending(t) else Again()
        ),
    )


def sys_pause(t, *_):  # noqa: ANN001, ANN002
    return _wait_for_handler(t)


def sys_rt_sigsuspend(t, mask, sigsetsize, *_):  # noqa: ANN001, ANN002
    if sigsetsize != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL)
    temporary = t.mm.read_u64(mask) & ~UNBLOCKABLE
    # The handler's frame saves the mask from before the call, so that its
    # return puts that one back.
    t.saved_mask = t.signal_mask
    t.signal_mask = temporary
    return _wait_for_handler(t)


def sys_rt_sigtimedwait(t, these, info, timeout, sigsetsize, *_):  # noqa: ANN001, ANN002
    if sigsetsize != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL)
    wanted = t.mm.read_u64(these) & ~UNBLOCKABLE
    deadline = None
    if timeout:
        deadline = time.monotonic_ns() + read_timespec(t, timeout)

    def step() -> int | Again:
        available = (t.pending.bits | t.process.pending.bits) & wanted
        if available:
            sig = first_signal(available)
            taken = signals.take(t, sig)
            if info:
                t.mm.write(info, taken)
            return sig
        if signals.deliverable(t):
            return interrupted(t, restartable=False)
        if deadline is None:
            return Again()
        remaining = (deadline - time.monotonic_ns()) / 1e9
        return -errno.EAGAIN if remaining <= 0 else Again(remaining)

    # Meanwhile a signal of the set wakes the thread even though the program
    # blocks it, as it normally does for sigwait.
    t.waiting_for = wanted
    try:
        return wait_for(t, step)
    finally:
        t.waiting_for = 0


def sys_rt_sigreturn(t, *_):  # noqa: ANN001, ANN002
    signals.sigreturn(t)


STACK_T = struct.Struct("<QI4xQ")  # ss_sp, ss_flags, ss_size


def sys_sigaltstack(t, new, old, *_):  # noqa: ANN001, ANN002
    sp = t.vcpu.reg("rsp")
    requested = STACK_T.unpack(t.mm.read(new, STACK_T.size)) if new else None
    alt_sp, _flags, size = t.alt_stack
    previous = STACK_T.pack(alt_sp, signals.alt_stack_flags(t, sp), size)
    if requested is not None:
        try:
            signals.change_alt_stack(t, requested, sp)
        except SignalError as exc:
            raise SyscallError(exc.errno) from None
    if old:
        t.mm.write(old, previous)
    return 0


SYSCALLS = {
    NUMBERS[name[4:]]: function
    for name, function in list(globals().items())
    if name.startswith("sys_") and name[4:] in NUMBERS
}
for _alias, _target in (
    ("geteuid", sys_getuid),
    ("getegid", sys_getgid),
    ("setgid", sys_setuid),
    ("setreuid", sys_setuid),
    ("setregid", sys_setuid),
    ("setresuid", sys_setuid),
    ("setresgid", sys_setuid),
    ("getresgid", sys_getresuid),
    ("setfsuid", sys_getuid),
    ("setfsgid", sys_getgid),
):
    SYSCALLS[NUMBERS[_alias]] = _target

del s64
