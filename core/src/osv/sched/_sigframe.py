"""The x86-64 Linux signal frame (struct rt_sigframe) a handler is entered with."""

from __future__ import annotations

import struct

from osv._record import Record
from osv.sched._sigqueue import SIGINFO_SIZE

# Rationale: a handler receives the interrupted state in exactly the layout
# Linux uses, because programs read it (glibc's ucontext_t overlays it, Go and
# CPython's faulthandler read uc_mcontext, siglongjmp does not care) and
# because the handler returns through the program's own restorer, which calls
# rt_sigreturn with the stack pointer just above the return address. From the
# stack pointer down, as arch/x86/kernel/signal.c lays it out:
#
#   sp - 128            the red zone below the interrupted sp is skipped
#   FXSAVE area         512 bytes, 64-byte aligned: x87 and SSE state
#   struct rt_sigframe  16-byte aligned minus 8, as if a `call` had pushed
#                       the return address:
#     +0    pretcode    the handler's return address: sa_restorer
#     +8    ucontext    uc_flags, uc_link, uc_stack (stack_t), uc_mcontext
#                       (struct sigcontext), uc_sigmask (the kernel's 8 bytes)
#     +312  siginfo_t   128 bytes
#
# Only the legacy FXSAVE image is saved: it holds x87 and SSE state, all a
# machine without XSAVE has. uc_flags therefore says UC_SIGCONTEXT_SS |
# UC_STRICT_RESTORE_SS without UC_FP_XSTATE, as Linux does on such a CPU.

REDZONE = 128
FXSAVE_SIZE = 512
# struct sigcontext: the registers in this order, then cs gs fs ss (u16 each),
# err, trapno, oldmask, cr2, the fpstate pointer and 8 reserved words.
SIGCONTEXT_REGS = (
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "rdi",
    "rsi",
    "rbp",
    "rbx",
    "rdx",
    "rax",
    "rcx",
    "rsp",
    "rip",
    "rflags",
)
_SIGCONTEXT = struct.Struct("<18Q4H4QQ64x")
# struct ucontext: uc_flags, uc_link, stack_t {ss_sp, ss_flags (an int, kept
# unsigned here for SS_AUTODISARM's bit 31), ss_size}, then uc_mcontext and
# uc_sigmask.
_UCONTEXT_HEAD = struct.Struct("<QQQI4xQ")
UC_MCONTEXT = _UCONTEXT_HEAD.size
UC_SIGMASK = UC_MCONTEXT + _SIGCONTEXT.size
UCONTEXT_SIZE = UC_SIGMASK + 8
FRAME_INFO = 8 + UCONTEXT_SIZE
FRAME_SIZE = FRAME_INFO + SIGINFO_SIZE

UC_SIGCONTEXT_SS = 0x2
UC_STRICT_RESTORE_SS = 0x4

assert UC_MCONTEXT == 40 and UC_SIGMASK == 296 and FRAME_SIZE == 440


class Fault(Record):
    """What sigcontext reports about the last CPU exception of the thread."""

    __slots__ = ("trapno", "err", "cr2")

    def __init__(self, trapno: int = 0, err: int = 0, cr2: int = 0) -> None:
        self.trapno = trapno
        self.err = err
        self.cr2 = cr2


class SavedContext(Record):
    """What rt_sigreturn finds in a frame's ucontext."""

    __slots__ = ("registers", "mask", "fpstate", "stack")

    def __init__(
        self,
        registers: dict[str, int],
        mask: int,
        fpstate: int,
        stack: tuple[int, int, int],  # uc_stack: ss_sp, ss_flags, ss_size
    ) -> None:
        self.registers = registers
        self.mask = mask
        self.fpstate = fpstate
        self.stack = stack


def place(sp: int) -> tuple[int, int]:
    """Where the FXSAVE area and the frame go, below a stack top ``sp``.

    ``sp`` is already past the red zone (or the top of the alternate stack).
    """
    fpstate = (sp - FXSAVE_SIZE) & ~63
    frame = ((fpstate - FRAME_SIZE) & ~15) - 8
    return fpstate, frame


def encode(
    registers: dict[str, int],
    *,
    restorer: int,
    info: bytes,
    mask: int,
    stack: tuple[int, int, int],
    fault: Fault,
    fpstate: int,
    user_cs: int,
    user_ss: int,
) -> bytes:
    """The bytes of a struct rt_sigframe (without the FXSAVE area)."""
    head = _UCONTEXT_HEAD.pack(
        UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS, 0, stack[0], stack[1], stack[2]
    )
    mcontext = _SIGCONTEXT.pack(
        *(registers[name] & 0xFFFFFFFFFFFFFFFF for name in SIGCONTEXT_REGS),
        user_cs,
        0,  # gs
        0,  # fs
        user_ss,
        fault.err,
        fault.trapno,
        mask,
        fault.cr2,
        fpstate,
    )
    frame = struct.pack("<Q", restorer) + head + mcontext + struct.pack("<Q", mask)
    return frame + info


def decode(ucontext: bytes) -> SavedContext:
    """Read back a ucontext that rt_sigreturn is given."""
    _flags, _link, ss_sp, ss_flags, ss_size = _UCONTEXT_HEAD.unpack_from(ucontext)
    fields = _SIGCONTEXT.unpack_from(ucontext, UC_MCONTEXT)
    registers = dict(zip(SIGCONTEXT_REGS, fields[:18], strict=True))
    (mask,) = struct.unpack_from("<Q", ucontext, UC_SIGMASK)
    return SavedContext(registers, mask, fields[-1], (ss_sp, ss_flags, ss_size))
