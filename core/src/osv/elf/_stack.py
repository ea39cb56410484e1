"""The initial process stack: argc, argv, envp and the auxiliary vector."""

from __future__ import annotations

import os
import struct

from osv.mm import PROT_READ, PROT_WRITE, STACK_TOP, AddressSpace

STACK_SIZE = 8 << 20  # RLIMIT_STACK's usual soft limit

# Auxiliary vector keys (linux/auxvec.h, asm/auxvec.h).
AT_NULL = 0
AT_PHDR = 3
AT_PHENT = 4
AT_PHNUM = 5
AT_PAGESZ = 6
AT_BASE = 7
AT_FLAGS = 8
AT_ENTRY = 9
AT_UID = 11
AT_EUID = 12
AT_GID = 13
AT_EGID = 14
AT_PLATFORM = 15
AT_HWCAP = 16
AT_CLKTCK = 17
AT_SECURE = 23
AT_RANDOM = 25
AT_HWCAP2 = 26
AT_EXECFN = 31
AT_SYSINFO_EHDR = 33  # the vDSO's ELF header
AT_MINSIGSTKSZ = 51

# With FXSAVE-only vector state a signal frame needs about this much.
MINSIGSTKSZ = 2048


def build_stack(
    aspace: AddressSpace,
    argv: list[str],
    envp: list[str],
    auxv: list[tuple[int, int]],
    execfn: str,
) -> tuple[int, dict[int, int]]:
    """Map the stack and lay out the start-up block; return (rsp, auxv values).

    ``auxv`` holds the program-specific entries; AT_RANDOM, AT_PLATFORM and
    AT_EXECFN are added here because they point into the block.
    """
    # From the top down, as Linux lays it out: the file name string, the
    # environment and argument strings, the platform string and the 16 random
    # bytes, then (16-byte aligned) argc, argv[], NULL, envp[], NULL, auxv.
    aspace.map_area(
        STACK_TOP - STACK_SIZE,
        STACK_SIZE,
        PROT_READ | PROT_WRITE,
        name="[stack]",
        lazy=False,
    )
    block = bytearray()
    top = STACK_TOP - 8  # Linux leaves the last word of the stack as NULL

    def push(data: bytes) -> int:
        block[0:0] = data
        return top - len(block)

    execfn_at = push(execfn.encode() + b"\0")
    env_at = [push(s.encode() + b"\0") for s in reversed(envp)][::-1]
    arg_at = [push(s.encode() + b"\0") for s in reversed(argv)][::-1]
    platform_at = push(b"x86_64\0")
    pad = (top - len(block)) % 16
    push(b"\0" * pad)
    random_at = push(os.urandom(16))

    entries = [*auxv, (AT_RANDOM, random_at), (AT_PLATFORM, platform_at)]
    entries += [(AT_EXECFN, execfn_at), (AT_NULL, 0)]
    words = [len(argv), *arg_at, 0, *env_at, 0]
    for key, value in entries:
        words += [key, value]
    vector = struct.pack(f"<{len(words)}Q", *words)
    rsp = (top - len(block) - len(vector)) & ~0xF
    aspace.write_kernel(rsp, vector + bytes(top - len(block) - rsp - len(vector)))
    aspace.write_kernel(top - len(block), bytes(block))
    return rsp, dict(entries)
