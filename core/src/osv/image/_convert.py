"""Converting images between containers: raw and qcow2 ourselves, others by qemu-img."""

from __future__ import annotations

import logging
import os

from osv.block import BlockError

from ._disk import IMAGE_FORMATS, DiskImage, _SparseTarget, _write_atomically
from ._errors import ImageError

logger = logging.getLogger(__name__)

# Formats only QEMU's tool writes: VMware's and VirtualBox's disks, as OSv's
# scripts/convert makes them.
QEMU_IMG_FORMATS = ("vmdk", "vdi")
CONVERT_FORMATS = (*IMAGE_FORMATS, *QEMU_IMG_FORMATS)

_CHUNK = 1 << 20


def convert_image(
    source: str | os.PathLike[str], target: str | os.PathLike[str], to: str
) -> int:
    """Write the disk of image *source* to *target* in format *to*; return its size.

    raw and qcow2 are written here, sparse (only data that is not zero is
    stored); vmdk and vdi need ``qemu-img``. The source is checked to be an
    image first, and *target* appears only once complete.
    """
    if to not in CONVERT_FORMATS:
        raise ImageError(
            f"cannot convert to {to!r}: choose one of {', '.join(CONVERT_FORMATS)}"
        )
    if os.path.abspath(source) == os.path.abspath(target):
        raise ImageError("the converted image must not replace its source")
    with DiskImage.open(source) as image:
        if to in QEMU_IMG_FORMATS:
            _convert_with_qemu_img(image, os.fspath(target), to)
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


def _convert_with_qemu_img(image: DiskImage, target: str, to: str) -> None:
    # Imported here: `osv run` imports this package, and only a conversion
    # to vmdk or vdi runs another program.
    import shutil
    import subprocess
    import tempfile

    program = shutil.which("qemu-img")
    if program is None:
        raise ImageError(
            f"converting to {to} needs qemu-img, which is not installed "
            "(on Debian and Ubuntu: apt install qemu-utils)"
        )
    directory = os.path.dirname(os.path.abspath(target))
    handle, temporary = tempfile.mkstemp(prefix=".osv-image-", dir=directory)
    os.close(handle)
    command = [program, "convert", "-f", image.format, "-O", to, image.path, temporary]
    logger.debug("running %s", " ".join(command))
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise ImageError(f"qemu-img could not convert {image.path}: {reason}")
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
