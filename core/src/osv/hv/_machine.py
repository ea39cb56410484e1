"""A KVM virtual machine prepared for one Linux program in ring 3."""

from __future__ import annotations

import ctypes
import logging
import mmap
import struct

from osv.hv import _kvm
from osv.hv._dispatch import SYSCALL_PORT, TRAP_DOORBELL, TRAP_PORT
from osv.hv._kvm import KvmError, ioctl
from osv.hv._stats import open_stats

logger = logging.getLogger(__name__)

# Rationale: the guest holds no operating system. The kernel writes, into the
# first 64 KiB of guest-physical memory, what the x86-64 CPU itself needs to
# run a ring-3 program and send every system call and fault to the host:
#
#   GPA 0x2000  IDT    vectors 0-31, all on IST1, each to a 16-byte stub.
#   GPA 0x4000  ring-0 exception stubs: `out 0x80+vector, al`, drop the error
#               code, `iretq`. The `out` exits to the host, which reads the
#               frame from the exception stack and CR2, then either fixes the
#               cause (demand paging) and lets the stub return, or stops.
#   GPA 0x5000  ring-3 system-call stub (PVM): `mov [rip+d], al` aimed at the
#               doorbell page, whose guest-physical frame has no memory slot, so
#               the store exits with KVM_EXIT_MMIO. On PVM `syscall` from ring 3
#               stays in ring 3, so no ring-0 code can run on this path.
#   GPA 0x6000  ring-0 system-call stub (hardware KVM): `out 0x10, al;
#               sysretq`, and a variant that reloads CR3 first, used when a
#               mapping was made more restrictive and the TLB must be flushed
#               (it borrows the vCPU's scratch word through swapgs). At +64 a
#               lone `iretq`: the way back to ring 3 with every register
#               chosen by the host (signal delivery, rt_sigreturn), see
#               VCpu.enter_user.
#   GPA 0x7000  the probe: `rdtsc; syscall; jmp .`, run once at start-up in
#               ring 3 with LSTAR aimed at the ring-0 stub. A port-0x10 exit
#               means hardware semantics; a page fault at LSTAR (a ring-3
#               fetch of a supervisor page) means PVM semantics. The counter
#               it reads shows what ring-3 code sees as the time-stamp counter,
#               which the vDSO's clock is calibrated against.
#
# and, for every vCPU, a block of four frames of its own, mapped at
# CPU_BLOCKS_VA + 16 KiB * vCPU index, because two vCPUs must never share an
# exception stack or a busy TSS:
#
#   +0x0000  GDT    Linux's selectors (kernel CS 0x10, user CS 0x33, SS
#                   0x2B), so syscall/sysret and signal frames look as on
#                   Linux, plus this vCPU's TSS descriptor at 0x40.
#   +0x0800  TSS    RSP0 and IST1 point at the exception stack.
#   +0x1000  the 8 KiB exception stack (IST1), top at +0x3000.
#   +0x3000  scratch words (the vCPU's kernel GS base).
#
# All of it is mapped at MONITOR_BASE + GPA (the shared part) and in a range
# the program's address space reserves. Ring-0 code is interpreted on PVM
# (about 1 µs an instruction), so each stub is a handful of instructions.
#
# With the vDSO, a table of CPU slots (CPU_TABLE_VA, 8 bytes per vCPU, each
# holding its own address) is mapped read-only for the program, and every
# vCPU's GS base points at its slot: the vDSO's getcpu reads `gs:0` and
# finds the vCPU's number without a system call. No instruction that names
# the CPU works in ring 3 on both kinds of KVM: on PVM (measured), `lsl`
# does not read the guest's GDT, where Linux keeps a per-CPU segment, and
# `rdtscp`/`rdpid` give the host CPU the vCPU's thread happens to run on.

MONITOR_BASE = 0x7FFF00000000
MONITOR_SIZE = 0x10000
IDT_GPA = 0x2000
EXC_STUBS_GPA = 0x4000
USER_STUB_GPA = 0x5000
KERNEL_STUB_GPA = 0x6000
PROBE_GPA = 0x7000
DOORBELL_OFFSET = 0xB000
# Per-vCPU blocks, and the whole virtual range the kernel keeps for itself.
CPU_BLOCKS_VA = MONITOR_BASE + 0x100000
CPU_BLOCK_SIZE = 0x4000
MAX_VCPUS = 4096
MONITOR_VA_SIZE = 0x100000 + MAX_VCPUS * CPU_BLOCK_SIZE
CPU_TABLE_VA = MONITOR_BASE + 0x20000
CPU_TABLE_SIZE = MAX_VCPUS * 8
BLOCK_TSS = 0x800
BLOCK_IST = 0x1000
BLOCK_IST_TOP = 0x3000
BLOCK_SCRATCH = 0x3000

