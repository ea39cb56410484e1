"""The kernel: one VM, its file systems, and the program it runs."""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import signal
import threading
import time
from collections import deque

from osv import _cext
from osv._record import Record
from osv.elf import _stack as auxv
from osv.elf import build_stack, load_program, parse_elf
from osv.hv import _kvm
from osv.hv._machine import (
    EXCEPTION_PORT_BASE,
    MONITOR_SIZE,
    VECTOR_NAMES,
    Machine,
)
from osv.mm import (
    MMAP_TOP,
    PROT_READ,
    AddressSpace,
    MemoryFault,
    PhysicalMemory,
)
from osv.sched import Process, ProcessExit, RegistersLoaded, Task, ThreadExit
from osv.sched import _signal as signals
from osv.sched._lock import KERNEL_LOCK
from osv.sched._procinfo import ProcessInfo
from osv.sched._sigframe import Fault
from osv.sched._signal import KICK_SIGNAL
from osv.sched._sigqueue import (
    BUS_ADRALN,
    BUS_ADRERR,
    FPE_FLTDIV,
    FPE_FLTINV,
    FPE_FLTOVF,
    FPE_FLTRES,
    FPE_FLTUND,
    FPE_INTDIV,
    ILL_ILLOPN,
    SEGV_ACCERR,
    SEGV_MAPERR,
    SI_KERNEL,
    SI_USER,
    SIGBUS,
    SIGFPE,
    SIGILL,
    SIGPIPE,
    SIGSEGV,
    SIGTRAP,
    TRAP_BRKPT,
    TRAP_TRACE,
    bit,
    siginfo,
    signal_name,
)
from osv.sched._task import current_task, set_current_task
from osv.syscalls._common import SyscallError, enosys
from osv.syscalls._numbers import NUMBERS, TABLE_SIZE

logger = logging.getLogger(__name__)

# KICK_SIGNAL and current_task are re-exported for the kernel's other users.
__all__ = ["KICK_SIGNAL", "Kernel", "KernelError", "ProgramFault", "current_task"]

_dispatch = _cext.load("osv.hv._dispatch")

DEFAULT_MEMORY = 2 << 30
PID = 2

# The signals CPU exceptions raise, and their si_code, as Linux's x86 trap
# handlers send them (arch/x86/kernel/traps.c); any other vector is SIGSEGV
# with SI_KERNEL. The exit status a shell reports is 128 + the signal.
VECTOR_SIGNALS = {
    0: (SIGFPE, FPE_INTDIV),  # #DE divide error
    1: (SIGTRAP, TRAP_TRACE),  # #DB, taken as a single step
    3: (SIGTRAP, SI_KERNEL),  # #BP int3
    6: (SIGILL, ILL_ILLOPN),  # #UD
    11: (SIGBUS, SI_KERNEL),  # #NP
    12: (SIGBUS, SI_KERNEL),  # #SS
    16: (SIGFPE, 0),  # #MF, the code from the x87 status word
    17: (SIGBUS, BUS_ADRALN),  # #AC
    19: (SIGFPE, 0),  # #XM, the code from MXCSR
}
# Vectors whose siginfo carries the faulting instruction's address.
VECTORS_WITH_ADDRESS = frozenset({0, 1, 6, 16, 19})
RFLAGS_TF = 0x100
# Linux's fpu__exception_code: the first unmasked x87/SSE exception flag
# decides si_code: invalid, divide by zero, overflow, underflow or denormal,
# inexact.
FPE_CODES = (
    (0x01, FPE_FLTINV),
    (0x04, FPE_FLTDIV),
    (0x08, FPE_FLTOVF),
    (0x12, FPE_FLTUND),
    (0x20, FPE_FLTRES),
)

# System calls that send SIGPIPE with their EPIPE; for the socket calls, the
# argument whose MSG_NOSIGNAL refuses it.
SIGPIPE_CALLS = {
    "write": None,
    "writev": None,
    "pwrite64": None,
    "pwritev": None,
    "pwritev2": None,
    "sendfile": None,
    "splice": None,
    "tee": None,
    "vmsplice": None,
    "sendto": 3,
    "sendmsg": 2,
    "sendmmsg": 3,
}
MSG_NOSIGNAL = 0x4000
# arch_prctl's code for setting the GS base, which the vDSO's getcpu relies on.
ARCH_SET_GS = 0x1001


