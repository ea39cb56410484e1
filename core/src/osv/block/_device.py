"""Block devices: a disk or partition read and written as bytes at offsets."""

from __future__ import annotations

import logging
import os
from typing import BinaryIO, Self

from ._errors import BlockError

logger = logging.getLogger(__name__)

# The unit disks are addressed in; partitions start and end on it.
SECTOR_SIZE = 512


class BlockDevice:
    """A fixed-size array of bytes: a whole disk or one partition of it.

    ``name`` is the device's name as OSv gives it (``vblk0``, ``vblk0.1``),
    ``size`` its length in bytes, ``format`` the container holding it
    (``raw``, ``qcow2``, ``memory``, ``partition``), ``readonly`` whether
    writes are refused. Every read and write is checked against ``size``: a
    request reaching outside the device raises ``BlockError`` and touches
    nothing. Subclasses implement ``_read`` and ``_write`` for ranges already
    checked.
    """

    format = ""

    def __init__(self, name: str, size: int, readonly: bool) -> None:
        self.name = name
        self.size = size
        self.readonly = readonly

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"<{type(self).__name__} {self.name} {self.size} bytes {mode}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read(self, offset: int, size: int) -> bytes:
        """Return ``size`` bytes from ``offset``; the range must lie inside."""
        self._check_range(offset, size)
        if size == 0:
            return b""
        return self._read(offset, size)

    def readinto(self, offset: int, buffer: memoryview | bytearray) -> int:
        """Fill ``buffer`` from ``offset``; the range must lie inside."""
        view = memoryview(buffer).cast("B")
        self._check_range(offset, len(view))
        if view:
            self._readinto(offset, view)
        return len(view)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` at ``offset``; the range must lie inside the device."""
        if self.readonly:
            raise BlockError(f"{self.name}: the device is read-only")
        view = memoryview(data).cast("B")
        self._check_range(offset, len(view))
        if view:
            self._write(offset, view)
        return len(view)

    def flush(self) -> None:
        """Push written data to stable storage."""

    def close(self) -> None:
        """Release what the device holds; it must not be used afterwards."""

    def _check_range(self, offset: int, size: int) -> None:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise BlockError(
                f"{self.name}: {size} bytes at {offset} lie outside the device "
                f"({self.size} bytes)"
            )

    def _read(self, offset: int, size: int) -> bytes:
        buffer = bytearray(size)
        self._readinto(offset, memoryview(buffer))
        return bytes(buffer)

    def _readinto(self, offset: int, view: memoryview) -> None:
        view[:] = self._read(offset, len(view))

    def _write(self, offset: int, data: memoryview) -> None:
        raise BlockError(f"{self.name}: writing is not supported by this device")


def open_image_file(
    path: str | os.PathLike[str], writable: bool, error: type[BlockError]
) -> tuple[str, BinaryIO]:
    """Open a disk image's file for reading (and writing); ``error`` if it fails."""
    filename = os.fspath(path)
    try:
        return filename, open(filename, "r+b" if writable else "rb")
    except OSError as failure:
        raise error(f"cannot open {filename}: {failure.strerror}") from None


class RawDisk(BlockDevice):
    """A disk stored byte for byte in a host file (a raw image)."""

    format = "raw"

    def __init__(
        self, path: str, file: BinaryIO, size: int, readonly: bool, name: str
    ) -> None:
        super().__init__(name, size, readonly)
        self.path = path
        self._file = file
        self._fd = file.fileno()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        writable: bool = False,
        name: str = "vblk0",
    ) -> RawDisk:
        """Open the raw image at ``path``; its size is the file's size."""
        filename, file = open_image_file(path, writable, BlockError)
        size = os.fstat(file.fileno()).st_size
        return cls(filename, file, size, not writable, name)

    def close(self) -> None:
        self._file.close()

    def fileno(self) -> int:
        """The host file descriptor of the image file."""
        return self._fd

    def flush(self) -> None:
        if not self.readonly:
            os.fsync(self._fd)

    def _readinto(self, offset: int, view: memoryview) -> None:
        try:
            done = os.preadv(self._fd, [view], offset)
        except OSError as error:
            raise BlockError(f"{self.path}: read failed: {error.strerror}") from None
        if done != len(view):
            raise BlockError(f"{self.path}: short read at {offset} (file truncated?)")

    def _read(self, offset: int, size: int) -> bytes:
        try:
            data = os.pread(self._fd, size, offset)
        except OSError as error:
            raise BlockError(f"{self.path}: read failed: {error.strerror}") from None
        if len(data) != size:
            raise BlockError(f"{self.path}: short read at {offset} (file truncated?)")
        return data

    def _write(self, offset: int, data: memoryview) -> None:
        try:
            os.pwrite(self._fd, data, offset)
        except OSError as error:
            raise BlockError(f"{self.path}: write failed: {error.strerror}") from None


class MemoryDisk(BlockDevice):
    """A disk held in host memory, for images built on the fly and for tests."""

    format = "memory"

    def __init__(
        self,
        data: bytes | bytearray,
        *,
        name: str = "vblk0",
        readonly: bool = True,
    ) -> None:
        super().__init__(name, len(data), readonly)
        self._data = bytearray(data) if not readonly else bytes(data)

    def _read(self, offset: int, size: int) -> bytes:
        return self._data[offset : offset + size]

    def _readinto(self, offset: int, view: memoryview) -> None:
        with memoryview(self._data) as source:
            view[:] = source[offset : offset + len(view)]

    def _write(self, offset: int, data: memoryview) -> None:
        self._data[offset : offset + len(data)] = data


class Partition(BlockDevice):
    """A window onto a parent device: one MBR partition of a disk.

    ``index`` is the MBR entry index (0..3) and ``start`` the first byte
    inside the parent. Offsets given to a partition are relative to its
    start, and the bounds check keeps every request inside the partition.
    """

    format = "partition"

    def __init__(self, parent: BlockDevice, index: int, start: int, size: int) -> None:
        if start < 0 or size < 0 or start + size > parent.size:
            raise BlockError(
                f"{parent.name}: partition {index} ({size} bytes at {start}) runs "
                f"past the end of the disk ({parent.size} bytes)"
            )
        super().__init__(f"{parent.name}.{index}", size, parent.readonly)
        self.parent = parent
        self.index = index
        self.start = start

    def _read(self, offset: int, size: int) -> bytes:
        return self.parent.read(self.start + offset, size)

    def _readinto(self, offset: int, view: memoryview) -> None:
        self.parent.readinto(self.start + offset, view)

    def _write(self, offset: int, data: memoryview) -> None:
        self.parent.write(self.start + offset, data)

    def flush(self) -> None:
        self.parent.flush()