EXCEPTION_PORT_BASE = 0x80
EXCEPTIONS_WITH_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
# Vectors a ring-3 `int n` may raise itself, as on Linux: int3 is a breakpoint
# (SIGTRAP), not a protection fault.
USER_GATES = frozenset({3})
EXCEPTION_STUB_SIZE = 16
KERNEL_STUB_FLUSH_OFFSET = 16
KERNEL_STUB_IRET_OFFSET = 64
USER_STUB_VA = MONITOR_BASE + USER_STUB_GPA
KERNEL_STUB_VA = MONITOR_BASE + KERNEL_STUB_GPA
EXC_STUBS_VA = MONITOR_BASE + EXC_STUBS_GPA
IRET_STUB_VA = KERNEL_STUB_VA + KERNEL_STUB_IRET_OFFSET
# Where an interrupt frame for iretq goes: the top five words of the IST.
IRET_FRAME_SIZE = 40
# The FXSAVE image: FCW, FSW, abridged FTW, FOP, FIP, FDP, MXCSR, MXCSR_MASK,
# then ST0-7 at 32 and XMM0-15 at 160 (Intel SDM, "FXSAVE").
FXSAVE_SIZE = 512
FXSAVE_HEADER = struct.Struct("<HHBxHQQII")
# The MXCSR bits every SSE2 CPU implements.
MXCSR_MASK = 0xFFFF

SEL_KERNEL_CS = 0x10
SEL_KERNEL_DS = 0x18
SEL_USER_CS32 = 0x23
SEL_USER_DS = 0x2B
SEL_USER_CS = 0x33
SEL_TSS = 0x40

CR0_PE_MP_ET_NE_WP_AM_PG = 0x80050033
CR4_PAE = 1 << 5
CR4_OSFXSR = 1 << 9
CR4_OSXMMEXCPT = 1 << 10
CR4_OSXSAVE = 1 << 18
EFER_SCE_LME_LMA_NXE = 0xD01
STAR = (SEL_USER_CS32 << 48) | (SEL_KERNEL_CS << 32)
# Linux's historical SFMASK: TF, DF, IF, IOPL, NT and AC cleared on entry.
SFMASK = 0x47700
RFLAGS_USER = 0x202

CPUID_1_ECX_XSAVE = 1 << 26
CPUID_1_ECX_HYPERVISOR = 1 << 31
# CPUID 0x80000007 EDX bit 8: the time-stamp counter runs at a constant rate
# in every power state (the "invariant TSC").
CPUID_80000007_EDX_INVARIANT_TSC = 1 << 8
KVM_SET_XCRS = 0x4188AEA7

VECTOR_NAMES = {
    0: "#DE divide error",
    1: "#DB debug",
    2: "NMI",
    3: "#BP breakpoint",
    4: "#OF overflow",
    5: "#BR bound range",
    6: "#UD invalid opcode",
    7: "#NM device not available",
    8: "#DF double fault",
    10: "#TS invalid TSS",
    11: "#NP segment not present",
    12: "#SS stack fault",
    13: "#GP general protection",
    14: "#PF page fault",
    16: "#MF x87 floating-point",
    17: "#AC alignment check",
    18: "#MC machine check",
    19: "#XM SIMD floating-point",
}


# Feature bits by CPUID leaf and register, named as Linux names them.
CPUID_FLAG_NAMES = {
    (1, "edx"): (
        "fpu vme de pse tsc msr pae mce cx8 apic _ sep mtrr pge mca cmov pat pse36 "
        "pn clflush _ dts acpi mmx fxsr sse sse2 ss ht tm ia64 pbe"
    )
    .replace("_", "")
    .split(" "),
    (1, "ecx"): (
        "pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 cid sdbg fma cx16 "
        "xtpr pdcm _ pcid dca sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer "
        "aes xsave _ avx f16c rdrand hypervisor"
    )
    .replace("_", "")
    .split(" "),
    (0x80000001, "edx"): (
        "_ _ _ _ _ _ _ _ _ _ _ syscall _ _ _ _ _ _ _ _ nx _ mmxext _ _ fxsr_opt "
        "pdpe1gb rdtscp _ lm"
    )
    .replace("_", "")
    .split(" "),
    (7, "ebx"): (
        "fsgsbase tsc_adjust sgx bmi1 hle avx2 _ smep bmi2 erms invpcid rtm _ _ mpx "
        "_ avx512f avx512dq rdseed adx smap avx512ifma _ clflushopt clwb _ avx512pf "
        "avx512er avx512cd sha_ni avx512bw avx512vl"
    )
    .replace("_", "")
    .split(" "),
}


def _gdt(tss: int) -> bytes:
    entries = [
        0,
        0,
        0x00AF9B000000FFFF,  # 0x10 kernel code, 64-bit
        0x00CF93000000FFFF,  # 0x18 kernel data
        0x00CFFB000000FFFF,  # 0x23 user code, 32-bit (sysret's base)
        0x00CFF3000000FFFF,  # 0x2B user data
        0x00AFFB000000FFFF,  # 0x33 user code, 64-bit
        0,
    ]
    limit = 103
    low = (
        (limit & 0xFFFF)
        | ((tss & 0xFFFFFF) << 16)
        | (0x89 << 40)  # present, 64-bit available TSS
        | ((tss >> 24) & 0xFF) << 56
    )
    entries += [low, tss >> 32]
    return struct.pack(f"<{len(entries)}Q", *entries)


