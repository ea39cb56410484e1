"""Raw disk images laid out as OSv lays out ``usr.img``: MBR, boot command line,
image descriptor and root partition."""

from __future__ import annotations

import logging
import os
import shutil
import struct
import tempfile
from typing import BinaryIO, NamedTuple, Self

from ._descriptor import (
    DESCRIPTOR_HEADER,
    DESCRIPTOR_MAX_SIZE,
    DESCRIPTOR_OFFSET,
    ImageDescriptor,
)
from ._errors import ImageError
from ._size import parse_size

logger = logging.getLogger(__name__)

# Image layout.  OSv's usr.img puts a boot sector that doubles as an MBR at
# offset 0, the NUL-terminated boot command line at 512, the compressed
# kernel at 64 KiB and the root partition at the kernel's end rounded up to
# 2 MiB.  Our kernel runs in the host, so the 64 KiB slot holds the image
# descriptor instead and the root partition always starts at 2 MiB.  Keeping
# OSv's offsets means OSv's tools (imgedit getargs/setargs, getpartition_offset)
# and the kernel's partition naming (/dev/vblk0.1) apply unchanged.
SECTOR_SIZE = 512
CMDLINE_OFFSET = 512
# The command line and its NUL must end before the descriptor starts.
CMDLINE_MAX_BYTES = DESCRIPTOR_OFFSET - CMDLINE_OFFSET - 1
ROOT_PARTITION_OFFSET = 2 * 1024 * 1024
ROOT_PARTITION_INDEX = 1

# Master boot record: four 16-byte entries at 0x1BE, signature 55 AA at 510.
MBR_PARTITION_TABLE = 0x1BE
MBR_ENTRY_SIZE = 16
MBR_SIGNATURE_OFFSET = 510
MBR_SIGNATURE = b"\x55\xaa"
MBR_SYSTEM_ID_LINUX = 0x83
# Entry fields: boot flag, start head, start cylinder/sector word, system id,
# end head, end cylinder/sector word, start LBA, sector count.
_MBR_ENTRY = struct.Struct("<BBHBBHII")

# The CHS geometry OSv's imgedit assumes, and the largest address it encodes.
_SECTORS_PER_TRACK = 63
_HEADS = 255
_CHS_LIMIT = (1023, 254, 63)

QCOW2_MAGIC = b"QFI\xfb"

_COPY_CHUNK = 1 << 20


class Partition(NamedTuple):
    """An MBR entry in use: its index (0..3) and its extent in bytes."""

    index: int
    start: int
    size: int


