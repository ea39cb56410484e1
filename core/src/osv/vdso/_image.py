"""Finding and checking the vDSO image that the package build compiled."""

from __future__ import annotations

import logging
import os
import struct

logger = logging.getLogger(__name__)

IMAGE_NAME = "linux-vdso.so.1"
DISABLE_VARIABLE = "OSV_DISABLE_VDSO"
# The image is a few kilobytes of code; anything much larger is not ours.
MAX_IMAGE_SIZE = 64 << 10

# os.path, not pathlib: every boot imports this module.
_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))

ELF64_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
ELF64_PHDR = struct.Struct("<IIQQQQQQ")
ET_DYN = 3
EM_X86_64 = 62
PT_LOAD = 1
PT_DYNAMIC = 2
PF_W = 2


class VdsoError(Exception):
    """The vDSO cannot be offered: no image was built, or it is not usable."""


def disabled_by_environment() -> bool:
    """Whether OSV_DISABLE_VDSO=1 asks for programs without a vDSO."""
    value = os.environ.get(DISABLE_VARIABLE, "").strip().lower()
    return value in {"1", "true", "yes"}


def image_path() -> str:
    """Where the package keeps the compiled image (it may not exist)."""
    return os.path.join(_PACKAGE_DIR, IMAGE_NAME)


def load_image(path: str | None = None) -> bytes:
    """The image's bytes, checked to be mappable as they are; VdsoError if not.

    The kernel maps the file itself into programs, so it must be what
    vdso/vdso.lds makes: an x86-64 shared object whose only PT_LOAD covers
    the file from offset 0 at address 0, with a read-only PT_DYNAMIC.
    """
    path = path or image_path()
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_IMAGE_SIZE + 1)
    except FileNotFoundError:
        raise VdsoError(
            f"{path} was not built (run `python3 setup.py build_ext --inplace` "
            "in core/, or install a wheel)"
        ) from None
    except OSError as exc:
        raise VdsoError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_IMAGE_SIZE:
        raise VdsoError(f"{path} is larger than {MAX_IMAGE_SIZE} bytes")
    if len(data) < ELF64_EHDR.size or data[:4] != b"\x7fELF":
        raise VdsoError(f"{path} is not an ELF file")
    header = ELF64_EHDR.unpack_from(data)
    ident, e_type, e_machine, e_phoff, e_phentsize, e_phnum = (
        header[0],
        header[1],
        header[2],
        header[5],
        header[9],
        header[10],
    )
    if ident[4] != 2 or ident[5] != 1 or e_type != ET_DYN or e_machine != EM_X86_64:
        raise VdsoError(f"{path} is not a 64-bit x86-64 shared object")
    if e_phentsize != ELF64_PHDR.size or e_phoff + e_phnum * e_phentsize > len(data):
        raise VdsoError(f"{path} has a malformed program header table")
    loads, dynamic_flags = [], None
    for i in range(e_phnum):
        p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz, _ = (
            ELF64_PHDR.unpack_from(data, e_phoff + i * e_phentsize)
        )
        if p_type == PT_LOAD:
            loads.append((p_offset, p_vaddr, p_filesz, p_memsz, p_flags))
        elif p_type == PT_DYNAMIC:
            dynamic_flags = p_flags
    if (
        len(loads) != 1
        or loads[0][:2] != (0, 0)
        or loads[0][2] != loads[0][3]
        or loads[0][2] > len(data)
        or loads[0][4] & PF_W
    ):
        raise VdsoError(f"{path} is not one read-only segment at address 0")
    if dynamic_flags is None or dynamic_flags & PF_W:
        raise VdsoError(f"{path} has no read-only PT_DYNAMIC")
    logger.debug("vDSO image %s: %d bytes", path, len(data))
    return data
