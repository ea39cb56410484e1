"""The master boot record's partition table, read as OSv's kernel reads it."""

from __future__ import annotations

import logging
import struct
from typing import NamedTuple

from ._device import SECTOR_SIZE, BlockDevice, Partition
from ._errors import BlockError

logger = logging.getLogger(__name__)

# Four 16-byte entries at 0x1BE and the signature 55 AA at 510. An entry is:
# boot flag, start head, start cylinder/sector word, system id, end head,
# end cylinder/sector word, start LBA, sector count.
MBR_PARTITION_TABLE = 0x1BE
MBR_ENTRY_SIZE = 16
MBR_ENTRIES = 4
MBR_SIGNATURE_OFFSET = 510
MBR_SIGNATURE = b"\x55\xaa"
MBR_ENTRY = struct.Struct("<BBHBBHII")


class MbrEntry(NamedTuple):
    """An MBR entry in use: its index (0..3), system id and extent in bytes."""

    index: int
    system_id: int
    start: int
    size: int


def read_partition_table(device: BlockDevice) -> list[MbrEntry]:
    """The entries OSv's kernel would use; none without the 55 AA signature.

    OSv takes an entry when its system id is non-zero and the sector field of
    its start address (the low six bits of the cylinder/sector word) is
    non-zero; it then uses only the LBA fields, and so do we.
    """
    if device.size < SECTOR_SIZE:
        return []
    sector = device.read(0, SECTOR_SIZE)
    if sector[MBR_SIGNATURE_OFFSET:] != MBR_SIGNATURE:
        logger.debug("%s: no MBR signature, no partitions", device.name)
        return []
    entries = []
    for index in range(MBR_ENTRIES):
        fields = MBR_ENTRY.unpack_from(sector, MBR_PARTITION_TABLE + index * 16)
        _, _, start_cs, system_id, _, _, start_lba, sectors = fields
        if system_id != 0 and start_cs & 0x3F:
            entries.append(
                MbrEntry(
                    index, system_id, start_lba * SECTOR_SIZE, sectors * SECTOR_SIZE
                )
            )
    return entries


def disk_devices(disk: BlockDevice) -> dict[str, BlockDevice]:
    """The disk and each of its MBR partitions, by OSv's device names.

    A partition is named after the disk and its entry index: the root file
    system of an image, in entry index 1 of disk ``vblk0``, is ``vblk0.1``.
    A partition reaching past the end of the disk raises ``BlockError``.
    """
    devices: dict[str, BlockDevice] = {disk.name: disk}
    for entry in read_partition_table(disk):
        partition = Partition(disk, entry.index, entry.start, entry.size)
        devices[partition.name] = partition
        logger.debug(
            "%s: %d bytes at %d (system id %#x)",
            partition.name,
            entry.size,
            entry.start,
            entry.system_id,
        )
    return devices


def check_partitions(disk: BlockDevice) -> None:
    """Raise ``BlockError`` unless every partition lies inside the disk."""
    for entry in read_partition_table(disk):
        if entry.start + entry.size > disk.size:
            raise BlockError(
                f"partition {entry.index} ({entry.size} bytes at {entry.start}) "
                f"runs past the end of the disk ({disk.size} bytes)"
            )
