"""ELF programs: their headers, their libraries, loading, and the initial stack."""

from osv._lazy import lazy_exports as _lazy_exports
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

# Finding a program's libraries serves only image assembly; booting imports
# this package too, so those names are imported on first use (PEP 562).
_EXPORTED_FROM = {
    "ElfDependencies": "osv.elf._deps",
    "MissingLibraryError": "osv.elf._deps",
    "read_ld_so_cache": "osv.elf._deps",
    "resolve_dependencies": "osv.elf._deps",
}


__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTED_FROM, __all__)
