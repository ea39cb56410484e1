"""The block layer: raw and qcow2 disks, and their MBR partitions as devices.

Devices are named as in OSv: the first disk is ``vblk0``, and the partition
in its MBR entry index 1 is ``vblk0.1``.
"""

from ._device import SECTOR_SIZE, BlockDevice, MemoryDisk, Partition, RawDisk
from ._errors import BlockError, Qcow2Error
from ._mbr import (
    MBR_ENTRY,
    MBR_ENTRY_SIZE,
    MBR_PARTITION_TABLE,
    MBR_SIGNATURE,
    MBR_SIGNATURE_OFFSET,
    MbrEntry,
    check_partitions,
    disk_devices,
    read_partition_table,
)
from ._node import BlockDeviceNode, block_device_node
from ._open import FOREIGN_FORMATS, FORMAT_NAMES, FORMATS, detect_format, open_disk
from ._qcow2 import QCOW2_MAGIC, Qcow2Disk, Qcow2Header, is_qcow2

__all__ = [
    "FOREIGN_FORMATS",
    "FORMAT_NAMES",
    "FORMATS",
    "MBR_ENTRY",
    "MBR_ENTRY_SIZE",
    "MBR_PARTITION_TABLE",
    "MBR_SIGNATURE",
    "MBR_SIGNATURE_OFFSET",
    "QCOW2_MAGIC",
    "SECTOR_SIZE",
    "BlockDevice",
    "BlockDeviceNode",
    "BlockError",
    "MbrEntry",
    "MemoryDisk",
    "Partition",
    "Qcow2Disk",
    "Qcow2Error",
    "Qcow2Header",
    "RawDisk",
    "block_device_node",
    "check_partitions",
    "detect_format",
    "disk_devices",
    "is_qcow2",
    "open_disk",
    "read_partition_table",
]
