"""Loading ELF executables into an address space, as execve(2) does."""

from __future__ import annotations

import bisect
import io
import logging
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError as _PyElfError
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile

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


@dataclass
class Segment:
    p_offset: int
    p_vaddr: int
    p_filesz: int
    p_memsz: int
    p_flags: int


@dataclass
class ElfProgram:
    """What the loader needs from an ELF file, read once with pyelftools."""

    path: str
    data: bytes
    e_type: str
    e_entry: int
    e_phoff: int
    e_phnum: int
    e_phentsize: int
    segments: list[Segment]
    interpreter: str | None
    phdr_vaddr: int | None
    _symbols: list[tuple[int, int, str]] | None = field(default=None, repr=False)

    @property
    def symbols(self) -> list[tuple[int, int, str]]:
        """(st_value, st_size, name) of every function, sorted; read on first use.

        Reading a symbol table with pyelftools takes about 50 µs a symbol,
        far too long for every start-up, and only a fault report needs it.
        """
        if self._symbols is None:
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


@dataclass
class LoadedProgram:
    """Where a program landed: what the auxiliary vector and brk need."""

    program: ElfProgram
    base: int
    entry: int
    phdr: int
    end: int

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


def parse_elf(path: str, data: bytes) -> ElfProgram:
    """Read the headers of an x86-64 ELF executable."""
    try:
        elf = ELFFile(io.BytesIO(data))
        header = elf.header
        if header["e_machine"] != "EM_X86_64" or elf.elfclass != 64:
            raise ElfError(f"{path}: not an x86-64 ELF file")
        if header["e_type"] not in ("ET_EXEC", "ET_DYN"):
            raise ElfError(f"{path}: not an executable ({header['e_type']})")
        segments = []
        interpreter = None
        phdr_vaddr = None
        for segment in elf.iter_segments():
            kind = segment["p_type"]
            if kind == "PT_LOAD":
                segments.append(
                    Segment(
                        segment["p_offset"],
                        segment["p_vaddr"],
                        segment["p_filesz"],
                        segment["p_memsz"],
                        segment["p_flags"],
                    )
                )
            elif kind == "PT_INTERP":
                interpreter = segment.get_interp_name()
            elif kind == "PT_PHDR":
                phdr_vaddr = segment["p_vaddr"]
        if not segments:
            raise ElfError(f"{path}: no loadable segments")
        return ElfProgram(
            path=path,
            data=data,
            e_type=header["e_type"],
            e_entry=header["e_entry"],
            e_phoff=header["e_phoff"],
            e_phnum=header["e_phnum"],
            e_phentsize=header["e_phentsize"],
            segments=segments,
            interpreter=interpreter,
            phdr_vaddr=phdr_vaddr,
        )
    except (_PyElfError, ValueError, KeyError, IndexError) as exc:
        raise ElfError(f"{path}: not a valid ELF file ({exc})") from None


def _prot(p_flags: int) -> int:
    prot = 0
    if p_flags & P_FLAGS.PF_R:
        prot |= PROT_READ
    if p_flags & P_FLAGS.PF_W:
        prot |= PROT_WRITE
    if p_flags & P_FLAGS.PF_X:
        prot |= PROT_EXEC
    return prot


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
    aspace: AddressSpace, program: ElfProgram, base: int | None = None
) -> LoadedProgram:
    """Map the PT_LOAD segments of ``program``; ET_DYN objects go at ``base``."""
    # Rationale: Linux maps each segment's pages from the file, so a page
    # shared by two segments (the end of text and the start of data, say)
    # shows both segments' bytes, since the file lays them out the same way
    # as memory. Here the whole span is one run of frames; each segment's
    # bytes are copied to their place, and every page gets the union of the
    # permissions of the segments touching it, which is what the page would
    # have after Linux's mmap calls (the later segment's mapping wins, but a
    # linker never gives a shared page conflicting needs in practice).
    if program.is_dynamic_object:
        base = PIE_BASE if base is None else base
    else:
        base = 0
    first_page = min(s.p_vaddr for s in program.segments) & ~(PAGE_SIZE - 1)
    end = max(s.p_vaddr + s.p_memsz for s in program.segments)
    span_start = base + first_page
    span_end = page_align_up(base + end)
    _check_layout(program, span_start, span_end, aspace)

    page_prot: dict[int, int] = {}
    for segment in program.segments:
        lo = (base + segment.p_vaddr) & ~(PAGE_SIZE - 1)
        hi = page_align_up(base + segment.p_vaddr + segment.p_memsz)
        for page in range(lo, hi, PAGE_SIZE):
            page_prot[page] = page_prot.get(page, 0) | _prot(segment.p_flags)

    # One area per run of pages with equal protection, so /proc/self/maps and
    # mprotect see what Linux would show.
    runs: list[tuple[int, int, int]] = []
    for page in range(span_start, span_end, PAGE_SIZE):
        prot = page_prot.get(page, 0)
        if runs and runs[-1][2] == prot and runs[-1][1] == page:
            runs[-1] = (runs[-1][0], page + PAGE_SIZE, prot)
        else:
            runs.append((page, page + PAGE_SIZE, prot))
    for start, stop, prot in runs:
        aspace.map_area(
            start,
            stop - start,
            prot,
            MAP_PRIVATE,
            name=program.path,
            offset=start - span_start,
            lazy=False,
        )
    data = program.data
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