def _idt() -> bytes:
    gates = bytearray()
    for vector in range(32):
        handler = MONITOR_BASE + EXC_STUBS_GPA + 16 * vector
        gates += struct.pack(
            "<HHBBHII",
            handler & 0xFFFF,
            SEL_KERNEL_CS,
            1,  # IST1, for every vector: the user stack is never written
            # present, 64-bit interrupt gate, DPL 3 or 0
            0xEE if vector in USER_GATES else 0x8E,
            (handler >> 16) & 0xFFFF,
            handler >> 32,
            0,
        )
    return bytes(gates)


def _tss(ist_top: int) -> bytes:
    tss = bytearray(104)
    struct.pack_into("<Q", tss, 4, ist_top)  # rsp0
    struct.pack_into("<Q", tss, 36, ist_top)  # ist1
    struct.pack_into("<H", tss, 102, 104)  # no I/O permission bitmap
    return bytes(tss)


def _exception_stubs() -> bytes:
    code = bytearray()
    for vector in range(32):
        stub = bytes([0xE6, EXCEPTION_PORT_BASE + vector])  # out imm8, al
        if vector in EXCEPTIONS_WITH_ERROR_CODE:
            stub += b"\x48\x83\xc4\x08"  # add rsp, 8
        stub += b"\x48\xcf"  # iretq
        code += stub.ljust(EXCEPTION_STUB_SIZE, b"\xcc")
    return bytes(code)


def _rip_relative(instruction: bytes, at: int, target: int) -> bytes:
    """Append the disp32 that makes an instruction at ``at`` reach ``target``."""
    end = at + len(instruction) + 4
    return instruction + struct.pack("<i", target - end)


def _user_stub(doorbell_va: int) -> bytes:
    stub_va = MONITOR_BASE + USER_STUB_GPA
    # mov [rip+disp32], al ; sysretq (reached only if ever run in ring 0)
    return _rip_relative(b"\x88\x05", stub_va, doorbell_va) + b"\x48\x0f\x07"


def _kernel_stub() -> bytes:
    plain = bytes([0xE6, SYSCALL_PORT]) + b"\x48\x0f\x07"  # out 0x10, al ; sysretq
    flush = b"\x0f\x01\xf8"  # swapgs: GS now points at this vCPU's scratch
    flush += b"\x65\x48\x89\x04\x25\x00\x00\x00\x00"  # mov gs:[0], rax
    flush += b"\x0f\x20\xd8\x0f\x22\xd8"  # mov rax, cr3 ; mov cr3, rax
    flush += b"\x65\x48\x8b\x04\x25\x00\x00\x00\x00"  # mov rax, gs:[0]
    flush += b"\x0f\x01\xf8\x48\x0f\x07"  # swapgs ; sysretq
    stub = plain.ljust(KERNEL_STUB_FLUSH_OFFSET, b"\xcc") + flush
    return stub.ljust(KERNEL_STUB_IRET_OFFSET, b"\xcc") + b"\x48\xcf"  # iretq


# Offsets in the kernel stub page of the two `sysretq`s: a vCPU stopped there
# has served its system call and is about to return to RCX with R11's flags.
KERNEL_STUB_SYSRETS = frozenset({2, KERNEL_STUB_FLUSH_OFFSET + 30})


PROBE_CODE = b"\x0f\x31\x0f\x05\xeb\xfe"  # rdtsc ; syscall ; jmp .
# A struct kvm_msrs with room for one entry.
_TSC_REQUEST = _kvm.msrs_struct(1)


def _segment(seg: _kvm.kvm_segment, selector: int, code: bool, dpl: int) -> None:
    seg.base = 0
    seg.limit = 0xFFFFFFFF
    seg.selector = selector
    seg.type = 11 if code else 3
    seg.present = 1
    seg.dpl = dpl
    seg.db = 0 if code else 1
    seg.s = 1
    seg.l = 1 if code else 0
    seg.g = 1
    seg.avl = 0
    seg.unusable = 0


# What the first VM of the process found with its start-up probe: how
# `syscall` reaches the host (TRAP_PORT or TRAP_DOORBELL), and why the counter
# a program reads in ring 3 cannot serve as its clock (None when it can; the
# vDSO's calibration checks it against the probe's reading).
_TSC_NOT_CHECKED = "no start-up probe of this process checked the counter"
_probed_trap: int | None = None
_probed_tsc_verdict: str | None = _TSC_NOT_CHECKED


