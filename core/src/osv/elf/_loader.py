"""Loading ELF executables into an address space, as execve(2) does."""

from __future__ import annotations

import bisect
import io
import logging
import struct
from typing import NamedTuple

from osv._record import Record
from osv.mm import (
    MAP_PRIVATE,
    MMAP_MIN,
    PAGE_SIZE,
    PIE_BASE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    USER_END,
    AddressSpace,
    page_align_up,
)

logger = logging.getLogger(__name__)


class ElfError(Exception):
    """The file is not an ELF program this kernel can load."""


# The ELF header and program headers, read with struct rather than pyelftools.
#
# Starting a program needs only these two tables, whose layout the System V
# ABI fixes for ELFCLASS64, little-endian files. Importing pyelftools's ELF
# reader costs more than the rest of the boot (it brings the DWARF readers
# and the debugger with it), so pyelftools is imported only where more of
# the file is read: the symbol table for a fault report, the dynamic section
# when an image is built. As Linux's execve does, a file whose e_phentsize is
# not the 64-bit program header's size, or that says it has more program
# headers than fit in 64 KiB, is refused rather than read some other way.
ELF_MAGIC = b"\x7fELF"
# Indexes into e_ident, and the values an x86-64 program has there.
EI_CLASS = 4
EI_DATA = 5
ELFCLASS64 = 2
ELFDATA2LSB = 1
EM_X86_64 = 62
ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
PT_LOAD = 1
PT_INTERP = 3
PT_PHDR = 6
PF_X = 1
PF_W = 2
PF_R = 4
# Elf64_Ehdr: e_ident[16], e_type, e_machine, e_version, e_entry, e_phoff,
# e_shoff, e_flags, e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum,
# e_shstrndx.
ELF64_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
# Elf64_Phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz,
# p_align.
ELF64_PHDR = struct.Struct("<IIQQQQQQ")
# The largest program header table Linux's execve accepts, in bytes.
PHDR_TABLE_MAX = 65536


# A named tuple rather than a dataclass: a program header is never changed,
# and making a dataclass runs generated code at import, on every boot.
class Segment(NamedTuple):
    """One PT_LOAD program header: where its bytes are in the file and memory."""

    p_offset: int
    p_vaddr: int
    p_filesz: int
    p_memsz: int
    p_flags: int


class ElfProgram(Record):
    """What the loader needs from an ELF file: its ELF and program headers."""

    __slots__ = (
        "path",
        "data",
        "e_type",
        "e_entry",
        "e_phoff",
        "e_phnum",
        "e_phentsize",
        "segments",
        "interpreter",
        "phdr_vaddr",
        "_symbols",
    )

    def __init__(
        self,
        path: str,
        data: bytes | memoryview,
        e_type: str,
        e_entry: int,
        e_phoff: int,
        e_phnum: int,
        e_phentsize: int,
        segments: list[Segment],
        interpreter: str | None,
        phdr_vaddr: int | None,
        _symbols: list[tuple[int, int, str]] | None = None,
    ) -> None:
        self.path = path
        self.data = data
        self.e_type = e_type
        self.e_entry = e_entry
        self.e_phoff = e_phoff
        self.e_phnum = e_phnum
        self.e_phentsize = e_phentsize
        self.segments = segments
        self.interpreter = interpreter
        self.phdr_vaddr = phdr_vaddr
        self._symbols = _symbols

    def __repr__(self) -> str:
        # The whole file's bytes and the symbol table would bury the headers.
        return (
            f"ElfProgram(path={self.path!r}, e_type={self.e_type!r}, "
            f"e_entry={self.e_entry:#x}, segments={self.segments!r}, "
            f"interpreter={self.interpreter!r})"
        )

    @property
    def symbols(self) -> list[tuple[int, int, str]]:
        """(st_value, st_size, name) of every function, sorted; read on first use.

        Reading a symbol table with pyelftools takes about 50 µs a symbol,
        far too long for every start-up, and only a fault report needs it.
        """
        if self._symbols is None:
            # Imported here: pyelftools is heavy, and a run that does not fault
            # never reads a symbol (see the comment above ELF64_EHDR).
            from elftools.common.exceptions import ELFError as _PyElfError
            from elftools.elf.elffile import ELFFile

            symbols = []
            try:
                elf = ELFFile(io.BytesIO(self.data))
                symtab = elf.get_section_by_name(".symtab") or elf.get_section_by_name(
                    ".dynsym"
                )
                for symbol in symtab.iter_symbols() if symtab is not None else ():
                    if symbol["st_info"]["type"] == "STT_FUNC" and symbol["st_value"]:
                        symbols.append(
                            (symbol["st_value"], symbol["st_size"], symbol.name)
                        )
            except (_PyElfError, ValueError, KeyError, IndexError):
                logger.debug("%s: unreadable symbol table", self.path)
            self._symbols = sorted(symbols)
        return self._symbols

    @property
    def is_dynamic_object(self) -> bool:
        return self.e_type == "ET_DYN"

    @property
    def first_vaddr(self) -> int:
        """The page-aligned lowest address of the PT_LOAD segments."""
        return min(s.p_vaddr for s in self.segments) & ~(PAGE_SIZE - 1)

    @property
    def load_span(self) -> int:
        """Bytes of address space the PT_LOAD segments cover, in whole pages."""
        end = max(s.p_vaddr + s.p_memsz for s in self.segments)
        return page_align_up(end) - self.first_vaddr


