"""Opening a disk image in whichever container holds it."""

import os

from ._device import BlockDevice, RawDisk
from ._errors import BlockError
from ._qcow2 import QCOW2_MAGIC, Qcow2Disk, is_qcow2

FORMATS = ("raw", "qcow2")

# Containers other virtualisers use, recognised only to name them when they
# are refused (qemu-img converts each of them): where the magic lies, what it
# is, and the name people know the format by. A raw disk has no magic at all,
# so anything unrecognised is taken for one.
FOREIGN_FORMATS = {
    # VMware's sparse extents ("KDMV"; "COWD" for the older ESX ones) and a
    # VMDK descriptor file, which names its extents in text.
    "vmdk": ((0, b"KDMV"), (0, b"COWD"), (0, b"# Disk DescriptorFile")),
    # VirtualBox: the u32 0xbeda107f at 0x40, after a 64-byte banner.
    "vdi": ((0x40, b"\x7f\x10\xda\xbe"),),
    # Hyper-V's VHDX file identifier, and the "conectix" cookie that opens a
    # dynamic VHD (a fixed VHD is a raw disk with a footer, and reads as one).
    "vhdx": ((0, b"vhdxfile"),),
    "vpc": ((0, b"conectix"),),
}
FORMAT_NAMES = {"vmdk": "VMDK", "vdi": "VDI", "vhdx": "VHDX", "vpc": "VHD"}
_HEAD_SIZE = 0x44


def detect_format(path: str | os.PathLike[str]) -> str:
    """The container a file's first bytes announce.

    ``qcow2``, one of ``FOREIGN_FORMATS`` (which ``open_disk`` refuses), or
    ``raw`` for anything else.
    """
    try:
        with open(path, "rb") as file:
            head = file.read(_HEAD_SIZE)
    except OSError as error:
        raise BlockError(f"cannot open {os.fspath(path)}: {error.strerror}") from None
    if is_qcow2(head[: len(QCOW2_MAGIC)]):
        return "qcow2"
    for name, magics in FOREIGN_FORMATS.items():
        if any(head[at : at + len(magic)] == magic for at, magic in magics):
            return name
    return "raw"


def open_disk(
    path: str | os.PathLike[str], *, writable: bool = False, name: str = "vblk0"
) -> BlockDevice:
    """Open a disk image, raw or qcow2 (told apart by the qcow2 magic).

    A file in another virtualiser's container raises ``BlockError`` naming
    it, rather than being read as a raw disk of header bytes.
    """
    found = detect_format(path)
    if found == "qcow2":
        return Qcow2Disk.open(path, writable=writable, name=name)
    if found in FOREIGN_FORMATS:
        raise BlockError(
            f"{os.fspath(path)}: a {FORMAT_NAMES[found]} image; only raw and "
            "qcow2 disks can be read"
        )
    return RawDisk.open(path, writable=writable, name=name)
