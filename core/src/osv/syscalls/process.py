"""Process, identity, time, randomness, limits and signal-bookkeeping calls."""

from __future__ import annotations

import errno
import logging
import os
import resource
import struct
import time

from osv.sched import RLIM_INFINITY, ProcessExit, ThreadExit
from osv.sched._lock import blocking
from osv.syscalls._common import SyscallError, read_timespec, s32, s64, unsupported
from osv.syscalls._numbers import NUMBERS

logger = logging.getLogger(__name__)

ARCH_SET_GS = 0x1001
ARCH_SET_FS = 0x1002
ARCH_GET_FS = 0x1003
ARCH_GET_GS = 0x1004

UID = 0
GID = 0


# ---- ending ----------------------------------------------------------------


SIGABRT = 6
SIGKILL = 9


# Signals whose default action is to do nothing (signal(7)).
IGNORED_BY_DEFAULT = frozenset({17, 18, 23, 28})  # SIGCHLD SIGCONT SIGURG SIGWINCH
SIG_IGN = 1


def _deliver_default(t, sig: int) -> int:  # noqa: ANN001
    """A signal the program sends itself: run its default action."""
    if sig == 0:
        return 0
    if not 1 <= sig <= NSIG:
        raise SyscallError(errno.EINVAL)
    action = t.process.signal_actions.get(sig)
    handler = int.from_bytes(action[:8], "little") if action else 0
    if handler == SIG_IGN or (handler == 0 and sig in IGNORED_BY_DEFAULT):
        return 0
    if handler != 0:
        # TODO: invoking a program's signal handler needs a signal frame on
        # its stack; until then the signal is dropped (the program goes on),
        # which keeps runtimes that signal themselves (Go's SIGURG
        # preemption, say) working.
        unsupported(f"delivery of signal {sig} to its handler")
        return 0
    # TODO: handlers installed with rt_sigaction are not invoked yet; the
    # default action (termination) is taken for every signal sent.
    raise ProcessExit(128 + sig, signal=sig)


def sys_kill(t, pid, sig, *_):  # noqa: ANN001, ANN002
    pid = s32(pid)
    if pid not in (t.process.pid, 0, -1):
        raise SyscallError(errno.ESRCH)
    return _deliver_default(t, s32(sig))


def sys_tgkill(t, tgid, tid, sig, *_):  # noqa: ANN001, ANN002
    if s32(tgid) != t.process.pid or s32(tid) not in {x.tid for x in t.process.tasks}:
        raise SyscallError(errno.ESRCH)
    return _deliver_default(t, s32(sig))


def sys_tkill(t, tid, sig, *_):  # noqa: ANN001, ANN002
    return sys_tgkill(t, t.process.pid, tid, sig)


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
    return time.clock_gettime_ns(host)


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


def _sleep_until(t, deadline_ns: int, clock: int) -> None:  # noqa: ANN001
    # Waiting on the process's end event rather than sleeping lets the end
    # of the program (exit_group in another thread, a shutdown request)
    # cut the sleep short.
    ended = t.process.ended
    with blocking():
        while True:
            remaining = deadline_ns - time.clock_gettime_ns(clock)
            if remaining <= 0:
                return
            if ended.wait(remaining / 1e9):
                raise ThreadExit()


def sys_nanosleep(t, req, rem, *_):  # noqa: ANN001, ANN002
    duration = read_timespec(t, req)
    _sleep_until(t, time.monotonic_ns() + duration, time.CLOCK_MONOTONIC)
    return 0


TIMER_ABSTIME = 1


def sys_clock_nanosleep(t, clock, flags, req, rem, *_):  # noqa: ANN001, ANN002
    clock = s32(clock)
    host = _CLOCKS.get(clock)
    if host is None:
        return -errno.EINVAL
    value = read_timespec(t, req)
    if s32(flags) & TIMER_ABSTIME:
        _sleep_until(t, value, host)
    else:
        _sleep_until(t, time.clock_gettime_ns(host) + value, host)
    return 0


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


# ---- signal bookkeeping ----------------------------------------------------

SIG_SETMASK = 2
SIG_BLOCK = 0
SIG_UNBLOCK = 1
NSIG = 64
SIGACTION_SIZE = 32


def sys_rt_sigaction(t, sig, act, oldact, sigsetsize, *_):  # noqa: ANN001, ANN002
    sig = s32(sig)
    if not 1 <= sig <= NSIG or sig in (SIGKILL, 19) or sigsetsize != 8:
        raise SyscallError(errno.EINVAL)
    actions = t.process.signal_actions
    if oldact:
        t.mm.write(oldact, actions.get(sig, bytes(SIGACTION_SIZE)))
    if act:
        # TODO: the handler is recorded but never invoked; signals the
        # program raises take their default action.
        actions[sig] = t.mm.read(act, SIGACTION_SIZE)
    return 0


def sys_rt_sigprocmask(t, how, new, old, sigsetsize, *_):  # noqa: ANN001, ANN002
    if sigsetsize != 8:
        raise SyscallError(errno.EINVAL)
    current = t.signal_mask
    if old:
        t.mm.write_u64(old, current)
    if new:
        value = t.mm.read_u64(new) & ~((1 << (SIGKILL - 1)) | (1 << 18))
        how = s32(how)
        if how == SIG_BLOCK:
            t.signal_mask = current | value
        elif how == SIG_UNBLOCK:
            t.signal_mask = current & ~value
        elif how == SIG_SETMASK:
            t.signal_mask = value
        else:
            raise SyscallError(errno.EINVAL)
    return 0


SS_DISABLE = 2
MINSIGSTKSZ = 2048


def sys_sigaltstack(t, new, old, *_):  # noqa: ANN001, ANN002
    if old:
        sp, flags, size = t.alt_stack
        t.mm.write(old, struct.pack("<QiiQ", sp, flags, 0, size))
    if new:
        sp, flags, _pad, size = struct.unpack("<QiiQ", t.mm.read(new, 24))
        if flags & ~SS_DISABLE:
            raise SyscallError(errno.EINVAL)
        if not flags & SS_DISABLE and size < MINSIGSTKSZ:
            raise SyscallError(errno.ENOMEM)
        t.alt_stack = (sp, flags, size)
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

del resource, s64