def write_raw_image(
    path: str | os.PathLike[str],
    *,
    cmdline: str,
    descriptor: ImageDescriptor,
    partition: bytes | bytearray | memoryview | str | os.PathLike[str] | None,
    min_size: int | str | None = None,
    partition_size: int | None = None,
) -> int:
    """Write a raw image to *path* and return its size in bytes.

    *partition* is the root file system's content (bytes, or the path of a
    file holding it), or None for an empty root partition (ramfs-style
    images).  The partition occupies MBR entry index 1 from 2 MiB; its size is
    the content rounded up to whole sectors, or *partition_size* when larger
    (room for a file system that grows).  The image is at least *min_size*.
    The file is written next to *path* and renamed into place at the end.
    """
    encoded_cmdline = _encode_cmdline(cmdline)
    descriptor_bytes = descriptor.to_bytes()

    content_size = _partition_content_size(partition)
    extent = _round_up(content_size, SECTOR_SIZE)
    if partition_size is not None:
        if partition_size < content_size:
            raise ImageError(
                f"partition size {partition_size} is smaller than its content "
                f"({content_size} bytes)"
            )
        extent = _round_up(partition_size, SECTOR_SIZE)
    image_size = ROOT_PARTITION_OFFSET + extent
    if min_size is not None:
        wanted = parse_size(min_size) if isinstance(min_size, str) else min_size
        image_size = max(image_size, _round_up(wanted, SECTOR_SIZE))

    mbr = bytearray(SECTOR_SIZE)
    mbr[MBR_SIGNATURE_OFFSET:] = MBR_SIGNATURE
    entry_offset = MBR_PARTITION_TABLE + ROOT_PARTITION_INDEX * MBR_ENTRY_SIZE
    mbr[entry_offset : entry_offset + MBR_ENTRY_SIZE] = _mbr_entry(
        ROOT_PARTITION_OFFSET, extent
    )

    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    try:
        handle, temporary = tempfile.mkstemp(prefix=".osv-image-", dir=directory)
    except OSError as error:
        raise ImageError(f"cannot create {target}: {error.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as image:
            image.write(mbr)
            image.seek(CMDLINE_OFFSET)
            image.write(encoded_cmdline + b"\0")
            image.seek(DESCRIPTOR_OFFSET)
            image.write(descriptor_bytes)
            image.seek(ROOT_PARTITION_OFFSET)
            _write_partition(partition, image, content_size)
            # Whatever is left is a hole: sparse on the host, zeros to the guest.
            image.truncate(image_size)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except OSError as error:
        os.unlink(temporary)
        raise ImageError(f"cannot write {target}: {error.strerror or error}") from None
    except BaseException:
        os.unlink(temporary)
        raise
    logger.info(
        "wrote %s: %d bytes, root partition %d bytes at %d",
        target,
        image_size,
        extent,
        ROOT_PARTITION_OFFSET,
    )
    return image_size


class DiskImage:
    """An image file opened for inspection (and, when writable, for editing).

    Only raw images are supported; ``open`` checks the MBR signature, the boot
    command line, the descriptor and that every partition lies inside the file.
    """

    def __init__(self, path: str, file: BinaryIO, size: int, writable: bool) -> None:
        self.path = path
        self.size = size
        self._file = file
        self._writable = writable
        self.descriptor: ImageDescriptor

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writable: bool = False) -> DiskImage:
        """Open and validate the image at *path*; ``ImageError`` if unusable."""
        name = os.fspath(path)
        try:
            # Kept open for the object's life; close() or "with" releases it.
            file = open(name, "r+b" if writable else "rb")
        except OSError as error:
            raise ImageError(f"cannot open image {name}: {error.strerror}") from None
        try:
            image = cls(name, file, os.fstat(file.fileno()).st_size, writable)
            image._validate()
        except BaseException:
            file.close()
            raise
        return image

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read(self, offset: int, size: int) -> bytes:
        """Return *size* bytes from *offset*; the range must lie inside the image."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ImageError(
                f"{self.path}: read of {size} bytes at {offset} is outside the "
                f"image ({self.size} bytes)"
            )
        try:
            data = os.pread(self._file.fileno(), size, offset)
        except OSError as error:
            raise ImageError(f"{self.path}: read failed: {error.strerror}") from None
        if len(data) != size:
            raise ImageError(f"{self.path}: short read at {offset} (file truncated?)")
        return data

    @property
    def cmdline(self) -> str:
        """The boot command line stored at offset 512."""
        return self._read_cmdline()

    def _read_cmdline(self) -> str:
        area = self.read(CMDLINE_OFFSET, CMDLINE_MAX_BYTES + 1)
        end = area.find(b"\0")
        if end < 0:
            raise ImageError(
                f"{self.path}: the boot command line is not NUL-terminated"
            )
        try:
            return area[:end].decode()
        except UnicodeDecodeError:
            raise ImageError(
                f"{self.path}: the boot command line is not UTF-8"
            ) from None

    def set_cmdline(self, text: str) -> None:
        """Store *text* at offset 512 followed by one NUL, as OSv's imgedit setargs.

        Bytes after the NUL are left as they were; readers stop at the NUL.
        """
        if not self._writable:
            raise ImageError(f"{self.path}: opened read-only; open with writable=True")
        encoded = _encode_cmdline(text)
        try:
            os.pwrite(self._file.fileno(), encoded + b"\0", CMDLINE_OFFSET)
        except OSError as error:
            raise ImageError(f"{self.path}: cannot write: {error.strerror}") from None
        logger.debug("%s: boot command line set to %r", self.path, text)

    def partitions(self) -> list[Partition]:
        """MBR entries the kernel would use: non-zero system id and sector field."""
        table = self.read(MBR_PARTITION_TABLE, 4 * MBR_ENTRY_SIZE)
        found = []
        for index in range(4):
            fields = _MBR_ENTRY.unpack_from(table, index * MBR_ENTRY_SIZE)
            _, _, start_cs, system_id, _, _, start_lba, sectors = fields
            if system_id != 0 and (start_cs & 0x3F) != 0:
                found.append(
                    Partition(index, start_lba * SECTOR_SIZE, sectors * SECTOR_SIZE)
                )
        return found

    def _validate(self) -> None:
        if (
            self.size >= len(QCOW2_MAGIC)
            and self.read(0, len(QCOW2_MAGIC)) == QCOW2_MAGIC
        ):
            raise ImageError(
                f"{self.path}: qcow2 images are not supported yet; convert it with "
                "'qemu-img convert -O raw IMAGE IMAGE.raw' and use the raw file"
            )
        if self.size < ROOT_PARTITION_OFFSET:
            raise ImageError(
                f"{self.path}: {self.size} bytes is too small for an image "
                f"(the root partition starts at {ROOT_PARTITION_OFFSET})"
            )
        if self.read(MBR_SIGNATURE_OFFSET, 2) != MBR_SIGNATURE:
            raise ImageError(f"{self.path}: no MBR signature (55 AA at byte 510)")

        self._read_cmdline()
        header = self.read(DESCRIPTOR_OFFSET, DESCRIPTOR_HEADER.size)
        _, _, length, _ = DESCRIPTOR_HEADER.unpack(header)
        length = min(length, DESCRIPTOR_MAX_SIZE - DESCRIPTOR_HEADER.size)
        data = self.read(DESCRIPTOR_OFFSET, DESCRIPTOR_HEADER.size + length)
        try:
            self.descriptor = ImageDescriptor.from_bytes(data)
        except ImageError as error:
            raise ImageError(f"{self.path}: {error}") from None

        for partition in self.partitions():
            if partition.start + partition.size > self.size:
                raise ImageError(
                    f"{self.path}: partition {partition.index} "
                    f"({partition.size} bytes at {partition.start}) runs past the "
                    f"end of the image ({self.size} bytes)"
                )


def _encode_cmdline(text: str) -> bytes:
    if not isinstance(text, str):
        raise ImageError(
            f"boot command line must be a string, got {type(text).__name__}"
        )
    encoded = text.encode()
    if b"\0" in encoded:
        raise ImageError("boot command line contains a NUL byte")
    if len(encoded) > CMDLINE_MAX_BYTES:
        raise ImageError(
            f"boot command line is {len(encoded)} bytes; at most {CMDLINE_MAX_BYTES} "
            "fit before the image descriptor"
        )
    return encoded


def _mbr_chs(lba: int) -> tuple[int, int, int]:
    """Cylinder, head, sector of *lba* in OSv's fixed 255-head, 63-sector geometry."""
    track, sector_index = divmod(lba, _SECTORS_PER_TRACK)
    cylinder, head = divmod(track, _HEADS)
    if cylinder > _CHS_LIMIT[0]:
        return _CHS_LIMIT
    return cylinder, head, sector_index + 1


