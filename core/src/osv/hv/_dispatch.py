"""The system-call fast path: run a vCPU and serve its traps until a slow exit.

This file is Cython in pure-Python mode. Compiled, the loop talks to KVM with a
direct ioctl(2) and reads the shared kvm_run page through a C pointer; imported
as plain Python it does the same through ctypes and a memoryview.
"""

# Rationale: on the PVM flavour of KVM a system call costs about 60 µs of trap
# round trip, and a Python loop adds 1.5-2 µs of its own per call: decoding the
# exit, reading six argument registers, calling the handler, writing back RAX,
# RIP and RFLAGS. Everything here stays in the shared kvm_run page ("sync
# regs"): KVM fills kvm_run.s.regs at every exit because kvm_valid_regs has
# KVM_SYNC_X86_REGS set, and loads them back on entry when kvm_dirty_regs has it
# set. No GET_REGS/SET_REGS ioctl (about 6 µs each on PVM) is made per call.
#
# Two trap shapes reach this loop (see osv.hv._machine for the stubs):
#   TRAP_DOORBELL  The application stays in ring 3 (PVM), and the stub at LSTAR
#                  stores to an unbacked guest-physical page: KVM_EXIT_MMIO at
#                  the doorbell address. No sysretq runs, so the host itself
#                  returns: RIP <- RCX and RFLAGS <- R11, as sysret would.
#   TRAP_PORT      Hardware KVM: `syscall` enters ring 0 where the stub does
#                  `out` then `sysretq`; KVM_EXIT_IO on the syscall port. Only
#                  RAX is written; the guest's own sysretq returns.
# Anything else (faults, a failed or interrupted KVM_RUN) leaves the loop and is
# handled by the slower Python code in osv._kernel, which then calls back in.
#
# Signals cost this loop nothing. A sender sets kvm_run.immediate_exit on the
# target vCPU, so the KVM_RUN that follows the current call returns EINTR at
# once, after KVM has taken in the registers written here: the slow path then
# sees the program's state as it returns and pushes the handler's frame (see
# osv.sched._signal). rt_sigreturn sets every register itself and ends by
# raising osv.sched.RegistersLoaded, which leaves the loop before the result
# is written back, like any exception a handler raises that is not in
# ``errors``.

import cython

from osv.hv import _kvm

TRAP_DOORBELL = 0
TRAP_PORT = 1
SYSCALL_PORT = 0x10
_TRAP_DOORBELL = cython.declare(cython.int, TRAP_DOORBELL)
_SYSCALL_PORT = cython.declare(cython.ulonglong, SYSCALL_PORT)

# u64 indices into the kvm_run page: exit_reason @8, exit union @32, sync regs
# from @304 in struct kvm_regs order.
_Q_EXIT_REASON = cython.declare(cython.Py_ssize_t, 1)
_Q_UNION = cython.declare(cython.Py_ssize_t, 4)
_Q_DIRTY = cython.declare(cython.Py_ssize_t, 37)
_Q_RAX = cython.declare(cython.Py_ssize_t, 38)
_Q_RCX = cython.declare(cython.Py_ssize_t, 40)
_Q_RDX = cython.declare(cython.Py_ssize_t, 41)
_Q_RSI = cython.declare(cython.Py_ssize_t, 42)
_Q_RDI = cython.declare(cython.Py_ssize_t, 43)
_Q_R8 = cython.declare(cython.Py_ssize_t, 46)
_Q_R9 = cython.declare(cython.Py_ssize_t, 47)
_Q_R10 = cython.declare(cython.Py_ssize_t, 48)
_Q_R11 = cython.declare(cython.Py_ssize_t, 49)
_Q_RIP = cython.declare(cython.Py_ssize_t, 54)
_Q_RFLAGS = cython.declare(cython.Py_ssize_t, 55)

