"""Opening a disk image in whichever container holds it."""

import os

from ._device import BlockDevice, RawDisk
from ._errors import BlockError
from ._qcow2 import QCOW2_MAGIC, Qcow2Disk, is_qcow2

FORMATS = ("raw", "qcow2")


def detect_format(path: str | os.PathLike[str]) -> str:
    """``qcow2`` when the file starts with the qcow2 magic, else ``raw``."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(QCOW2_MAGIC))
    except OSError as error:
        raise BlockError(f"cannot open {os.fspath(path)}: {error.strerror}") from None
    return "qcow2" if is_qcow2(head) else "raw"


def open_disk(
    path: str | os.PathLike[str], *, writable: bool = False, name: str = "vblk0"
) -> BlockDevice:
    """Open a disk image, raw or qcow2 (told apart by the qcow2 magic)."""
    if detect_format(path) == "qcow2":
        return Qcow2Disk.open(path, writable=writable, name=name)
    return RawDisk.open(path, writable=writable, name=name)