class Machine:
    """One VM: its memory slot, CPUID table, guest structures and trap style."""

    def __init__(self, phys) -> None:  # noqa: ANN001 - osv.mm.PhysicalMemory
        self.kvm_fd = _kvm.open_kvm()
        for cap, what in (
            (_kvm.KVM_CAP_USER_MEMORY, "user memory slots"),
            (_kvm.KVM_CAP_IMMEDIATE_EXIT, "immediate exit"),
        ):
            if ioctl(self.kvm_fd, _kvm.KVM_CHECK_EXTENSION, cap) <= 0:
                raise KvmError(f"KVM on this machine lacks {what}")
        if not ioctl(self.kvm_fd, _kvm.KVM_CHECK_EXTENSION, _kvm.KVM_CAP_SYNC_REGS) & 1:
            raise KvmError("KVM on this machine cannot share registers (sync regs)")
        self.run_size = ioctl(self.kvm_fd, _kvm.KVM_GET_VCPU_MMAP_SIZE, 0)
        self.vm_fd = ioctl(self.kvm_fd, _kvm.KVM_CREATE_VM, 0)
        ioctl(self.vm_fd, _kvm.KVM_SET_TSS_ADDR, 0xFFFBD000)

        self.phys = phys
        region = _kvm.kvm_userspace_memory_region(
            slot=0,
            flags=0,
            guest_phys_addr=0,
            memory_size=phys.size,
            userspace_addr=phys.host_address,
        )
        ioctl(self.vm_fd, _kvm.KVM_SET_USER_MEMORY_REGION, region)
        # The doorbell frame lies past the end of RAM, where no slot exists.
        self.doorbell_gpa = (phys.size + 0x200000) & ~0x1FFFFF
        self.doorbell_va = MONITOR_BASE + DOORBELL_OFFSET
        self.cpuid = self._cpuid()
        self.xsave = bool(self._leaf(1).ecx & CPUID_1_ECX_XSAVE)
        self.trap = TRAP_DOORBELL
        self.vcpus: list[VCpu] = []
        # The host's counter before and after the probe's KVM_RUN, and what
        # the probe read in ring 3 in between (see probe).
        self.probe_tsc: tuple[int, int, int] | None = None
        # Guest-physical address of the getcpu table; 0 until enabled.
        self.cpu_table_gpa = 0
        self._write_structures()

    def _cpuid(self) -> _kvm.kvm_cpuid2:
        table = _kvm.kvm_cpuid2(nent=_kvm.CPUID_CAPACITY)
        ioctl(self.kvm_fd, _kvm.KVM_GET_SUPPORTED_CPUID, table)
        for entry in table.entries[: table.nent]:
            if entry.function == 1:
                # The program sees the real CPU's features plus the hypervisor
                # bit, as under any KVM hypervisor.
                entry.ecx |= CPUID_1_ECX_HYPERVISOR
        return table

    def _leaf(self, function: int, index: int = 0) -> _kvm.kvm_cpuid_entry2:
        for entry in self.cpuid.entries[: self.cpuid.nent]:
            if entry.function == function and entry.index == index:
                return entry
        return _kvm.kvm_cpuid_entry2()

    @property
    def cpu_vendor(self) -> str:
        leaf = self._leaf(0)
        return struct.pack("<III", leaf.ebx, leaf.edx, leaf.ecx).decode(
            "ascii", "replace"
        )

    @property
    def cpu_model(self) -> str:
        raw = b"".join(
            struct.pack("<IIII", e.eax, e.ebx, e.ecx, e.edx)
            for e in (self._leaf(0x80000002 + i) for i in range(3))
        )
        return raw.rstrip(b"\0").decode("ascii", "replace").strip() or "unknown"

    @property
    def cpu_flags(self) -> list[str]:
        """Linux's /proc/cpuinfo flag names for the features the guest sees."""
        flags = []
        for (function, register), names in CPUID_FLAG_NAMES.items():
            value = getattr(self._leaf(function), register)
            flags += [
                name for bit, name in enumerate(names) if name and value >> bit & 1
            ]
        return flags

    @property
    def invariant_tsc(self) -> bool:
        """Whether the CPU the guest sees has a constant-rate time-stamp counter."""
        return bool(self._leaf(0x80000007).edx & CPUID_80000007_EDX_INVARIANT_TSC)

    def tsc_khz(self, vcpu: VCpu) -> int:
        """The guest's time-stamp counter frequency in kHz, or 0 if KVM won't say."""
        if ioctl(self.kvm_fd, _kvm.KVM_CHECK_EXTENSION, _kvm.KVM_CAP_GET_TSC_KHZ) <= 0:
            return 0
        try:
            return ioctl(vcpu.fd, _kvm.KVM_GET_TSC_KHZ, 0)
        except KvmError as exc:
            logger.debug("KVM_GET_TSC_KHZ: %s", exc)
            return 0

    def enable_cpu_slots(self) -> None:
        """Give every vCPU a GS base at its slot of the getcpu table (see above).

        Called before the first address space is installed; from then on
        every program sees the table and every vCPU set up points at its slot.
        """
        if self.cpu_table_gpa:
            return
        npages = CPU_TABLE_SIZE >> 12
        self.cpu_table_gpa = self.phys.allocate_kernel(npages)
        slots = [CPU_TABLE_VA + 8 * i for i in range(MAX_VCPUS)]
        table = struct.pack(f"<{MAX_VCPUS}Q", *slots)
        self.phys.ram[self.cpu_table_gpa : self.cpu_table_gpa + len(table)] = table

    def user_gs_base(self, index: int) -> int:
        """The GS base a program starts with on vCPU ``index``: its getcpu slot."""
        return CPU_TABLE_VA + 8 * index if self.cpu_table_gpa else 0

    @property
    def hwcap(self) -> int:
        """AT_HWCAP as Linux gives it on x86-64: CPUID.1:EDX."""
        return self._leaf(1).edx

    def _write_structures(self) -> None:
        ram = self.phys.ram
        for gpa, blob in (
            (IDT_GPA, _idt()),
            (EXC_STUBS_GPA, _exception_stubs()),
            (USER_STUB_GPA, _user_stub(self.doorbell_va)),
            (KERNEL_STUB_GPA, _kernel_stub()),
            (PROBE_GPA, PROBE_CODE),
        ):
            ram[gpa : gpa + len(blob)] = blob

    def install(self, aspace) -> None:  # noqa: ANN001 - osv.mm.AddressSpace
        """Map the guest structures into an address space and reserve their range."""
        from osv.mm import PTE_NX, PTE_RW, PTE_US

        def page(gpa: int, flags: int, count: int = 1) -> None:
            aspace.map_fixed_frames(MONITOR_BASE + gpa, gpa, count, flags)

        page(IDT_GPA, PTE_NX)
        page(EXC_STUBS_GPA, 0)
        page(USER_STUB_GPA, PTE_US)
        page(KERNEL_STUB_GPA, 0)
        page(PROBE_GPA, PTE_US)
        aspace.map_fixed_frames(
            self.doorbell_va, self.doorbell_gpa, 1, PTE_RW | PTE_US | PTE_NX
        )
        if self.cpu_table_gpa:
            aspace.map_fixed_frames(
                CPU_TABLE_VA, self.cpu_table_gpa, CPU_TABLE_SIZE >> 12, PTE_US | PTE_NX
            )
        for vcpu in self.vcpus:
            vcpu.map_block(aspace)
        aspace.reserve(MONITOR_BASE, MONITOR_VA_SIZE)

    def create_vcpu(self, aspace) -> VCpu:  # noqa: ANN001
        """A new vCPU with its own GDT, TSS and exception stack, mapped in ``aspace``."""
        index = len(self.vcpus)
        if index >= MAX_VCPUS:
            raise KvmError(
                f"no more than {MAX_VCPUS} vCPUs (guest threads) are possible"
            )
        vcpu = VCpu(self, index, aspace)
        self.vcpus.append(vcpu)
        return vcpu

    def probe(self, vcpu: VCpu) -> int:
        """Find out whether `syscall` from ring 3 reaches ring 0 (see above).

        The answer belongs to the host's KVM, not to one VM, so once a VM of
        the process has run the probe and the vDSO's calibration has judged
        the counter by it, later VMs (a reboot, a server's runs) take both
        answers and start sooner.
        """
        global _probed_trap, _probed_tsc_verdict
        if _probed_trap is not None and _probed_tsc_verdict != _TSC_NOT_CHECKED:
            self.trap = _probed_trap
            return self.trap
        _probed_tsc_verdict = _TSC_NOT_CHECKED
        vcpu.setup(
            entry=MONITOR_BASE + PROBE_GPA,
            stack=0,
            lstar=MONITOR_BASE + KERNEL_STUB_GPA,
            probe=True,
        )
        before = _kvm.read_host_tsc()
        reason = vcpu.run_once()
        after = _kvm.read_host_tsc()
        guest = vcpu.reg("rdx") << 32 | vcpu.reg("rax") & 0xFFFFFFFF
        self.probe_tsc = (before, guest, after)
        port = vcpu.io_port() if reason == _kvm.KVM_EXIT_IO else -1
        if port == SYSCALL_PORT:
            self.trap = TRAP_PORT
            logger.info("syscall from ring 3 enters ring 0: using the port-I/O stub")
        elif port == EXCEPTION_PORT_BASE + 14:
            self.trap = TRAP_DOORBELL
            logger.info("syscall from ring 3 stays in ring 3 (PVM): using the doorbell")
        else:
            raise KvmError(
                "could not determine how this KVM handles system calls "
                f"(probe ended with {_kvm.EXIT_REASON_NAMES.get(reason, reason)}, "
                f"port {port:#x})"
            )
        _probed_trap = self.trap
        return self.trap

    @property
    def tsc_verdict(self) -> str | None:
        """Why ring 3's counter cannot be the guest's clock, as the vDSO's
        calibration found after this process's probe; None when it can.
        Until a calibration checks it, the counter is not trusted."""
        return _probed_tsc_verdict

    @tsc_verdict.setter
    def tsc_verdict(self, verdict: str | None) -> None:
        global _probed_tsc_verdict
        _probed_tsc_verdict = verdict

    def kvm_counters(self) -> dict[str, int]:
        """KVM's cumulative counters, summed over every vCPU (empty if not offered)."""
        totals: dict[str, int] = {}
        for vcpu in self.vcpus:
            stats = open_stats(vcpu.fd)
            if stats is None:
                return {}
            try:
                for name, value in stats.read().items():
                    totals[name] = totals.get(name, 0) + value
            finally:
                stats.close()
        return totals

    @property
    def lstar(self) -> int:
        if self.trap == TRAP_PORT:
            return MONITOR_BASE + KERNEL_STUB_GPA
        return MONITOR_BASE + USER_STUB_GPA

    def close(self) -> None:
        import os

        for vcpu in self.vcpus:
            vcpu.close()
        for fd in (self.vm_fd, self.kvm_fd):
            try:
                os.close(fd)
            except OSError:
                pass