@contextlib.contextmanager
def KERNEL_LOCK_HELD():  # noqa: N802 - reads as the state it establishes
    """Hold the kernel lock for slow-path work outside a system call."""
    KERNEL_LOCK.acquire()
    try:
        yield
    finally:
        KERNEL_LOCK.release()


def _ignore_signal(signum, frame) -> None:  # noqa: ANN001
    """KICK_SIGNAL only interrupts a vCPU's KVM_RUN (see osv.sched._signal)."""


class KernelError(Exception):
    """The kernel cannot start or continue the program."""


class ProgramFault(Exception):
    """The program ended by a signal: a fault it has no handler for, or a
    signal whose default action ends it. Carries the report for the console.
    """

    def __init__(self, report: str, signal: int) -> None:
        super().__init__(report)
        self.report = report
        self.signal = signal


class RunResult(Record):
    """How a foreground program ended, with its counts of calls and faults."""

    __slots__ = ("status", "syscalls", "faults", "first_instruction_ns")

    def __init__(
        self, status: int, syscalls: int, faults: int, first_instruction_ns: int
    ) -> None:
        self.status = status
        self.syscalls = syscalls
        self.faults = faults
        self.first_instruction_ns = first_instruction_ns


class Kernel:
    """Owns the VM and the VFS; loads programs and serves their system calls."""

    def __init__(
        self,
        *,
        memory: int = DEFAULT_MEMORY,
        vcpus: int = 1,
        plugins=None,  # noqa: ANN001 - a pluggy PluginManager
        version: str = "",
        vdso: bool | None = None,
    ) -> None:
        from osv import _plugins
        from osv.vfs import Console, FsError, Vfs

        self.boot_ns = time.monotonic_ns()
        self.version = version
        self.vcpu_count = vcpus
        self.hostname = "osv.local"
        # The host's release, as platform.release() gives it (os.uname spares
        # importing platform on every boot).
        self.uname_release = f"{os.uname().release.split('-')[0]}-osv"
        self.uname_version = f"#1 SMP osv {version}"
        self.dmesg: deque[str] = deque(maxlen=4096)
        self.plugins = plugins if plugins is not None else _plugins.plugin_manager()
        self.bootchart: list[tuple[str, int]] = []

        self.phys = PhysicalMemory(memory, reserved=MONITOR_SIZE)
        self.machine = Machine(self.phys)
        # The vDSO every program gets, unless vdso=False or OSV_DISABLE_VDSO=1.
        self.vdso = self._make_vdso(vdso)
        self.stamp("VM created")

        self.vfs = Vfs()
        self.filesystem_types = _plugins.filesystem_types(self.plugins)
        self.current: Process | None = None
        self.console = Console(0, 1)
        self._errors = (SyscallError, FsError, MemoryFault)
        self._tids = itertools.count(PID + 1)
        self._processes: list[Process] = []
        self.powering_off = False
        self.reboot_requested = False
        # The environment the boot gives programs (OSv's --env and OSV_*),
        # for programs launched later (a management service, say).
        self.environment: dict[str, str] = {}
        # Filled by the boot: the disk and its partitions by OSv's names
        # (vblk0, vblk0.1), the boot command line, the image's path.
        self.block_devices: dict = {}
        self.cmdline = ""
        self.image_path = ""
        self.loader_options = None
        self._idle_vcpus: list = []
        # Host threads started for guest threads and background programs.
        self._host_threads: list[threading.Thread] = []
        if threading.current_thread() is threading.main_thread():
            signal.signal(KICK_SIGNAL, _ignore_signal)
        self.syscalls = self._syscall_table()
        self.faults = 0

    # ---- set-up -------------------------------------------------------------

    def stamp(self, stage: str) -> None:
        """Record a bootchart stage, in ns since the kernel started."""
        self.bootchart.append((stage, time.monotonic_ns() - self.boot_ns))

    def log(self, line: str) -> None:
        """Append a line to the kernel's message buffer (dmesg)."""
        self.dmesg.append(line)

    def make_filesystem(self, name: str):  # noqa: ANN201 - a FileSystemType
        """An instance of the file-system type ``name``, given what it needs.

        A type that needs kernel services (the console, the process table,
        block devices) provides ``for_kernel(kernel)``; others are built bare.
        """
        try:
            cls = self.filesystem_types[name]
        except KeyError:
            raise KernelError(
                f"unknown file system {name!r}; install its module with: "
                f"pip install osv-mod-{name}"
            ) from None
        factory = getattr(cls, "for_kernel", None)
        return factory(self) if factory is not None else cls()

    def mount(
        self,
        name: str,
        device: str,
        mountpoint: str,
        options: str = "",
        readonly: bool = False,
    ):  # noqa: ANN201
        """Mount a file system of type ``name`` (see make_filesystem)."""
        fs = self.make_filesystem(name)
        if name not in {registered.name for registered in self.vfs.filesystems()}:
            # Listed in /proc/filesystems from its first mount on.
            self.vfs.register_filesystem(fs)
        mount = self.vfs.mount(fs, device, mountpoint, options, readonly)
        self.log(f"VFS: mounting {name} at {mountpoint}")
        return mount

    def proc_info(self) -> ProcessInfo:
        return ProcessInfo(self)

    def console_files(self) -> list:
        """Open files for fds 0, 1 and 2: the console, with stderr kept apart.

        The guest's stdout and stderr go to the host's stdout and stderr, so
        that a program's two streams stay separable, as under Docker.
        """
        from osv.vfs import Console, ConsoleFile

        stdin = self.vfs.open("/dev/console", os.O_RDONLY)
        stdout = self.vfs.open("/dev/console", os.O_WRONLY)
        stderr = ConsoleFile(stdout.vnode, os.O_WRONLY, "/dev/console", Console(0, 2))
        return [stdin, stdout, stderr]

    def _make_vdso(self, wanted: bool | None):  # noqa: ANN202 - osv.vdso.Vdso
        """The vDSO, or None when it is switched off or was not built."""
        from osv import vdso

        if wanted is None:
            wanted = not vdso.disabled_by_environment()
        if not wanted:
            logger.info("no vDSO: switched off (%s=1)", vdso.DISABLE_VARIABLE)
            return None
        try:
            return vdso.Vdso(self.machine, vdso.load_image())
        except vdso.VdsoError as exc:
            logger.info("no vDSO, time functions make system calls: %s", exc)
            return None

    def _syscall_table(self) -> list:
        from osv import _plugins

        table = [None] * TABLE_SIZE
        for number, handler in _plugins.syscall_table(self.plugins).items():
            table[number] = handler
        for name, flags_index in SIGPIPE_CALLS.items():
            number = NUMBERS[name]
            if table[number] is not None:
                table[number] = self._raising_sigpipe(table[number], flags_index)
        number = NUMBERS["arch_prctl"]
        if self.vdso is not None and table[number] is not None:
            table[number] = self._watching_gs_base(table[number])
        return table

    def _watching_gs_base(self, handler):  # noqa: ANN001, ANN202
        """Wrap arch_prctl so that a program setting its GS base turns off the
        vDSO's getcpu, which finds the vCPU through the GS base the kernel set.
        """
        vdso = self.vdso

        @functools.wraps(handler)
        def call(t, a, b, c, d, e, f):  # noqa: ANN001, ANN202
            if a & 0xFFFFFFFF == ARCH_SET_GS:
                vdso.withdraw_getcpu("a program set its own GS base")
            return handler(t, a, b, c, d, e, f)

        return call

    def _raising_sigpipe(self, handler, flags_index: int | None):  # noqa: ANN001, ANN202
        """Wrap a writing call so that its EPIPE also sends the caller SIGPIPE.

        Linux sends it from the pipe or socket code; here the error is seen
        where it leaves the call, whichever file raised it, so pipes, FIFOs
        and a module's sockets all behave alike. Only these calls pay for
        the wrapper.
        """
        errors = self._errors

        def send(t, args: tuple) -> None:  # noqa: ANN001
            if flags_index is not None and args[flags_index] & MSG_NOSIGNAL:
                return
            info = siginfo(SIGPIPE, SI_USER, pid=t.process.pid)
            signals.send_to_thread(t, SIGPIPE, info)

        @functools.wraps(handler)
        def call(t, a, b, c, d, e, f):  # noqa: ANN001, ANN202
            try:
                result = handler(t, a, b, c, d, e, f)
            except errors as exc:
                if exc.errno == errno.EPIPE:
                    send(t, (a, b, c, d, e, f))
                raise
            if result == -errno.EPIPE:
                send(t, (a, b, c, d, e, f))
            return result

        return call

    # ---- programs -------------------------------------------------------------

    def find_program(self, name: str, cwd, env: dict[str, str]) -> str:  # noqa: ANN001
        """Resolve a command name as OSv does: "/" then /usr/lib, then $PATH."""
        from osv.vfs import FsError

        if "/" in name:
            return name
        candidates = [f"/{name}", f"/usr/lib/{name}"]
        candidates += [
            f"{d.rstrip('/')}/{name}" for d in env.get("PATH", "").split(":") if d
        ]
        for path in candidates:
            try:
                if self.vfs.resolve(path, cwd).is_reg:
                    return path
            except FsError:
                continue
        raise KernelError(f"Failed to load object: {name}")

    def spawn(
        self,
        argv: list[str],
        envp: list[str],
        cwd: str = "/",
        stdio=None,  # noqa: ANN001
    ) -> Process:
        """Create the process for ``argv`` and load its program (execve)."""
        from osv.vfs import FdTable, FsError

        try:
            cwd_vnode = self.vfs.resolve(cwd)
        except FsError as exc:
            raise KernelError(
                f"cannot change to directory {cwd}: {exc.message}"
            ) from None
        env = dict(e.split("=", 1) for e in envp if "=" in e)
        path = self.find_program(argv[0], cwd_vnode, env)
        exe, data, file_id = self._read_program(path, cwd_vnode)
        program = parse_elf(exe, data)
        interpreter = None
        if program.interpreter:
            interp_path, interp_data, interp_id = self._read_program(
                program.interpreter, None
            )
            interpreter = parse_elf(interp_path, interp_data)
            if not interpreter.is_dynamic_object or interpreter.interpreter:
                raise KernelError(
                    f"{program.interpreter}: not a dynamic linker (ET_DYN without "
                    "PT_INTERP)"
                )

        mm = AddressSpace(self.phys)
        self.machine.install(mm)
        fds = FdTable()
        for stream in stdio or ():
            fds.install(stream)
        process = Process(
            pid=PID if self.current is None else next(self._tids),
            argv=list(argv),
            envp=list(envp),
            exe=exe,
            mm=mm,
            fds=fds,
            vfs=self.vfs,
            cwd=cwd_vnode,
            kernel=self,
        )
        loaded = load_program(mm, program, file_id=file_id)
        process.loaded = loaded
        self.current = process
        self._processes.append(process)
        mm.set_brk_start(loaded.end)
        entry, interp_base = loaded.entry, 0
        if interpreter is not None:
            # The dynamic linker goes where Linux puts it without address-space
            # randomisation: at the top of the mmap area, below the stack.
            span = interpreter.load_span
            base = mm.free_range(span, top=MMAP_TOP) - interpreter.first_vaddr
            linker = load_program(mm, interpreter, base, interp_id)
            entry, interp_base = linker.entry, linker.base
            process.interpreter = linker
        # The vDSO goes below the dynamic linker, as on Linux; Linux's
        # auxiliary vector names it first.
        vdso_entries = []
        if self.vdso is not None:
            vdso_entries.append((auxv.AT_SYSINFO_EHDR, self.vdso.map_into(mm)))
        rsp, _ = build_stack(
            mm,
            argv,
            envp,
            [
                *vdso_entries,
                (auxv.AT_PHDR, loaded.phdr),
                (auxv.AT_PHENT, program.e_phentsize),
                (auxv.AT_PHNUM, program.e_phnum),
                (auxv.AT_PAGESZ, 4096),
                (auxv.AT_BASE, interp_base),
                (auxv.AT_FLAGS, 0),
                (auxv.AT_ENTRY, loaded.entry),
                (auxv.AT_UID, 0),
                (auxv.AT_EUID, 0),
                (auxv.AT_GID, 0),
                (auxv.AT_EGID, 0),
                (auxv.AT_HWCAP, self.machine.hwcap),
                (auxv.AT_CLKTCK, 100),
                (auxv.AT_SECURE, 0),
                (auxv.AT_HWCAP2, 0),
                (auxv.AT_MINSIGSTKSZ, auxv.MINSIGSTKSZ),
            ],
            exe,
        )
        vcpu = self._acquire_vcpu(mm)
        task = Task(tid=process.pid, process=process, vcpu=vcpu)
        process.tasks.append(task)
        vcpu.setup(entry=entry, stack=rsp, lstar=self.machine.lstar)
        return process

    def _read_program(self, path: str, cwd):  # noqa: ANN001, ANN202
        """The resolved path, the bytes and the (device, inode) of a program
        file in the guest VFS.

        A file already in memory (unpacked from the image) is not copied.
        """
        from osv.vfs import FsError

        try:
            program_file = self.vfs.open(path, os.O_RDONLY, 0, cwd)
            try:
                st = program_file.fstat()
                data = program_file.vnode.contents_view()
                if data is None:
                    data = program_file.pread(st.st_size, 0)
                realpath = self.vfs.realpath(program_file.vnode)
                return realpath, data, (st.st_dev, st.st_ino)
            finally:
                program_file.close()
        except FsError as exc:
            raise KernelError(f"Failed to load object: {path}: {exc.message}") from None

    def _acquire_vcpu(self, mm):  # noqa: ANN001, ANN202
        """A vCPU for a new guest thread in ``mm``: an idle one, else a new one.

        The first vCPU also runs the start-up probe that decides how system
        calls reach the host.
        """
        if self._idle_vcpus:
            vcpu = self._idle_vcpus.pop()
            vcpu.map_block(mm)
        elif not self.machine.vcpus:
            vcpu = self.machine.create_vcpu(mm)
            self.machine.probe(vcpu)
            if self.vdso is not None:
                self.vdso.vcpu_created(vcpu)
        else:
            vcpu = self.machine.create_vcpu(mm)
            if self.vdso is not None:
                self.vdso.vcpu_created(vcpu)
        vcpu.aspace = mm
        return vcpu

    def start(self, process: Process) -> threading.Thread:
        """Run ``process`` on a host thread of its own (``&`` in a command line).

        ``process.result`` holds the RunResult, or ``process.fault`` the fault,
        once ``process.ended`` is set.
        """

        def main() -> None:
            try:
                process.result = self.run(process)
            except BaseException as exc:  # noqa: BLE001 - kept for the caller
                process.fault = process.fault or exc

        thread = threading.Thread(
            target=main, name=f"process-{process.pid}", daemon=True
        )
        process.tasks[0].thread = thread
        self._host_threads.append(thread)
        thread.start()
        return thread

    def signal_programs(self, sig: int) -> bool:
        """Send ``sig`` to every running program, as from outside the VM.

        What the host's SIGINT, SIGTERM, SIGHUP or SIGQUIT to `osv run`
        becomes (see osv.boot): the program's handler runs, or the signal's
        default action ends it, as on a terminal. Returns False when no
        program runs. Callable from any host thread but a vCPU's.
        """
        info = siginfo(sig, SI_KERNEL)
        with KERNEL_LOCK_HELD():
            running = [p for p in self._processes if not p.ended.is_set()]
            for process in running:
                signals.send_to_process(process, sig, info)
        return bool(running)

    def terminate(self, process: Process, status: int = 128 + 15) -> None:
        """Stop a running process (a `&!` daemon when the foreground is done)."""
        with KERNEL_LOCK_HELD():
            self._end_process(process, ProcessExit(status, signal=15))

    @property
    def processes(self) -> list[Process]:
        """The programs running now."""
        return list(self._processes)

    def reboot(self) -> None:
        """End every program and ask for the image to be booted again."""
        self.reboot_requested = True
        self.stop(0)

    def stop(self, status: int = 0) -> None:
        """End every running program with ``status``: callable from any host
        thread (a management service's shutdown request, say)."""
        self.powering_off = True
        for process in list(self._processes):
            with KERNEL_LOCK_HELD():
                self._end_process(process, ProcessExit(status))

    def run(self, process: Process) -> RunResult:
        """Run the process until it ends; return its exit status and counters.

        The main thread runs on the calling host thread; every other guest
        thread on a host thread of its own (see start_thread).
        """
        main = process.tasks[0]
        if main.thread is None:
            main.thread = threading.current_thread()
        first_ns = time.monotonic_ns() - self.boot_ns
        try:
            self._run_task(main)
        except ThreadExit:
            pass
        except BaseException as exc:  # noqa: BLE001 - recorded, re-raised below
            self._end_process(process, exc)
        # The main thread may end before the others (pthread_exit in main).
        process.ended.wait()
        with KERNEL_LOCK_HELD():
            process.fds.close_all()
            if process in self._processes:
                self._processes.remove(process)
        # Threads stopped by the end of the process leave KVM_RUN promptly
        # (they were kicked); their vCPUs then serve later threads.
        for task in [main, *process.tasks]:
            thread = task.thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=1.0)
                if thread.is_alive():
                    continue
            if task.vcpu not in self._idle_vcpus:
                self._idle_vcpus.append(task.vcpu)
        process.tasks.clear()
        all_tasks = [main, *process.finished_tasks]
        calls = sum(t.syscalls[0] for t in {id(t): t for t in all_tasks}.values())
        if isinstance(process.fault, BaseException):
            raise process.fault
        return RunResult(process.exit_status, calls, self.faults, first_ns)

    def _run_task(self, task: Task) -> None:
        """Serve one guest thread until it or the process ends (by an exception)."""
        vcpu = task.vcpu
        machine = self.machine
        task.host_thread_id = threading.get_ident()
        set_current_task(task)
        run = _dispatch.run_until_slow_exit
        while True:
            try:
                reason = run(
                    vcpu.fd,
                    vcpu.run_address,
                    vcpu.run_q,
                    machine.trap,
                    machine.doorbell_gpa,
                    self.syscalls,
                    enosys,
                    task,
                    task.syscalls,
                    self._errors,
                    KERNEL_LOCK,
                )
            except RegistersLoaded:
                # rt_sigreturn set every register; the fast path wrote none.
                continue
            with KERNEL_LOCK_HELD():
                self._slow_exit(task, reason)

    # ---- threads ---------------------------------------------------------------

    def create_thread(self, parent: Task, stack: int, tls: int | None) -> Task:
        """A new guest thread (clone): the parent's registers on a new vCPU."""
        process = parent.process
        registers = parent.vcpu.registers()
        # A vCPU whose thread has ended is reused: creating one costs ioctls
        # and four frames, and KVM offers a bounded number of them.
        vcpu = self._acquire_vcpu(process.mm)
        child = Task(tid=next(self._tids), process=process, vcpu=vcpu)
        vcpu.setup(
            entry=registers["rcx"],
            stack=stack or registers["rsp"],
            lstar=self.machine.lstar,
        )
        # The child returns from the same system call with 0, at the address
        # and flags the `syscall` instruction saved in RCX and R11.
        registers.update(rax=0, rip=registers["rcx"], rflags=registers["r11"] | 0x2)
        if stack:
            registers["rsp"] = stack
        vcpu.set_registers(registers)
        child.fs_base = parent.fs_base if tls is None else tls
        vcpu.set_fs_base(child.fs_base)
        child.signal_mask = parent.signal_mask
        process.tasks.append(child)
        return child

    def start_thread(self, task: Task) -> None:
        thread = threading.Thread(
            target=self._thread_main, args=(task,), name=f"vcpu-{task.tid}", daemon=True
        )
        task.thread = thread
        self._host_threads.append(thread)
        thread.start()

    def _thread_main(self, task: Task) -> None:
        try:
            self._run_task(task)
        except ThreadExit:
            return
        except BaseException as exc:  # noqa: BLE001 - ends the whole program
            with KERNEL_LOCK_HELD():
                self._end_process(task.process, exc)

    def end_thread(self, task: Task) -> bool:
        """A thread's exit: clear and wake its CLONE_CHILD_CLEARTID word.

        Returns True when it was the last thread, so the program ends.
        """
        process = task.process
        if task.clear_child_tid:
            try:
                task.mm.write(task.clear_child_tid, bytes(4))
            except MemoryFault:
                pass
            process.futexes.wake(task.clear_child_tid, 1)
        if task in process.tasks:
            process.tasks.remove(task)
            process.finished_tasks.append(task)
            if task.tid != process.pid:
                # Its host thread is the caller and leaves KVM_RUN for good:
                # the vCPU can serve the next clone. (The main thread's vCPU
                # is freed with the whole process, in run().)
                self._idle_vcpus.append(task.vcpu)
        # A process-wide signal this thread was woken for goes to another.
        if process.pending.bits and process.tasks:
            signals.retarget(process)
        return not process.tasks

    def kill_process(self, process: Process, sig: int, detail: str = "") -> None:
        """End ``process`` as a signal's default action does: status 128 + sig.

        The report (a line on the console's stderr) names the signal, as a
        shell would.
        """
        report = f"program terminated by {signal_name(sig)} (signal {sig})"
        if detail:
            report += f": {detail}"
        self.log(report)
        logger.info(report)
        self._end_process(process, ProgramFault(report, sig))

    def _end_process(self, process: Process, cause: BaseException) -> None:
        """Record why the program ends, and stop every other thread."""
        if process.ended.is_set():
            return
        if isinstance(cause, ProcessExit):
            process.exit_status = cause.status
            if cause.signal:
                self.log(f"program terminated by signal {cause.signal}")
        elif isinstance(cause, ProgramFault):
            process.exit_status = 128 + cause.signal
            process.fault = cause
        else:
            process.exit_status = 1
            process.fault = cause
        process.ended.set()
        process.futexes.wake_everyone()
        if process.real_timer is not None:
            process.real_timer.stop()
        # Every thread leaves KVM_RUN, or the wait it is in, and sees the end.
        for task in list(process.tasks):
            signals.kick(task)

    def _slow_exit(self, task: Task, reason: int) -> None:
        """Everything the fast path does not handle: faults, failures, signals."""
        vcpu = task.vcpu
        if reason < 0:
            if -reason == errno.EINTR:  # a kick: the program's end or a signal
                vcpu.run_map[_kvm.RUN_IMMEDIATE_EXIT] = 0
                if task.process.ended.is_set():
                    raise ThreadExit()
                signals.deliver(task)
                return
            raise KernelError(f"KVM_RUN failed: {os.strerror(-reason)}")
        if reason == _kvm.KVM_EXIT_IO:
            port = vcpu.io_port()
            vector = port - EXCEPTION_PORT_BASE
            if 0 <= vector < 32:
                self._exception(task, vector)
                return
        name = _kvm.EXIT_REASON_NAMES.get(reason, str(reason))
        detail = ""
        if reason == _kvm.KVM_EXIT_MMIO:
            detail = f" at guest-physical {vcpu.mmio_address():#x}"
        elif reason == _kvm.KVM_EXIT_IO:
            detail = f" on port {vcpu.io_port():#x}"
        elif reason == _kvm.KVM_EXIT_INTERNAL_ERROR:
            detail = f" (suberror {vcpu.run_q[4] & 0xFFFFFFFF})"
        raise ProgramFault(
            self._report(task, f"unexpected VM exit {name}{detail}", vcpu.registers()),
            SIGSEGV,
        )

    def _exception(self, task: Task, vector: int) -> None:
        """A CPU exception: demand paging, the program's handler, or its end."""
        vcpu = task.vcpu
        frame = vcpu.exception_frame(vector)
        error = frame["error_code"]

        def registers() -> dict[str, int]:
            values = vcpu.registers()
            values.update(rip=frame["rip"], rsp=frame["rsp"], rflags=frame["rflags"])
            return values

        cr2 = 0
        if vector == 14:
            address = cr2 = vcpu.get_sregs().cr2
            write = bool(error & 2)
            if not error & 1 and task.mm.populate(address, write):
                self.faults += 1
                # Signals sent meanwhile are taken on the way back.
                if task.restart is not None or signals.deliverable(task):
                    signals.deliver(task, registers())
                return
            kind = "write" if write else "instruction fetch" if error & 16 else "read"
            cause = "protection violation" if error & 1 else "unmapped page"
            what = f"page fault at address {address:#x} ({kind}, {cause})"
            sig = SIGSEGV
            # SEGV_ACCERR when the address is mapped but not for this access.
            area = task.mm.find(address)
            mapped = error & 1 or area is not None
            code = SEGV_ACCERR if mapped else SEGV_MAPERR
            if area is not None and area.beyond_eof and area.prot & PROT_READ:
                # A page of a file mapping past the end of the file.
                what = f"bus error at address {address:#x} (past the end of the file)"
                sig, code = SIGBUS, BUS_ADRERR
            info = siginfo(sig, code, address=address)
        else:
            what = VECTOR_NAMES.get(vector, f"exception {vector}")
            if vector in (10, 11, 12, 13):
                what += f" (error code {error:#x})"
            sig, code = VECTOR_SIGNALS.get(vector, (SIGSEGV, SI_KERNEL))
            if vector == 1 and not frame["rflags"] & RFLAGS_TF:
                code = TRAP_BRKPT
            elif vector in (16, 19):
                code = self._fpu_exception_code(vcpu, vector)
            if vector in VECTORS_WITH_ADDRESS:
                info = siginfo(sig, code, address=frame["rip"])
            else:
                info = siginfo(sig, code)
        fault = Fault(trapno=vector, err=error, cr2=cr2)
        if self._catch_fault(task, sig, info, fault, registers()):
            return
        raise ProgramFault(self._report(task, what, registers()), sig)

    def _catch_fault(
        self,
        task: Task,
        sig: int,
        info: bytes,
        fault: Fault,
        registers: dict[str, int],
    ) -> bool:
        """Run the program's handler for a fault's signal; False if it has none.

        A blocked or ignored fault signal cannot be put off, because the
        instruction would fault again: Linux then takes the default action,
        and so does the caller here (the fault report).
        """
        disposition = signals.action(task.process, sig)
        if not disposition.catches or task.signal_mask & bit(sig):
            return False
        task.fault = fault
        task.pending.add(sig, info)
        signals.deliver(task, registers)
        return True

    @staticmethod
    def _fpu_exception_code(vcpu, vector: int) -> int:  # noqa: ANN001
        image = vcpu.fxsave()
        if vector == 16:
            control = int.from_bytes(image[0:2], "little")
            status = int.from_bytes(image[2:4], "little")
            raised = status & ~control
        else:
            mxcsr = int.from_bytes(image[24:28], "little")
            raised = mxcsr & ~(mxcsr >> 7)
        for bits, code in FPE_CODES:
            if raised & bits:
                return code
        return 0

    def _report(self, task: Task, what: str, registers: dict[str, int]) -> str:
        rip = registers["rip"]
        loaded = task.process.loaded
        # The symbol, from the program's own table, only where rip lies in
        # the program; the file is whichever mapping holds rip (a library,
        # say), as /proc/self/maps names it.
        area = task.mm.find(rip)
        mapped = area.name if area is not None and area.name else None
        where = None
        if loaded is not None and mapped == task.process.exe:
            where = loaded.symbolize(rip)
        lines = [f"program fault: {what}"]
        lines.append(
            f"  rip {rip:#018x}"
            + (f" in {where}" if where else "")
            + f" ({mapped or 'no mapping'})"
        )
        names = [n for n in _kvm.REG_NAMES if n != "rip"]
        for i in range(0, len(names), 4):
            lines.append(
                "  "
                + "  ".join(f"{n:>6} {registers[n]:#018x}" for n in names[i : i + 4])
            )
        return "\n".join(lines)

    def close(self) -> None:
        """Release the VM once every host thread that runs a vCPU has left.

        A background program's threads may still be unwinding from their
        last KVM_RUN when the boot is over; closing a vCPU under one of them
        would pull its kvm_run page away while it is read.
        """
        if self.vdso is not None:
            self.vdso.close()
        current = threading.current_thread()
        for thread in self._host_threads:
            if thread is not current:
                thread.join(timeout=5.0)
        if any(t.is_alive() for t in self._host_threads if t is not current):
            logger.warning("a vCPU thread did not stop; leaving the VM to process exit")
            return
        self.machine.close()
        # Only once KVM has let go of it (the VM's descriptors are closed).
        self.phys.close()