class LoadedProgram(Record):
    """Where a program landed: what the auxiliary vector and brk need."""

    __slots__ = ("program", "base", "entry", "phdr", "end")

    def __init__(
        self, program: ElfProgram, base: int, entry: int, phdr: int, end: int
    ) -> None:
        self.program = program
        self.base = base
        self.entry = entry
        self.phdr = phdr
        self.end = end

    def symbolize(self, address: int) -> str | None:
        """``name+0xoff`` for an address inside a known function, else None."""
        relative = address - self.base
        symbols = self.program.symbols
        i = bisect.bisect_right(symbols, (relative, float("inf"), "")) - 1
        if i >= 0:
            start, size, name = symbols[i]
            if start <= relative < start + max(size, 1):
                return f"{name}+{relative - start:#x}"
        return None


def parse_elf(path: str, data: bytes | memoryview) -> ElfProgram:
    """Read the headers of an x86-64 ELF executable (the whole file in ``data``)."""
    if len(data) < ELF64_EHDR.size or bytes(data[: len(ELF_MAGIC)]) != ELF_MAGIC:
        raise ElfError(f"{path}: not a valid ELF file (no ELF header)")
    (
        e_ident,
        e_type,
        e_machine,
        _e_version,
        e_entry,
        e_phoff,
        _e_shoff,
        _e_flags,
        _e_ehsize,
        e_phentsize,
        e_phnum,
        *_,
    ) = ELF64_EHDR.unpack_from(data)
    if (
        e_ident[EI_CLASS] != ELFCLASS64
        or e_ident[EI_DATA] != ELFDATA2LSB
        or e_machine != EM_X86_64
    ):
        raise ElfError(f"{path}: not an x86-64 ELF file")
    type_name = ET_NAMES.get(e_type, f"e_type {e_type:#x}")
    if type_name not in ("ET_EXEC", "ET_DYN"):
        raise ElfError(f"{path}: not an executable ({type_name})")
    if e_phentsize != ELF64_PHDR.size or e_phnum * e_phentsize > PHDR_TABLE_MAX:
        raise ElfError(
            f"{path}: not a valid ELF file (program header table of {e_phnum} "
            f"entries of {e_phentsize} bytes)"
        )
    if e_phoff + e_phnum * e_phentsize > len(data):
        raise ElfError(
            f"{path}: not a valid ELF file (program headers run past the end)"
        )

    segments = []
    interpreter = None
    phdr_vaddr = None
    for index in range(e_phnum):
        p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz, _ = (
            ELF64_PHDR.unpack_from(data, e_phoff + index * e_phentsize)
        )
        if p_type == PT_LOAD:
            segments.append(Segment(p_offset, p_vaddr, p_filesz, p_memsz, p_flags))
        elif p_type == PT_INTERP:
            interpreter = _interpreter_name(path, data, p_offset, p_filesz)
        elif p_type == PT_PHDR:
            phdr_vaddr = p_vaddr
    if not segments:
        raise ElfError(f"{path}: no loadable segments")
    return ElfProgram(
        path=path,
        data=data,
        e_type=type_name,
        e_entry=e_entry,
        e_phoff=e_phoff,
        e_phnum=e_phnum,
        e_phentsize=e_phentsize,
        segments=segments,
        interpreter=interpreter,
        phdr_vaddr=phdr_vaddr,
    )


def _interpreter_name(
    path: str, data: bytes | memoryview, p_offset: int, p_filesz: int
) -> str:
    """The PT_INTERP path: NUL-terminated UTF-8 within the segment's file bytes."""
    name, nul, _ = bytes(data[p_offset : p_offset + p_filesz]).partition(b"\0")
    if not nul:
        raise ElfError(f"{path}: not a valid ELF file (PT_INTERP is not terminated)")
    try:
        return name.decode()
    except UnicodeDecodeError as exc:
        raise ElfError(f"{path}: not a valid ELF file ({exc})") from None


def _prot(p_flags: int) -> int:
    prot = 0
    if p_flags & PF_R:
        prot |= PROT_READ
    if p_flags & PF_W:
        prot |= PROT_WRITE
    if p_flags & PF_X:
        prot |= PROT_EXEC
    return prot