class VCpu:
    """One virtual CPU and its shared kvm_run page."""

    def __init__(self, machine: Machine, index: int, aspace) -> None:  # noqa: ANN001
        self.machine = machine
        self.index = index
        self.aspace = aspace
        self.fd = ioctl(machine.vm_fd, _kvm.KVM_CREATE_VCPU, index)
        self.block_va = CPU_BLOCKS_VA + index * CPU_BLOCK_SIZE
        self.block_gpa = machine.phys.allocate_kernel(CPU_BLOCK_SIZE >> 12)
        ram = machine.phys.ram
        gdt = _gdt(self.block_va + BLOCK_TSS)
        tss = _tss(self.block_va + BLOCK_IST_TOP)
        ram[self.block_gpa : self.block_gpa + len(gdt)] = gdt
        at = self.block_gpa + BLOCK_TSS
        ram[at : at + len(tss)] = tss
        self.map_block(aspace)
        self.run_map = mmap.mmap(
            self.fd, machine.run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self._anchor = ctypes.c_char.from_buffer(self.run_map)
        self.run_address = ctypes.addressof(self._anchor)
        self.run_q = memoryview(self.run_map).cast("Q")
        self._tsc_request = None
        ioctl(self.fd, _kvm.KVM_SET_CPUID2, machine.cpuid)

    def map_block(self, aspace) -> None:  # noqa: ANN001
        """Map this vCPU's GDT, TSS, exception stack and scratch into ``aspace``."""
        from osv.mm import PTE_NX, PTE_RW

        aspace.map_fixed_frames(
            self.block_va, self.block_gpa, CPU_BLOCK_SIZE >> 12, PTE_RW | PTE_NX
        )

    def setup(self, entry: int, stack: int, lstar: int, probe: bool = False) -> None:
        """Put the vCPU in 64-bit ring 3 at ``entry`` with the program's stack."""
        sregs = _kvm.kvm_sregs()
        ioctl(self.fd, _kvm.KVM_GET_SREGS, sregs)
        _segment(sregs.cs, SEL_USER_CS, True, 3)
        for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
            _segment(seg, 0, False, 3)
        sregs.ss.selector = SEL_USER_DS
        sregs.tr.base = self.block_va + BLOCK_TSS
        sregs.tr.limit = 103
        sregs.tr.selector = SEL_TSS
        sregs.tr.type = 11
        sregs.tr.present = 1
        sregs.tr.s = 0
        sregs.tr.dpl = 0
        sregs.tr.g = 0
        sregs.ldt.unusable = 1
        sregs.ldt.present = 0
        sregs.gdt.base = self.block_va
        sregs.gdt.limit = 10 * 8 - 1
        sregs.idt.base = MONITOR_BASE + IDT_GPA
        sregs.idt.limit = 32 * 16 - 1
        sregs.cr0 = CR0_PE_MP_ET_NE_WP_AM_PG
        sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT
        if self.machine.xsave:
            sregs.cr4 |= CR4_OSXSAVE
        sregs.cr3 = self.aspace.pt.root
        sregs.efer = EFER_SCE_LME_LMA_NXE
        ioctl(self.fd, _kvm.KVM_SET_SREGS, sregs)
        if self.machine.xsave:
            self._enable_xsave()

        self.set_msrs(
            {
                _kvm.MSR_STAR: STAR,
                _kvm.MSR_LSTAR: lstar,
                _kvm.MSR_CSTAR: lstar,
                _kvm.MSR_SFMASK: SFMASK,
                _kvm.MSR_FS_BASE: 0,
                _kvm.MSR_GS_BASE: self.machine.user_gs_base(self.index),
                _kvm.MSR_KERNEL_GS_BASE: self.block_va + BLOCK_SCRATCH,
            }
        )
        regs = _kvm.kvm_regs()
        regs.rip = entry
        regs.rsp = stack
        regs.rflags = RFLAGS_USER
        ioctl(self.fd, _kvm.KVM_SET_REGS, regs)
        if not probe:
            self.reset_fpu()
        self.run_map[_kvm.RUN_VALID_REGS : _kvm.RUN_VALID_REGS + 8] = struct.pack(
            "<Q", _kvm.KVM_SYNC_X86_REGS
        )
        self.run_q[_kvm.RUN_DIRTY_REGS // 8] = 0

    def _enable_xsave(self) -> None:
        # XCR0: x87 and SSE always, AVX where the CPU offers it (CPUID.0xD.0 EAX).
        supported = self.machine._leaf(0xD).eax
        xcr0 = 0x3 | (supported & 0x4)
        xcrs = struct.pack("<IIIIQ", 1, 0, 0, 0, xcr0).ljust(392, b"\0")
        buffer = ctypes.create_string_buffer(xcrs, 392)
        ioctl(self.fd, KVM_SET_XCRS, ctypes.addressof(buffer))

    def set_msrs(self, values: dict[int, int]) -> None:
        msrs_type = _kvm.msrs_struct(len(values))
        msrs = msrs_type(nmsrs=len(values))
        for i, (index, data) in enumerate(values.items()):
            msrs.entries[i].index = index
            msrs.entries[i].data = data
        done = ioctl(self.fd, _kvm.KVM_SET_MSRS, msrs)
        if done != len(values):
            raise KvmError(
                f"KVM accepted {done} of {len(values)} model-specific registers"
            )

    def read_tsc(self) -> int:
        """The guest's time-stamp counter as KVM keeps it (MSR IA32_TSC).

        The request is built once, so that the call is little more than the
        ioctl: the clock's calibration times it against the host's counter.
        """
        msrs = self._tsc_request
        if msrs is None:
            msrs = self._tsc_request = _TSC_REQUEST(nmsrs=1)
            msrs.entries[0].index = _kvm.MSR_IA32_TSC
        if ioctl(self.fd, _kvm.KVM_GET_MSRS, msrs) != 1:
            raise KvmError("KVM did not report the guest's time-stamp counter")
        return msrs.entries[0].data

    def set_fs_base(self, value: int) -> None:
        self.set_msrs({_kvm.MSR_FS_BASE: value})

    def get_sregs(self) -> _kvm.kvm_sregs:
        sregs = _kvm.kvm_sregs()
        ioctl(self.fd, _kvm.KVM_GET_SREGS, sregs)
        return sregs

    def run_once(self) -> int:
        """One KVM_RUN; return the exit reason."""
        ioctl(self.fd, _kvm.KVM_RUN, 0)
        return self.run_q[1] & 0xFFFFFFFF

    def io_port(self) -> int:
        return (self.run_q[4] >> 16) & 0xFFFF

    def mmio_address(self) -> int:
        return self.run_q[4]

    def reg(self, name: str) -> int:
        return self.run_q[_kvm.RUN_SYNC_REGS // 8 + _kvm.REG_NAMES.index(name)]

    def set_reg(self, name: str, value: int) -> None:
        self.run_q[_kvm.RUN_SYNC_REGS // 8 + _kvm.REG_NAMES.index(name)] = (
            value & 0xFFFFFFFFFFFFFFFF
        )
        self.run_q[_kvm.RUN_DIRTY_REGS // 8] = _kvm.KVM_SYNC_X86_REGS

    def set_registers(self, values: dict[str, int]) -> None:
        """KVM_SET_REGS (used before a vCPU first runs)."""
        regs = _kvm.kvm_regs()
        for name in _kvm.REG_NAMES:
            setattr(regs, name, values[name] & 0xFFFFFFFFFFFFFFFF)
        ioctl(self.fd, _kvm.KVM_SET_REGS, regs)

    def registers(self) -> dict[str, int]:
        base = _kvm.RUN_SYNC_REGS // 8
        return {name: self.run_q[base + i] for i, name in enumerate(_kvm.REG_NAMES)}

    def exception_frame(self, vector: int) -> dict[str, int]:
        """The frame the CPU pushed on the exception stack for ``vector``."""
        rsp = self.reg("rsp")
        offset = rsp - self.block_va
        if not BLOCK_IST <= offset < BLOCK_IST_TOP:
            raise KvmError(f"exception stack pointer {rsp:#x} is outside the stack")
        gpa = self.block_gpa + offset
        count = 6 if vector in EXCEPTIONS_WITH_ERROR_CODE else 5
        words = struct.unpack_from(f"<{count}Q", self.machine.phys.ram, gpa)
        if count == 5:
            words = (0, *words)
        names = ("error_code", "rip", "cs", "rflags", "rsp", "ss")
        return dict(zip(names, words, strict=True))

    def write_exception_frame(self, vector: int, **fields: int) -> None:
        """Change saved RIP/RSP/RFLAGS that the stub's iretq will restore."""
        gpa = self.block_gpa + self.reg("rsp") - self.block_va
        if vector in EXCEPTIONS_WITH_ERROR_CODE:
            gpa += 8
        for i, name in enumerate(("rip", "cs", "rflags", "rsp", "ss")):
            if name in fields:
                struct.pack_into("<Q", self.machine.phys.ram, gpa + 8 * i, fields[name])

    # ---- the program's registers as a signal sees them ------------------------

    # Rationale: a signal is delivered when the vCPU has stopped, and the stop
    # is not always in the program's own code. Wherever it is, the host must
    # find the registers ring 3 will see, and later choose all of them:
    #   - in program code, or in the doorbell stub once the fast path has set
    #     RIP <- RCX: the sync regs are the program's registers;
    #   - at the first instruction of a system-call stub (`syscall` ran, its
    #     exit has not been taken): the program stands just before its
    #     2-byte `syscall`, RCX - 2, with the number still in RAX; a handler
    #     run now sees the call as not yet made, and the program makes it
    #     when the handler returns;
    #   - at a `sysretq` of the ring-0 stub: the call is served; the program
    #     resumes at RCX with R11's flags;
    #   - in an exception stub after its `out`, or at the iretq stub: the
    #     interrupt frame on the exception stack holds RIP, RFLAGS and RSP.
    # Anywhere else (inside the TLB-flush stub, an exception stub whose exit
    # is still to come) there is no answer, and the caller waits for the next
    # stop.
    #
    # Going back: from ring 3 the sync regs are all rewritten. From ring 0 an
    # interrupt frame goes at the top of the exception stack and the vCPU is
    # pointed at the iretq stub, so that the program gets every register,
    # RCX and R11 included, which a sysret could not give it.

    def user_registers(self) -> dict[str, int] | None:
        """The registers the program has at this stop (see above), or None."""
        regs = self.registers()
        rip = regs["rip"]
        if rip in (USER_STUB_VA, KERNEL_STUB_VA):
            regs.update(rip=regs["rcx"] - 2, rflags=regs["r11"])
            return regs
        if rip - KERNEL_STUB_VA in KERNEL_STUB_SYSRETS:
            regs.update(rip=regs["rcx"], rflags=regs["r11"])
            return regs
        frame = None
        if rip == IRET_STUB_VA:
            frame = regs["rsp"]
        elif EXC_STUBS_VA <= rip < EXC_STUBS_VA + 32 * EXCEPTION_STUB_SIZE:
            vector, at = divmod(rip - EXC_STUBS_VA, EXCEPTION_STUB_SIZE)
            has_error = vector in EXCEPTIONS_WITH_ERROR_CODE
            if at == 2:
                frame = regs["rsp"] + (8 if has_error else 0)
            elif at == 6 and has_error:
                frame = regs["rsp"]
        elif not MONITOR_BASE <= rip < MONITOR_BASE + MONITOR_VA_SIZE:
            return regs
        if frame is None:
            return None
        rip, _cs, rflags, rsp, _ss = self._exception_stack_words(frame, 5)
        regs.update(rip=rip, rflags=rflags, rsp=rsp)
        return regs

    def enter_user(self, registers: dict[str, int]) -> None:
        """Make the next KVM_RUN continue the program with exactly ``registers``."""
        values = dict(registers)
        rip = self.reg("rip")
        in_ring0 = (
            EXC_STUBS_VA <= rip < EXC_STUBS_VA + 0x1000
            or KERNEL_STUB_VA <= rip < KERNEL_STUB_VA + 0x1000
        )
        if in_ring0:
            top = BLOCK_IST_TOP - IRET_FRAME_SIZE
            struct.pack_into(
                "<5Q",
                self.machine.phys.ram,
                self.block_gpa + top,
                values["rip"] & 0xFFFFFFFFFFFFFFFF,
                SEL_USER_CS,
                values["rflags"],
                values["rsp"] & 0xFFFFFFFFFFFFFFFF,
                SEL_USER_DS,
            )
            # Interrupts stay off in ring 0; iretq loads the program's flags.
            values.update(rip=IRET_STUB_VA, rsp=self.block_va + top, rflags=0x2)
        base = _kvm.RUN_SYNC_REGS // 8
        for i, name in enumerate(_kvm.REG_NAMES):
            self.run_q[base + i] = values[name] & 0xFFFFFFFFFFFFFFFF
        self.run_q[_kvm.RUN_DIRTY_REGS // 8] = _kvm.KVM_SYNC_X86_REGS

    def _exception_stack_words(self, rsp: int, count: int) -> tuple[int, ...]:
        offset = rsp - self.block_va
        if not BLOCK_IST <= offset <= BLOCK_IST_TOP - 8 * count:
            raise KvmError(f"exception stack pointer {rsp:#x} is outside the stack")
        return struct.unpack_from(
            f"<{count}Q", self.machine.phys.ram, self.block_gpa + offset
        )

    # ---- x87 and SSE state ------------------------------------------------------

    def fxsave(self) -> bytes:
        """The x87/SSE state as the 512-byte image FXSAVE writes (KVM_GET_FPU)."""
        fpu = _kvm.kvm_fpu()
        ioctl(self.fd, _kvm.KVM_GET_FPU, fpu)
        image = bytearray(FXSAVE_SIZE)
        FXSAVE_HEADER.pack_into(
            image,
            0,
            fpu.fcw,
            fpu.fsw,
            fpu.ftwx,
            fpu.last_opcode,
            fpu.last_ip,
            fpu.last_dp,
            fpu.mxcsr,
            MXCSR_MASK,
        )
        image[32:160] = bytes(fpu.fpr)
        image[160:416] = bytes(fpu.xmm)
        return bytes(image)

    def fxrstor(self, image: bytes) -> None:
        """Load x87/SSE state from a 512-byte FXSAVE image (KVM_SET_FPU).

        Reserved MXCSR bits are cleared, as Linux does for a signal frame,
        since loading them would fault.
        """
        fcw, fsw, ftw, fop, fip, fdp, mxcsr, _ = FXSAVE_HEADER.unpack_from(image)
        fpu = _kvm.kvm_fpu()
        fpu.fcw, fpu.fsw, fpu.ftwx, fpu.last_opcode = fcw, fsw, ftw, fop
        fpu.last_ip, fpu.last_dp, fpu.mxcsr = fip, fdp, mxcsr & MXCSR_MASK
        fpu.fpr = (ctypes.c_uint8 * 128).from_buffer_copy(image, 32)
        fpu.xmm = (ctypes.c_uint8 * 256).from_buffer_copy(image, 160)
        ioctl(self.fd, _kvm.KVM_SET_FPU, fpu)

    def reset_fpu(self) -> None:
        """The x87/SSE state of a new process: FCW 0x37F, MXCSR 0x1F80."""
        fpu = _kvm.kvm_fpu()
        fpu.fcw = 0x37F
        fpu.mxcsr = 0x1F80
        ioctl(self.fd, _kvm.KVM_SET_FPU, fpu)

    def kick(self) -> None:
        """Make the current or next KVM_RUN return at once (immediate_exit)."""
        self.run_map[_kvm.RUN_IMMEDIATE_EXIT] = 1

    def close(self) -> None:
        import os

        self.run_q.release()
        del self._anchor
        try:
            self.run_map.close()
        except BufferError:
            pass
        try:
            os.close(self.fd)
        except OSError:
            pass
