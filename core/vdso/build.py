"""Compile the vDSO (vdso.c) into the image the kernel maps into every program.

Used by setup.py at package build time, and by the tests to build it in a
source tree where nobody ran ``python3 setup.py build_ext --inplace``.
"""

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["vdso.c"]
# Everything the image is made from, for telling whether it is out of date.
INPUTS = ["vdso.c", "vvar.h", "vdso.lds", "vdso.map", "build.py"]
# Where the image goes, relative to the directory that holds the osv package.
IMAGE = os.path.join("osv", "vdso", "linux-vdso.so.1")
REQUIRE_VARIABLE = "OSV_REQUIRE_CEXT"

# The code runs in every program on any x86-64 CPU the guest may have, so it
# is built for the baseline instruction set, and it may use nothing a
# loader would have to provide: no library, no stack protector (its canary
# lives in the program's TLS), no relocations.
CFLAGS = [
    "-shared",
    "-nostdlib",
    "-fPIC",
    "-O2",
    "-fno-stack-protector",
    "-ffreestanding",
    "-fno-builtin",
    "-fcf-protection=none",
    "-march=x86-64",
    "-mtune=generic",
    "-Wall",
    "-Wextra",
    "-Werror",
]
LDFLAGS = [
    "-Wl,-soname=linux-vdso.so.1",
    "-Wl,--hash-style=both",
    "-Wl,--no-undefined",
    "-Wl,-z,max-page-size=4096",
    "-Wl,--eh-frame-hdr",
    "-Wl,--build-id=sha1",
]

PT_LOAD = 1
PT_DYNAMIC = 2
PF_W = 2
# Dynamic tags that would need a loader's work (relocations, a PLT, other
# libraries), and those glibc and Go need to find the symbols.
FORBIDDEN_TAGS = {
    1: "DT_NEEDED",
    7: "DT_RELA",
    17: "DT_REL",
    22: "DT_TEXTREL",
    23: "DT_JMPREL",
}
REQUIRED_TAGS = {
    4: "DT_HASH",
    0x6FFFFEF5: "DT_GNU_HASH",
    5: "DT_STRTAB",
    6: "DT_SYMTAB",
    0x6FFFFFF0: "DT_VERSYM",
    0x6FFFFFFC: "DT_VERDEF",
}


class VdsoBuildError(Exception):
    """The vDSO could not be built, or the result is not a usable image."""


def check_image(data: bytes) -> None:
    """Raise VdsoBuildError unless ``data`` is an image the kernel can map as is."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise VdsoBuildError("not a 64-bit little-endian ELF file")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    (e_phoff,) = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    if e_type != 3 or e_machine != 62:
        raise VdsoBuildError("not an x86-64 shared object")
    loads, dynamic = [], None
    for i in range(e_phnum):
        fields = struct.unpack_from("<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz, _ = fields
        if p_type == PT_LOAD:
            loads.append((p_flags, p_offset, p_vaddr, p_filesz, p_memsz))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_flags, p_offset, p_filesz)
    if len(loads) != 1:
        raise VdsoBuildError(f"{len(loads)} PT_LOAD segments, not one")
    flags, offset, vaddr, filesz, memsz = loads[0]
    if offset or vaddr or filesz != memsz or flags & PF_W:
        raise VdsoBuildError("the PT_LOAD is not a read-only image of the file at 0")
    if dynamic is None or dynamic[0] & PF_W:
        raise VdsoBuildError("no read-only PT_DYNAMIC")
    tags = set()
    for at in range(dynamic[1], dynamic[1] + dynamic[2], 16):
        tag = struct.unpack_from("<q", data, at)[0]
        if tag == 0:
            break
        tags.add(tag)
    forbidden = sorted(FORBIDDEN_TAGS[t] for t in tags & FORBIDDEN_TAGS.keys())
    if forbidden:
        raise VdsoBuildError(f"the image needs a loader: {', '.join(forbidden)}")
    missing = sorted(name for t, name in REQUIRED_TAGS.items() if t not in tags)
    if missing:
        raise VdsoBuildError(f"the dynamic section lacks {', '.join(missing)}")


def compile_image(output: str, compiler: str | None = None) -> None:
    """Compile and link the image into ``output``; VdsoBuildError on failure."""
    compiler = compiler or os.environ.get("CC") or "gcc"
    if shutil.which(compiler.split()[0]) is None:
        raise VdsoBuildError(f"no C compiler ({compiler}) found")
    with tempfile.TemporaryDirectory() as scratch:
        linked = os.path.join(scratch, "linux-vdso.so.1")
        command = [
            *compiler.split(),
            *CFLAGS,
            *LDFLAGS,
            f"-Wl,--version-script={os.path.join(HERE, 'vdso.map')}",
            f"-Wl,-T,{os.path.join(HERE, 'vdso.lds')}",
            "-o",
            linked,
            *(os.path.join(HERE, source) for source in SOURCES),
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise VdsoBuildError(
                f"{compiler} failed: {detail[-1] if detail else exc}"
            ) from None
        except OSError as exc:
            raise VdsoBuildError(f"cannot run {compiler}: {exc}") from None
        with open(linked, "rb") as image:
            check_image(image.read())
        os.makedirs(os.path.dirname(output), exist_ok=True)
        shutil.copyfile(linked, output)


def is_stale(package_root: str) -> bool:
    """Whether the image below ``package_root`` is missing or older than a source."""
    output = os.path.join(package_root, IMAGE)
    if not os.path.exists(output):
        return True
    built = os.path.getmtime(output)
    return any(os.path.getmtime(os.path.join(HERE, name)) > built for name in INPUTS)


def build(
    package_root: str,
    *,
    require: bool | None = None,
    log: Callable[[str], object] = print,
) -> bool:
    """Build the image below ``package_root`` (``src``, or setuptools' build_lib).

    Returns False, with a log line and no image left behind, when it cannot be
    built: programs then make real system calls for the time. With
    ``require`` (by default OSV_REQUIRE_CEXT=1, as for the Cython build) a
    failure raises VdsoBuildError instead.
    """
    if require is None:
        require = os.environ.get(REQUIRE_VARIABLE, "").strip().lower() in {
            "1",
            "true",
            "yes",
        }
    output = os.path.join(package_root, IMAGE)
    try:
        compile_image(output)
    except VdsoBuildError as exc:
        if os.path.exists(output):
            os.remove(output)
        if require:
            raise VdsoBuildError(
                f"osv-core: building the vDSO failed and {REQUIRE_VARIABLE}=1 "
                f"requires it: {exc}"
            ) from None
        log(
            f"osv-core: building the vDSO failed ({exc}); programs will make "
            "system calls for the time"
        )
        return False
    return True