_MASK64 = 0xFFFFFFFFFFFFFFFF
_KVM_RUN = cython.declare(cython.ulong, _kvm.KVM_RUN)
_EXIT_MMIO = cython.declare(cython.uint, _kvm.KVM_EXIT_MMIO)
_EXIT_IO = cython.declare(cython.uint, _kvm.KVM_EXIT_IO)
_SYNC_REGS = cython.declare(cython.ulonglong, _kvm.KVM_SYNC_X86_REGS)


if cython.compiled:
    from cython.cimports.libc.errno import errno as c_errno
    from cython.cimports.posix.ioctl import ioctl as c_ioctl

    @cython.cfunc
    @cython.inline
    @cython.exceptval(check=False)
    def _kvm_run(vcpu_fd: cython.int) -> cython.int:
        # The GIL is released while the vCPU runs, so other host threads (other
        # vCPUs, services of the kernel) go on while the guest computes.
        rc: cython.int
        with cython.nogil:
            rc = c_ioctl(vcpu_fd, _KVM_RUN, 0)
        if rc < 0:
            return -c_errno
        return 0

else:
    import ctypes

    _ioctl = _kvm._libc.ioctl

    def _kvm_run(vcpu_fd):
        if _ioctl(vcpu_fd, _KVM_RUN, 0) < 0:
            return -ctypes.get_errno()
        return 0


@cython.locals(
    q=cython.p_ulonglong,
    served=cython.longlong,
    ntable=cython.ulonglong,
    nr=cython.ulonglong,
    reason=cython.uint,
    rc=cython.int,
)
def run_until_slow_exit(
    vcpu_fd: cython.int,
    run_address: cython.Py_ssize_t,
    run_q: object,
    trap: cython.int,
    doorbell: cython.ulonglong,
    table: list,
    enosys: object,
    task: object,
    stats: list,
    errors: tuple,
    lock: object,
):
    """Run the vCPU, serving system calls, until another exit; return it.

    ``run_q`` is the kvm_run page as a memoryview of u64 (used uncompiled) and
    ``run_address`` its address (used compiled). The result is the kvm_run exit
    reason, or -errno if KVM_RUN failed. ``stats[0]`` grows by the number of
    system calls served. A handler fails a call with an errno by raising one of
    ``errors`` (exception classes with an ``errno`` attribute); any other
    exception ends the loop and propagates, before anything is written back
    (rt_sigreturn relies on this). Handlers run holding ``lock`` (see
    osv.sched._lock).
    """
    if cython.compiled:
        q = cython.cast(cython.p_ulonglong, run_address)
    else:
        q = run_q
    served = 0
    ntable = len(table)
    acquire = lock.acquire
    release = lock.release
    try:
        while True:
            rc = _kvm_run(vcpu_fd)
            if rc < 0:
                return rc
            reason = q[_Q_EXIT_REASON] & 0xFFFFFFFF
            if trap == _TRAP_DOORBELL:
                if reason != _EXIT_MMIO or q[_Q_UNION] != doorbell:
                    return reason
            elif reason != _EXIT_IO or ((q[_Q_UNION] >> 16) & 0xFFFF) != _SYSCALL_PORT:
                return reason
            served += 1
            nr = q[_Q_RAX]
            handler = table[nr] if nr < ntable else None
            acquire()
            try:
                if handler is None:
                    result = enosys(task, nr)
                else:
                    result = handler(
                        task,
                        q[_Q_RDI],
                        q[_Q_RSI],
                        q[_Q_RDX],
                        q[_Q_R10],
                        q[_Q_R8],
                        q[_Q_R9],
                    )
            except errors as exc:
                result = -exc.errno
            finally:
                release()
            q[_Q_RAX] = result & _MASK64
            if trap == _TRAP_DOORBELL:
                q[_Q_RIP] = q[_Q_RCX]
                q[_Q_RFLAGS] = q[_Q_R11]
            q[_Q_DIRTY] = _SYNC_REGS
    finally:
        stats[0] += served


def is_compiled() -> bool:
    """True when this module runs as a compiled extension."""
    return bool(cython.compiled)
