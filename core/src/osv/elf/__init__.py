"""ELF programs: parsing with pyelftools, loading, and the initial stack."""

from osv.elf._deps import (
    ElfDependencies,
    MissingLibraryError,
    read_ld_so_cache,
    resolve_dependencies,
)
from osv.elf._loader import (
    ElfError,
    ElfProgram,
    LoadedProgram,
    load_program,
    parse_elf,
)
from osv.elf._stack import STACK_SIZE, build_stack

__all__ = [
    "STACK_SIZE",
    "ElfDependencies",
    "MissingLibraryError",
    "read_ld_so_cache",
    "resolve_dependencies",
    "ElfError",
    "ElfProgram",
    "LoadedProgram",
    "build_stack",
    "load_program",
    "parse_elf",
]