def _mbr_entry(start: int, size: int) -> bytes:
    """A 16-byte MBR entry with the fields OSv's ``imgedit setpartition`` writes.

    The packed cylinder/sector word is OSv's ``(cylinder << 6) | sector``, not
    the textbook split of the cylinder's high bits; nothing reads CHS any more
    (the kernel uses only the LBA fields and checks the sector is non-zero),
    and matching OSv byte for byte keeps images comparable.  The end address
    is that of the sector just past the partition, again as OSv computes it.
    """
    start_lba, sectors = start // SECTOR_SIZE, size // SECTOR_SIZE
    if start_lba + sectors > 0xFFFFFFFF:
        raise ImageError("partition ends beyond the 2 TiB an MBR can address")
    cylinder, head, sector = _mbr_chs(start_lba)
    end_cylinder, end_head, end_sector = _mbr_chs((start + size) // SECTOR_SIZE)
    return _MBR_ENTRY.pack(
        0,
        head,
        (cylinder << 6) | sector,
        MBR_SYSTEM_ID_LINUX,
        end_head,
        (end_cylinder << 6) | end_sector,
        start_lba,
        sectors,
    )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _partition_content_size(
    partition: bytes | bytearray | memoryview | str | os.PathLike[str] | None,
) -> int:
    if partition is None:
        return 0
    if isinstance(partition, (bytes, bytearray, memoryview)):
        return memoryview(partition).nbytes
    try:
        return os.stat(partition).st_size
    except OSError as error:
        raise ImageError(
            f"cannot read partition file {partition}: {error.strerror}"
        ) from None


def _write_partition(
    partition: bytes | bytearray | memoryview | str | os.PathLike[str] | None,
    image: BinaryIO,
    expected: int,
) -> None:
    if partition is None:
        return
    if isinstance(partition, (bytes, bytearray, memoryview)):
        image.write(partition)
        return
    with open(partition, "rb") as source:
        shutil.copyfileobj(source, image, _COPY_CHUNK)
        copied = source.tell()
    if copied != expected:
        raise ImageError(f"partition file {partition} changed size while being copied")
