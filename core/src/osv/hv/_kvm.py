"""The raw /dev/kvm interface: ioctl numbers, structure layouts and thin wrappers.

Names follow the kernel's ``include/uapi/linux/kvm.h`` so that a reader can look
each one up there. Nothing here knows about guests or programs.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os

logger = logging.getLogger(__name__)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.restype = ctypes.c_int
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
)
_libc.madvise.restype = ctypes.c_int
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.mprotect.restype = ctypes.c_int
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)

KVM_DEVICE = "/dev/kvm"
KVM_API_VERSION = 12

# ioctl numbers (x86-64), see the _IO/_IOR/_IOW encodings in linux/kvm.h.
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_CHECK_EXTENSION = 0xAE03
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_GET_SUPPORTED_CPUID = 0xC008AE05
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_SET_TSS_ADDR = 0xAE47
KVM_CREATE_VCPU = 0xAE41
KVM_RUN = 0xAE80
KVM_GET_REGS = 0x8090AE81
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_SET_MSRS = 0x4008AE89
KVM_GET_MSRS = 0xC008AE88
KVM_GET_FPU = 0x81A0AE8C
KVM_SET_FPU = 0x41A0AE8D
KVM_SET_CPUID2 = 0x4008AE90
KVM_GET_TSC_KHZ = 0xAEA3

# KVM_CHECK_EXTENSION capabilities.
KVM_CAP_USER_MEMORY = 3
KVM_CAP_NR_VCPUS = 9
KVM_CAP_GET_TSC_KHZ = 61
KVM_CAP_SYNC_REGS = 74
KVM_CAP_IMMEDIATE_EXIT = 136

# kvm_run.exit_reason values.
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17

EXIT_REASON_NAMES = {
    KVM_EXIT_UNKNOWN: "KVM_EXIT_UNKNOWN",
    KVM_EXIT_EXCEPTION: "KVM_EXIT_EXCEPTION",
    KVM_EXIT_IO: "KVM_EXIT_IO",
    KVM_EXIT_DEBUG: "KVM_EXIT_DEBUG",
    KVM_EXIT_HLT: "KVM_EXIT_HLT",
    KVM_EXIT_MMIO: "KVM_EXIT_MMIO",
    KVM_EXIT_SHUTDOWN: "KVM_EXIT_SHUTDOWN",
    KVM_EXIT_FAIL_ENTRY: "KVM_EXIT_FAIL_ENTRY",
    KVM_EXIT_INTR: "KVM_EXIT_INTR",
    KVM_EXIT_INTERNAL_ERROR: "KVM_EXIT_INTERNAL_ERROR",
}

KVM_SYNC_X86_REGS = 1

# Byte offsets inside the mmap'ed struct kvm_run.
RUN_IMMEDIATE_EXIT = 1
RUN_EXIT_REASON = 8
RUN_EXIT_UNION = 32
RUN_VALID_REGS = 288
RUN_DIRTY_REGS = 296
RUN_SYNC_REGS = 304

# Indices of struct kvm_regs fields, in u64 units.
REG_NAMES = (
    "rax",
    "rbx",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "rsp",
    "rbp",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "rip",
    "rflags",
)

# Model-specific registers.
MSR_IA32_TSC = 0x10
MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SFMASK = 0xC0000084
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102

MAP_NORESERVE = 0x4000
_MAP_PRIVATE_ANONYMOUS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
MADV_DONTNEED = 4
MADV_HUGEPAGE = 14


class KvmError(Exception):
    """A failure of the KVM layer: no /dev/kvm, a refused ioctl, a broken guest."""


class KvmUnavailableError(KvmError):
    """/dev/kvm is missing or cannot be opened."""


class kvm_regs(ctypes.Structure):  # noqa: N801 - the kernel's name
    _fields_ = [(name, ctypes.c_uint64) for name in REG_NAMES]


class kvm_segment(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint32),
        ("selector", ctypes.c_uint16),
        ("type", ctypes.c_uint8),
        ("present", ctypes.c_uint8),
        ("dpl", ctypes.c_uint8),
        ("db", ctypes.c_uint8),
        ("s", ctypes.c_uint8),
        ("l", ctypes.c_uint8),
        ("g", ctypes.c_uint8),
        ("avl", ctypes.c_uint8),
        ("unusable", ctypes.c_uint8),
        ("padding", ctypes.c_uint8),
    ]


class kvm_dtable(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint16),
        ("padding", ctypes.c_uint16 * 3),
    ]


class kvm_sregs(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("cs", kvm_segment),
        ("ds", kvm_segment),
        ("es", kvm_segment),
        ("fs", kvm_segment),
        ("gs", kvm_segment),
        ("ss", kvm_segment),
        ("tr", kvm_segment),
        ("ldt", kvm_segment),
        ("gdt", kvm_dtable),
        ("idt", kvm_dtable),
        ("cr0", ctypes.c_uint64),
        ("cr2", ctypes.c_uint64),
        ("cr3", ctypes.c_uint64),
        ("cr4", ctypes.c_uint64),
        ("cr8", ctypes.c_uint64),
        ("efer", ctypes.c_uint64),
        ("apic_base", ctypes.c_uint64),
        ("interrupt_bitmap", ctypes.c_uint64 * 4),
    ]


class kvm_userspace_memory_region(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("slot", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("guest_phys_addr", ctypes.c_uint64),
        ("memory_size", ctypes.c_uint64),
        ("userspace_addr", ctypes.c_uint64),
    ]


class kvm_cpuid_entry2(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("function", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("eax", ctypes.c_uint32),
        ("ebx", ctypes.c_uint32),
        ("ecx", ctypes.c_uint32),
        ("edx", ctypes.c_uint32),
        ("padding", ctypes.c_uint32 * 3),
    ]


CPUID_CAPACITY = 256


class kvm_cpuid2(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("nent", ctypes.c_uint32),
        ("padding", ctypes.c_uint32),
        ("entries", kvm_cpuid_entry2 * CPUID_CAPACITY),
    ]


class kvm_msr_entry(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("data", ctypes.c_uint64),
    ]


def msrs_struct(count: int) -> type[ctypes.Structure]:
    """A struct kvm_msrs type with room for ``count`` entries."""

    class kvm_msrs(ctypes.Structure):  # noqa: N801
        _fields_ = [
            ("nmsrs", ctypes.c_uint32),
            ("pad", ctypes.c_uint32),
            ("entries", kvm_msr_entry * count),
        ]

    return kvm_msrs


class kvm_fpu(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("fpr", ctypes.c_uint8 * 128),
        ("fcw", ctypes.c_uint16),
        ("fsw", ctypes.c_uint16),
        ("ftwx", ctypes.c_uint8),
        ("pad1", ctypes.c_uint8),
        ("last_opcode", ctypes.c_uint16),
        ("last_ip", ctypes.c_uint64),
        ("last_dp", ctypes.c_uint64),
        ("xmm", ctypes.c_uint8 * 256),
        ("mxcsr", ctypes.c_uint32),
        ("pad2", ctypes.c_uint32),
    ]


assert ctypes.sizeof(kvm_regs) == 144
assert ctypes.sizeof(kvm_sregs) == 312
assert ctypes.sizeof(kvm_cpuid_entry2) == 40
assert ctypes.sizeof(kvm_fpu) == 416


def ioctl(fd: int, request: int, arg: int | ctypes.Structure | None = 0) -> int:
    """Issue one ioctl; a negative result becomes KvmError with the errno."""
    if isinstance(arg, ctypes.Structure):
        arg = ctypes.addressof(arg)
    while True:
        result = _libc.ioctl(fd, request, arg)
        if result >= 0:
            return result
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise KvmError(
                f"ioctl 0x{request:X} failed: {os.strerror(err)}"
            ) from OSError(err, os.strerror(err))


def host_mmap(size: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
    """mmap(2) returning the host address (ctypes, so the address is known)."""
    address = _libc.mmap(None, size, prot, flags, fd, offset)
    if address in (None, ctypes.c_void_p(-1).value):
        err = ctypes.get_errno()
        raise KvmError(f"mmap of {size} bytes failed: {os.strerror(err)}")
    return address


def host_madvise(address: int, size: int, advice: int) -> None:
    """madvise(2) on a host range; failures are logged, not fatal."""
    if _libc.madvise(address, size, advice) != 0:
        err = ctypes.get_errno()
        logger.debug(
            "madvise(%#x, %d, %d): %s", address, size, advice, os.strerror(err)
        )


def host_munmap(address: int, size: int) -> None:
    """munmap(2) of a range host_mmap returned; failures are logged, not fatal."""
    if _libc.munmap(address, size) != 0:
        err = ctypes.get_errno()
        logger.warning("munmap(%#x, %d): %s", address, size, os.strerror(err))


def host_mprotect(address: int, size: int, prot: int) -> None:
    """mprotect(2) on a host range."""
    if _libc.mprotect(address, size, prot) != 0:
        err = ctypes.get_errno()
        raise KvmError(f"mprotect of guest backing failed: {os.strerror(err)}")


# Reading the host CPU's time-stamp counter from Python: a few bytes of machine
# code in an executable page, called through ctypes. The vDSO's clock is
# expressed in guest counter ticks, and the kernel relates them to the host's
# clocks by reading the host's counter next to them; no system call or file
# exposes the counter itself. PYFUNCTYPE keeps the GIL across the call,
# which is cheaper than giving it up and cannot put a thread switch between
# two readings taken as a pair.
#
#   lfence; rdtsc; shl rdx, 32; or rax, rdx; ret     (read_host_tsc)
#   mfence; lfence; rdtsc; ...                        (read_host_tsc_fenced)
#
# The fence before rdtsc keeps the counter from being read before earlier
# loads; the fenced variant also waits until earlier stores are visible to
# the other CPUs, so a reading taken after a store to shared memory is known
# to be later than that store for every reader.
_RDTSC_TAIL = b"\x0f\x31\x48\xc1\xe2\x20\x48\x09\xd0\xc3"
_RDTSC_CODE = b"\x0f\xae\xe8" + _RDTSC_TAIL
_RDTSC_FENCED_CODE = b"\x0f\xae\xf0\x0f\xae\xe8" + _RDTSC_TAIL
_tsc_readers: tuple | None = None


def _make_tsc_readers() -> tuple:
    page = host_mmap(4096, mmap.PROT_READ | mmap.PROT_WRITE, _MAP_PRIVATE_ANONYMOUS)
    ctypes.memmove(page, _RDTSC_CODE, len(_RDTSC_CODE))
    ctypes.memmove(page + 64, _RDTSC_FENCED_CODE, len(_RDTSC_FENCED_CODE))
    host_mprotect(page, 4096, mmap.PROT_READ | mmap.PROT_EXEC)
    prototype = ctypes.PYFUNCTYPE(ctypes.c_uint64)
    return prototype(page), prototype(page + 64)


def read_host_tsc() -> int:
    """The host CPU's time-stamp counter (rdtsc, ordered after earlier loads)."""
    global _tsc_readers
    if _tsc_readers is None:
        _tsc_readers = _make_tsc_readers()
    return _tsc_readers[0]()


def read_host_tsc_fenced() -> int:
    """The time-stamp counter, read once earlier stores are globally visible."""
    global _tsc_readers
    if _tsc_readers is None:
        _tsc_readers = _make_tsc_readers()
    return _tsc_readers[1]()


def open_kvm() -> int:
    """Open /dev/kvm and check the API version; one clear error when it is absent."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KvmUnavailableError(
            f"{KVM_DEVICE} does not exist: this machine offers no KVM "
            "(load the kvm module, or enable nested virtualisation for this VM)"
        ) from None
    except PermissionError:
        raise KvmUnavailableError(
            f"{KVM_DEVICE} is not accessible to this user "
            "(add the user to the 'kvm' group, or run as root)"
        ) from None
    except OSError as exc:
        raise KvmUnavailableError(f"cannot open {KVM_DEVICE}: {exc.strerror}") from None
    version = ioctl(fd, KVM_GET_API_VERSION, 0)
    if version != KVM_API_VERSION:
        os.close(fd)
        raise KvmError(
            f"KVM API version {version} is not the expected {KVM_API_VERSION}"
        )
    return fd
