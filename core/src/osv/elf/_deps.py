"""Finding what a dynamically linked program needs, as glibc's ld.so would."""

from __future__ import annotations

import functools
import logging
import os
import struct
from dataclasses import dataclass

from osv.elf._loader import ElfError

logger = logging.getLogger(__name__)

LD_SO_CACHE = "/etc/ld.so.cache"
# glibc's built-in search path on Debian x86-64 (the "trusted directories").
DEFAULT_DIRECTORIES = (
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
)
CACHE_MAGIC_NEW = b"glibc-ld.so.cache1.1"
CACHE_MAGIC_OLD = b"ld.so-1.7.0"
# Entry flags: FLAG_ELF_LIBC6 | FLAG_X8664_LIB64.
CACHE_FLAG_X86_64 = 0x0303


class MissingLibraryError(ElfError):
    """A DT_NEEDED library is found nowhere the loader would look."""


@dataclass(frozen=True)
class ElfDependencies:
    """What to put into an image beside a program so that it can start."""

    program: str
    interpreter: str | None
    libraries: tuple[str, ...]

    @property
    def paths(self) -> list[str]:
        found = [self.program, *self.libraries]
        if self.interpreter:
            found.append(self.interpreter)
        return found


@dataclass
class _ElfInfo:
    interpreter: str | None
    needed: list[str]
    runpath: list[str]
    rpath: list[str]
    elfclass: int
    machine: str


@functools.lru_cache(maxsize=4096)
def _read_elf(path: str) -> _ElfInfo | None:
    """The dynamic-linking facts of an ELF file, or None if it is not ELF.

    Cached: an image's programs and extension modules share most libraries.
    """
    # Imported here, not at the top: pyelftools is heavy and only building an
    # image reads dynamic sections; booting one needs just the headers.
    from elftools.common.exceptions import ELFError as _PyElfError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as stream:
            if stream.read(4) != b"\x7fELF":
                return None
            stream.seek(0)
            elf = ELFFile(stream)
            interpreter = None
            needed: list[str] = []
            runpath: list[str] = []
            rpath: list[str] = []
            for segment in elf.iter_segments():
                if segment["p_type"] == "PT_INTERP":
                    interpreter = segment.get_interp_name()
            for section in elf.iter_sections():
                if not isinstance(section, DynamicSection):
                    continue
                for tag in section.iter_tags():
                    if tag.entry.d_tag == "DT_NEEDED":
                        needed.append(tag.needed)
                    elif tag.entry.d_tag == "DT_RUNPATH":
                        runpath += tag.runpath.split(":")
                    elif tag.entry.d_tag == "DT_RPATH":
                        rpath += tag.rpath.split(":")
            return _ElfInfo(
                interpreter, needed, runpath, rpath, elf.elfclass, elf["e_machine"]
            )
    except (_PyElfError, OSError, ValueError, struct.error) as exc:
        raise ElfError(f"{path}: cannot read ELF file ({exc})") from None


@functools.lru_cache(maxsize=4)
def read_ld_so_cache(path: str = LD_SO_CACHE) -> dict[str, str]:
    """Map library names (sonames) to paths from glibc's ld.so.cache (x86-64 only)."""
    # The "new" format (glibc >= 2.32 writes only this): the magic and version
    # "glibc-ld.so.cache1.1", u32 nlibs, u32 len_strings, u8 flags, 3 pad bytes,
    # u32 extension offset, 3 unused u32; then nlibs entries of 24 bytes: i32
    # flags, u32 key, u32 value, u32 osversion, u64 hwcap. key and value are
    # offsets from the start of the file to NUL-terminated strings. A file that
    # starts with the old format holds the new one after its own table.
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError:
        return {}
    start = 0
    if data.startswith(CACHE_MAGIC_OLD):
        (count,) = struct.unpack_from("<I", data, len(CACHE_MAGIC_OLD) + 1)
        start = (len(CACHE_MAGIC_OLD) + 1 + 4 + count * 12 + 7) & ~7
    if not data.startswith(CACHE_MAGIC_NEW, start):
        logger.debug("%s: unknown ld.so.cache format", path)
        return {}
    (nlibs,) = struct.unpack_from("<I", data, start + 20)
    entries = start + 48
    found: dict[str, str] = {}

    def string(offset: int) -> str:
        end = data.index(b"\0", offset)
        return data[offset:end].decode("utf-8", "surrogateescape")

    for i in range(nlibs):
        flags, key, value, _osversion, hwcap = struct.unpack_from(
            "<iIIIQ", data, entries + 24 * i
        )
        if flags & 0xFFFF != CACHE_FLAG_X86_64:
            continue
        # The first entry for a name wins, as in ld.so (hwcap subdirectories
        # come first and are only for CPUs that have them: skip those).
        if hwcap:
            continue
        found.setdefault(string(key), string(value))
    return found


def _expand(directory: str, origin: str) -> str:
    for token in ("$ORIGIN", "${ORIGIN}"):
        directory = directory.replace(token, origin)
    return directory


def resolve_dependencies(
    program: str, cache: dict[str, str] | None = None
) -> ElfDependencies:
    """The interpreter and the closure of DT_NEEDED libraries of ``program``.

    Libraries are searched as glibc's ld.so searches them for each object that
    needs them: DT_RPATH (only when there is no DT_RUNPATH), then
    DT_RUNPATH, then /etc/ld.so.cache, then the default directories. The
    returned paths are the host paths where they were found.
    """
    info = _read_elf(program)
    if info is None:
        raise ElfError(f"{program}: not an ELF file")
    if cache is None:
        cache = read_ld_so_cache()
    libraries: dict[str, str] = {}
    pending = [(program, info)]
    seen = {os.path.realpath(program)}
    while pending:
        obj_path, obj = pending.pop(0)
        origin = os.path.dirname(os.path.abspath(obj_path))
        directories = [] if obj.runpath else [_expand(d, origin) for d in obj.rpath]
        directories += [_expand(d, origin) for d in obj.runpath]
        for name in obj.needed:
            if name in libraries:
                continue
            found = _find_library(name, directories, cache, obj.elfclass)
            if found is None:
                raise MissingLibraryError(
                    f"{obj_path}: needed library {name} not found "
                    "(searched its RUNPATH/RPATH, /etc/ld.so.cache and "
                    f"{', '.join(DEFAULT_DIRECTORIES)})"
                )
            libraries[name] = found
            real = os.path.realpath(found)
            if real not in seen:
                seen.add(real)
                pending.append((found, _read_elf(found)))
    return ElfDependencies(program, info.interpreter, tuple(libraries.values()))


def _find_library(
    name: str, directories: list[str], cache: dict[str, str], elfclass: int
) -> str | None:
    if "/" in name:
        return name if os.path.exists(name) else None
    candidates = [os.path.join(d, name) for d in directories if d]
    if name in cache:
        candidates.append(cache[name])
    candidates += [os.path.join(d, name) for d in DEFAULT_DIRECTORIES]
    for candidate in candidates:
        if os.path.isfile(candidate):
            info = _read_elf(candidate)
            if info is not None and info.elfclass == elfclass:
                return candidate
    return None
