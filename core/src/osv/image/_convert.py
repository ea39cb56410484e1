"""Converting images between containers: raw and qcow2 ourselves, others by qemu-img."""

from __future__ import annotations

import logging
import os

from osv.block import FOREIGN_FORMATS, FORMAT_NAMES, BlockError, detect_format

from ._disk import (
    IMAGE_FORMATS,
    DiskImage,
    _SparseTarget,
    _without_path,
    _write_atomically,
    check_output_path,
    replacing,
)
from ._errors import ImageError

logger = logging.getLogger(__name__)

# Formats only QEMU's tool writes: VMware's and VirtualBox's disks, as OSv's
# scripts/convert makes them. (It also reads those and Hyper-V's VHD and VHDX
# for us; see FOREIGN_FORMATS.)
QEMU_IMG_FORMATS = ("vmdk", "vdi")
CONVERT_FORMATS = (*IMAGE_FORMATS, *QEMU_IMG_FORMATS)

_CHUNK = 1 << 20


def convert_image(
    source: str | os.PathLike[str], target: str | os.PathLike[str], to: str
) -> int:
    """Write the disk of image *source* to *target* in format *to*; return its size.

    raw and qcow2 are written here, sparse (only data that is not zero is
    stored); vmdk and vdi need ``qemu-img``. The source is checked to be an
    image first, and *target* appears only once complete. A source in another
    virtualiser's container (vmdk, vdi, vhdx, vhd) is read by ``qemu-img``,
    and what it holds must then be an image.
    """
    if to not in CONVERT_FORMATS:
        raise ImageError(
            f"cannot convert to {to!r}: choose one of {', '.join(CONVERT_FORMATS)}"
        )
    if os.path.abspath(source) == os.path.abspath(target):
        raise ImageError("the converted image must not replace its source")
    check_output_path(target)
    try:
        container = detect_format(source)
    except BlockError:
        # DiskImage.open, below, says why the file cannot be read.
        container = "raw"
    if container in FOREIGN_FORMATS:
        return _convert_foreign(os.fspath(source), container, os.fspath(target), to)
    with DiskImage.open(source) as image:
        if to in QEMU_IMG_FORMATS:
            _convert_with_qemu_img(image.path, image.format, os.fspath(target), to)
            return image.size

        def fill(output: _SparseTarget) -> None:
            buffer = bytearray(_CHUNK)
            for offset in range(0, image.size, _CHUNK):
                view = memoryview(buffer)[: min(_CHUNK, image.size - offset)]
                try:
                    image.device.readinto(offset, view)
                except BlockError as error:
                    raise ImageError(f"{image.path}: {error}") from None
                output.write(offset, view)

        _write_atomically(target, to, image.size, fill)
        logger.info(
            "converted %s (%s) to %s (%s)", image.path, image.format, target, to
        )
        return image.size


def _convert_foreign(source: str, container: str, target: str, to: str) -> int:
    """Convert a vmdk, vdi, vhdx or vhd *source* with qemu-img; return its size.

    The result is opened as an image before it takes *target*'s place, so a
    foreign disk that holds no OSv image is refused rather than written.
    """

    def check(converted: str) -> int:
        if to not in IMAGE_FORMATS:
            return 0
        try:
            with DiskImage.open(converted) as image:
                return image.size
        except ImageError as error:
            raise ImageError(
                f"{source}: the {FORMAT_NAMES[container]} disk is not an OSv "
                f"image: {_without_path(error, converted)}"
            ) from None

    return _convert_with_qemu_img(source, container, target, to, check)


def _convert_with_qemu_img(
    source: str,
    source_format: str,
    target: str,
    to: str,
    check=None,  # noqa: ANN001 - Callable[[str], int] | None
) -> int:
    """Let qemu-img write *target*; *check* vets the result before it is renamed."""
    # Imported here: `osv run` imports this package, and only a conversion
    # to or from a format of another virtualiser runs another program.
    import shutil
    import subprocess

    program = shutil.which("qemu-img")
    if program is None:
        if to in QEMU_IMG_FORMATS:
            needed = f"converting to {to}"
        else:
            needed = f"reading a {FORMAT_NAMES[source_format]} image"
        raise ImageError(
            f"{needed} needs qemu-img, which is not installed "
            "(on Debian and Ubuntu: apt install qemu-utils)"
        )
    with replacing(target) as temporary:
        command = [program, "convert", "-f", source_format, "-O", to, source, temporary]
        logger.debug("running %s", " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise ImageError(f"qemu-img could not convert {source}: {reason}")
        size = check(temporary) if check is not None else 0
    return size