def _runs(
    program: ElfProgram, base: int, span_start: int, span_end: int
) -> list[list[int]]:
    """Cut the program's span into areas of one protection: [start, stop, prot].

    Between two consecutive page boundaries of segments, the same segments
    touch every page, so the pages share the union of their permissions
    (none for a gap). Neighbours with equal protection are merged, so that
    /proc/self/maps and mprotect see what Linux would show.
    """
    bounds = []
    cuts = {span_start, span_end}
    for segment in program.segments:
        lo = (base + segment.p_vaddr) & ~(PAGE_SIZE - 1)
        hi = page_align_up(base + segment.p_vaddr + segment.p_memsz)
        bounds.append((lo, hi, _prot(segment.p_flags)))
        cuts.update((lo, hi))
    points = sorted(cuts)
    runs: list[list[int]] = []
    for lo, hi in zip(points, points[1:], strict=False):
        prot = 0
        for start, stop, flags in bounds:
            if start <= lo and hi <= stop:
                prot |= flags
        if runs and runs[-1][2] == prot:
            runs[-1][1] = hi
        else:
            runs.append([lo, hi, prot])
    return runs


def _file_offset(page: int, base: int, program: ElfProgram) -> int:
    """The place in the file that a loaded page shows (0 outside segments)."""
    for segment in program.segments:
        start = base + segment.p_vaddr
        if start & ~(PAGE_SIZE - 1) <= page < start + segment.p_memsz:
            return page - start + segment.p_offset
    return 0


def _check_layout(
    program: ElfProgram, span_start: int, span_end: int, aspace: AddressSpace
) -> None:
    """Refuse segments that no valid program has, before any memory is touched.

    Linux would fail the exec (or the program would fault at once); checking
    first keeps a corrupt header from making the kernel walk or allocate an
    absurd range.
    """
    for segment in program.segments:
        if segment.p_filesz > segment.p_memsz:
            raise ElfError(
                f"{program.path}: a segment's file size exceeds its memory size"
            )
        if segment.p_offset + segment.p_filesz > len(program.data):
            raise ElfError(
                f"{program.path}: a segment extends past the end of the file"
            )
    if span_end > USER_END or span_start < MMAP_MIN or span_end <= span_start:
        raise ElfError(
            f"{program.path}: segments lie outside user space "
            f"({span_start:#x}-{span_end:#x})"
        )
    if span_end - span_start > aspace.phys.size:
        raise ElfError(
            f"{program.path}: segments span {span_end - span_start} bytes, more than "
            f"the guest's {aspace.phys.size} bytes of memory"
        )


def load_program(
    aspace: AddressSpace,
    program: ElfProgram,
    base: int | None = None,
    file_id: tuple[int, int] = (0, 0),
) -> LoadedProgram:
    """Map the PT_LOAD segments of ``program``; ET_DYN objects go at ``base``.

    ``file_id`` is the program file's (device, inode), which its areas show
    in /proc/self/maps.
    """
    # Rationale: Linux maps each segment's pages from the file, so a page
    # shared by two segments (the end of text and the start of data, say)
    # shows both segments' bytes, since the file lays them out the same way
    # as memory. Here each run of pages of one protection gets frames of its
    # own; each segment's bytes are copied to their place, and every page
    # gets the union of the permissions of the segments touching it, which
    # is what the page would have after Linux's mmap calls (the later
    # segment's mapping wins, but a linker never gives a shared page
    # conflicting needs in practice).
    if program.is_dynamic_object:
        base = PIE_BASE if base is None else base
    else:
        base = 0
    first_page = min(s.p_vaddr for s in program.segments) & ~(PAGE_SIZE - 1)
    end = max(s.p_vaddr + s.p_memsz for s in program.segments)
    span_start = base + first_page
    span_end = page_align_up(base + end)
    _check_layout(program, span_start, span_end, aspace)

    for start, stop, prot in _runs(program, base, span_start, span_end):
        aspace.map_area(
            start,
            stop - start,
            prot,
            MAP_PRIVATE,
            name=program.path,
            offset=_file_offset(start, base, program),
            device=file_id[0],
            inode=file_id[1],
            lazy=False,
        )
    # A memoryview, so that cutting out a segment does not copy it.
    data = memoryview(program.data)
    for segment in program.segments:
        if segment.p_filesz:
            if segment.p_offset + segment.p_filesz > len(data):
                raise ElfError(f"{program.path}: segment extends past the end of file")
            aspace.write_kernel(
                base + segment.p_vaddr,
                data[segment.p_offset : segment.p_offset + segment.p_filesz],
            )

    if program.phdr_vaddr is not None:
        phdr = base + program.phdr_vaddr
    else:
        # Static executables have no PT_PHDR: find the segment whose file
        # range holds the program headers.
        phdr = 0
        for segment in program.segments:
            if (
                segment.p_offset
                <= program.e_phoff
                < segment.p_offset + segment.p_filesz
            ):
                phdr = base + segment.p_vaddr + (program.e_phoff - segment.p_offset)
                break
    return LoadedProgram(
        program=program,
        base=base,
        entry=base + program.e_entry,
        phdr=phdr,
        end=base + end,
    )
