"""Block devices as nodes under /dev (``/dev/vblk0``, ``/dev/vblk0.1``)."""

from __future__ import annotations

import errno
import stat
from collections.abc import Callable

from osv.vfs import DeviceVnode, FsError, Mount, Vnode, makedev

from ._device import BlockDevice
from ._errors import BlockError

# Linux gives virtio-blk a major number from its dynamic range (commonly 253
# or 254); guests only compare it, so one fixed value of that range does.
VIRTIO_BLK_MAJOR = 253


class BlockDeviceNode(DeviceVnode):
    """``/dev/vblk*``: reads and writes at the file offset go to the device.

    Reads stop at the end of the device, as on Linux. A read-only device (the
    image is opened read-only for a boot) refuses writes with EROFS; a failing
    device gives EIO.
    """

    def __init__(self, mount: Mount, ino: int, device: BlockDevice, minor: int) -> None:
        super().__init__(mount, ino, makedev(VIRTIO_BLK_MAJOR, minor), 0o660)
        self.mode = stat.S_IFBLK | 0o660
        self.size = device.size
        self.device = device

    def read(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self.device.size - offset))
        if size == 0:
            return b""
        try:
            return self.device.read(offset, size)
        except BlockError as error:
            raise FsError(errno.EIO, str(error)) from None

    def readinto(self, offset: int, buf: memoryview) -> int:
        size = max(0, min(len(buf), self.device.size - offset))
        if size == 0:
            return 0
        try:
            return self.device.readinto(offset, buf[:size])
        except BlockError as error:
            raise FsError(errno.EIO, str(error)) from None

    def write(self, offset: int, data: bytes | memoryview) -> int:
        if self.device.readonly:
            raise FsError(errno.EROFS, f"{self.device.name} is read-only")
        size = max(0, min(len(data), self.device.size - offset))
        if size == 0:
            raise FsError(errno.ENOSPC, f"write past the end of {self.device.name}")
        try:
            return self.device.write(offset, memoryview(data)[:size])
        except BlockError as error:
            raise FsError(errno.EIO, str(error)) from None

    def fsync(self) -> None:
        try:
            self.device.flush()
        except (BlockError, OSError) as error:
            raise FsError(errno.EIO, str(error)) from None


def block_device_node(device: BlockDevice, minor: int) -> Callable[[Mount, int], Vnode]:
    """A devfs factory (see ``DevFs.add_device``) for the node of ``device``."""

    def factory(mount: Mount, ino: int) -> Vnode:
        return BlockDeviceNode(mount, ino, device, minor)

    return factory
