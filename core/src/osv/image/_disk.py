"""Disk images laid out as OSv lays out ``usr.img`` (MBR, boot command line, image
descriptor, root partition), stored raw or in a qcow2 container."""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple, Self

from osv.block import (
    FOREIGN_FORMATS,
    FORMAT_NAMES,
    MBR_ENTRY,
    MBR_ENTRY_SIZE,
    MBR_PARTITION_TABLE,
    MBR_SIGNATURE,
    MBR_SIGNATURE_OFFSET,
    BlockDevice,
    BlockError,
    Qcow2Disk,
    RawDisk,
    detect_format,
    open_disk,
    read_partition_table,
)

from ._descriptor import (
    DESCRIPTOR_HEADER,
    DESCRIPTOR_MAGIC,
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

# The master boot record's layout is the block layer's (osv.block reads the
# partition table as OSv's kernel does); an image's root partition is a Linux
# one.
MBR_SYSTEM_ID_LINUX = 0x83

# The CHS geometry OSv's imgedit assumes, and the largest address it encodes.
_SECTORS_PER_TRACK = 63
_HEADS = 255
_CHS_LIMIT = (1023, 254, 63)

# The same disk can be stored two ways. raw is the disk byte for byte (a
# sparse file: the holes cost nothing on most host file systems, but copying
# the file may fill them in). qcow2, QEMU's format and OSv's default, stores
# only the clusters that hold data, wherever the file lives. Either way the
# disk is written only where it is not zero.
IMAGE_FORMATS = ("raw", "qcow2")

_COPY_CHUNK = 1 << 20

# Anything that can fill the root partition: its bytes, a file holding them
# (by path, or open for binary reading), or None for an empty partition.
PartitionSource = (
    bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO | None
)


class Partition(NamedTuple):
    """An MBR entry in use: its index (0..3) and its extent in bytes."""

    index: int
    start: int
    size: int


def write_image(
    path: str | os.PathLike[str],
    *,
    cmdline: str,
    descriptor: ImageDescriptor,
    partition: PartitionSource,
    min_size: int | str | None = None,
    partition_size: int | None = None,
    format: str = "raw",
) -> int:
    """Write an image to *path* and return its (virtual) size in bytes.

    *partition* is the root file system's content (bytes, a file holding it,
    by path or open for binary reading), or None for an empty root partition
    (ramfs-style images).  The partition occupies MBR entry index 1 from
    2 MiB; its size is the content rounded up to whole sectors, or
    *partition_size* when larger (room for a file system that grows).  The
    image is at least *min_size*.  *format* is ``raw`` (a sparse file) or
    ``qcow2`` (version 3, where only clusters holding data take space).  The
    file is written next to *path* and renamed into place at the end.
    """
    if format not in IMAGE_FORMATS:
        raise ImageError(
            f"unknown image format {format!r} (choose from {', '.join(IMAGE_FORMATS)})"
        )
    check_output_path(path)
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

    # Everything before the root partition: MBR, command line, descriptor.
    boot_area = bytearray(ROOT_PARTITION_OFFSET)
    boot_area[MBR_SIGNATURE_OFFSET:SECTOR_SIZE] = MBR_SIGNATURE
    entry_offset = MBR_PARTITION_TABLE + ROOT_PARTITION_INDEX * MBR_ENTRY_SIZE
    boot_area[entry_offset : entry_offset + MBR_ENTRY_SIZE] = _mbr_entry(
        ROOT_PARTITION_OFFSET, extent
    )
    boot_area[CMDLINE_OFFSET : CMDLINE_OFFSET + len(encoded_cmdline) + 1] = (
        encoded_cmdline + b"\0"
    )
    boot_area[DESCRIPTOR_OFFSET : DESCRIPTOR_OFFSET + len(descriptor_bytes)] = (
        descriptor_bytes
    )

    def fill(target: _SparseTarget) -> None:
        target.write(0, boot_area)
        _write_partition(partition, target, content_size)

    _write_atomically(path, format, image_size, fill)
    logger.info(
        "wrote %s (%s): %d bytes, root partition %d bytes at %d",
        os.fspath(path),
        format,
        image_size,
        extent,
        ROOT_PARTITION_OFFSET,
    )
    return image_size


def write_raw_image(
    path: str | os.PathLike[str],
    *,
    cmdline: str,
    descriptor: ImageDescriptor,
    partition: PartitionSource,
    min_size: int | str | None = None,
    partition_size: int | None = None,
) -> int:
    """Write a raw image (see ``write_image``) and return its size in bytes."""
    return write_image(
        path,
        cmdline=cmdline,
        descriptor=descriptor,
        partition=partition,
        min_size=min_size,
        partition_size=partition_size,
        format="raw",
    )


class DiskImage:
    """An image file, raw or qcow2, opened for inspection (and, when writable,
    for editing).

    ``open`` checks the MBR signature, the boot command line, the descriptor
    and that every partition lies inside the disk. ``size`` is the size of
    the disk the image holds (for qcow2, its virtual size), ``format`` is
    ``raw`` or ``qcow2``, and ``device`` is the disk as a block device
    (``vblk0``), which the kernel boots from.
    """

    def __init__(self, path: str, device: BlockDevice, writable: bool) -> None:
        self.path = path
        self.device = device
        self.size = device.size
        self.format = device.format
        self._writable = writable
        self.descriptor: ImageDescriptor
        self._mappings: list[mmap.mmap] = []

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writable: bool = False) -> DiskImage:
        """Open and validate the image at *path*; ``ImageError`` if unusable."""
        name = os.fspath(path)
        try:
            with open(name, "r+b" if writable else "rb"):
                pass
        except OSError as error:
            raise ImageError(f"cannot open image {name}: {error.strerror}") from None
        try:
            container = detect_format(name)
            if container in FOREIGN_FORMATS:
                # Imported here: only this refusal quotes a path for a shell.
                import shlex

                raise ImageError(
                    f"{name}: a {FORMAT_NAMES[container]} image, which osv does not "
                    "run; convert it first: osv image convert "
                    f"{shlex.quote(name)} --to qcow2 -o NEW.qcow2"
                )
            # Kept open for the object's life; close() or "with" releases it.
            device = open_disk(name, writable=writable)
        except BlockError as error:
            raise ImageError(f"{name}: {_without_path(error, name)}") from None
        try:
            image = cls(name, device, writable)
            image._validate()
        except BaseException:
            device.close()
            raise
        return image

    def close(self) -> None:
        for mapping in self._mappings:
            try:
                mapping.close()
            except BufferError:
                # A view of it is still alive somewhere; the mapping goes
                # when that view does.
                logger.debug("%s: a mapped view outlives the image", self.path)
        self._mappings.clear()
        self.device.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def file_size(self) -> int:
        """Bytes the image file takes on the host (apparent size)."""
        return os.stat(self.path).st_size

    def read(self, offset: int, size: int) -> bytes:
        """Return *size* bytes from *offset*; the range must lie inside the image."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ImageError(
                f"{self.path}: read of {size} bytes at {offset} is outside the "
                f"image ({self.size} bytes)"
            )
        try:
            return self.device.read(offset, size)
        except BlockError as error:
            raise ImageError(
                f"{self.path}: {_without_path(error, self.path)}"
            ) from None

    def view(self, offset: int, size: int) -> memoryview:
        """*size* bytes from *offset*, read-only, for as long as the image is open.

        A raw image is mapped from the host's page cache rather than read:
        the bytes cost nothing until used, and a large ramfs tree needs no
        copy at boot. Other formats are read. The caller keeps the image
        open while it uses the view.
        """
        # Rationale: a private read-only mapping of the file shows later
        # changes to pages not yet touched, so the file must not change while
        # the VM runs. Our own tools never change an image in place except
        # its command line (below the partitions): `osv build` and
        # conversions write a new file and rename it over the old one, which
        # leaves the mapped file as it was.
        fileno = getattr(self.device, "fileno", None)
        if self.format != "raw" or fileno is None or size == 0:
            return memoryview(self.read(offset, size))
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ImageError(
                f"{self.path}: view of {size} bytes at {offset} is outside the "
                f"image ({self.size} bytes)"
            )
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            mapping = mmap.mmap(
                fileno(),
                offset + size - start,
                flags=mmap.MAP_PRIVATE,
                prot=mmap.PROT_READ,
                offset=start,
            )
        except (OSError, ValueError) as error:
            logger.debug("%s: not mapped (%s); reading instead", self.path, error)
            return memoryview(self.read(offset, size))
        self._mappings.append(mapping)
        return memoryview(mapping)[offset - start :]

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
            self.device.write(CMDLINE_OFFSET, encoded + b"\0")
            self.device.flush()
        except (BlockError, OSError) as error:
            raise ImageError(f"{self.path}: cannot write: {error}") from None
        logger.debug("%s: boot command line set to %r", self.path, text)

    def partitions(self) -> list[Partition]:
        """MBR entries the kernel would use: non-zero system id and sector field."""
        try:
            entries = read_partition_table(self.device)
        except BlockError as error:
            raise ImageError(
                f"{self.path}: {_without_path(error, self.path)}"
            ) from None
        return [Partition(entry.index, entry.start, entry.size) for entry in entries]

    def _validate(self) -> None:
        if self.format == "raw":
            self._check_raw_image()
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

        self._check_partitions()

    def _check_raw_image(self) -> None:
        """Refuse a file that is no image at all before reading it as one.

        Nothing marks a raw disk as such, so a file that is neither qcow2 nor
        one of the containers the block layer names is opened raw. Our raw
        images carry the descriptor's magic at 64 KiB: without it, saying
        "too small" or "no MBR signature" would only mislead.
        """
        length = len(DESCRIPTOR_MAGIC)
        if self.size < DESCRIPTOR_OFFSET + length:
            reason = f"only {self.size} bytes"
        elif self.read(DESCRIPTOR_OFFSET, length) != DESCRIPTOR_MAGIC:
            reason = f"no image descriptor at byte {DESCRIPTOR_OFFSET}"
        else:
            return
        raise ImageError(
            f"{self.path}: neither a qcow2 image nor a raw OSv image "
            f"(no qcow2 magic at byte 0, {reason})"
        )

    def _check_partitions(self) -> None:
        """Check the MBR's partitions against the layout ``write_image`` makes.

        The root file system is in entry index 1, which must be in use (with
        no entry the kernel finds no /dev/vblk0.1 and a boot fails later, on
        a misleading error). Every partition in use must lie between the end
        of the boot area (MBR, command line, descriptor: the first 2 MiB)
        and the end of the disk, and no two may overlap.
        """
        partitions = self.partitions()
        if not any(p.index == ROOT_PARTITION_INDEX for p in partitions):
            raise ImageError(
                f"{self.path}: the MBR has no root partition (entry index "
                f"{ROOT_PARTITION_INDEX} is not in use): the partition table is "
                "corrupt"
            )
        for partition in partitions:
            where = (
                f"partition {partition.index} ({partition.size} bytes at "
                f"{partition.start})"
            )
            if partition.start < ROOT_PARTITION_OFFSET:
                raise ImageError(
                    f"{self.path}: {where} overlaps the MBR, command line and "
                    f"descriptor in the first {ROOT_PARTITION_OFFSET} bytes: the "
                    "partition table is corrupt"
                )
            if partition.start + partition.size > self.size:
                raise ImageError(
                    f"{self.path}: {where} runs past the end of the image "
                    f"({self.size} bytes): the image is truncated or its "
                    "partition table is corrupt"
                )
        ordered = sorted(partitions, key=lambda p: p.start)
        for first, second in zip(ordered, ordered[1:], strict=False):
            if first.start + first.size > second.start:
                raise ImageError(
                    f"{self.path}: partitions {first.index} and {second.index} "
                    "overlap: the partition table is corrupt"
                )


def check_output_path(path: str | os.PathLike[str]) -> None:
    """Refuse an output path that cannot become a file: a directory, a device
    or other special file, or a path whose directory does not exist.

    Images are written to a temporary file beside the output and renamed
    onto it, so without this check a directory given as the output would
    fail only at the end, naming a temporary file in its parent, and a
    device node (``-o /dev/null``) would be replaced by the image.
    """
    target = os.fspath(path)
    if not target:
        raise ImageError("the output path is empty")
    if os.path.isdir(target):
        raise ImageError(
            f"the output {target} is a directory; give the path of a file to write"
        )
    try:
        mode = os.stat(target).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise ImageError(
            f"the output {target} exists and is not a regular file (a device, "
            "FIFO or socket); give the path of a file to write"
        )
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        raise ImageError(
            f"cannot write {target}: the directory {directory} does not exist"
        )


def _without_path(error: Exception, path: str) -> str:
    """The message of a block-layer error, without a leading "<path>: "."""
    message = str(error)
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


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
    return MBR_ENTRY.pack(
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


def _is_stream(partition: object) -> bool:
    return hasattr(partition, "read") and hasattr(partition, "seek")


def _partition_content_size(partition: PartitionSource) -> int:
    if partition is None:
        return 0
    if isinstance(partition, (bytes, bytearray, memoryview)):
        return memoryview(partition).nbytes
    if _is_stream(partition):
        return partition.seek(0, os.SEEK_END)
    try:
        return os.stat(partition).st_size
    except OSError as error:
        raise ImageError(
            f"cannot read partition file {partition}: {error.strerror}"
        ) from None


def _write_partition(
    partition: PartitionSource, target: _SparseTarget, expected: int
) -> None:
    if partition is None:
        return
    if isinstance(partition, (bytes, bytearray, memoryview)):
        target.write(ROOT_PARTITION_OFFSET, partition)
        return
    if _is_stream(partition):
        partition.seek(0)
        copied = _copy_stream(partition, target)
    else:
        try:
            with open(partition, "rb") as source:
                copied = _copy_stream(source, target)
        except OSError as error:
            raise ImageError(
                f"cannot read partition file {partition}: {error.strerror}"
            ) from None
    if copied != expected:
        raise ImageError(f"partition file {partition} changed size while being copied")


def _copy_stream(source: BinaryIO, target: _SparseTarget) -> int:
    copied = 0
    while chunk := source.read(_COPY_CHUNK):
        target.write(ROOT_PARTITION_OFFSET + copied, chunk)
        copied += len(chunk)
    return copied


class _SparseTarget:
    """Where an image is written: only data that is not zero is stored.

    A raw file gets holes where the data is zero; a qcow2 file leaves those
    clusters unallocated. Either way unwritten bytes read back as zeros.
    """

    def __init__(self, device: BlockDevice, block_size: int) -> None:
        self.device = device
        self.block_size = block_size
        self._zeros = bytes(block_size)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write the blocks of *data* that hold anything but zeros."""
        view = memoryview(data).cast("B")
        block_size, zeros = self.block_size, self._zeros
        position, run = 0, None
        while position < len(view):
            # Pieces end on the target's block boundaries, so each is tested
            # as one unit; runs of pieces that hold data are written at once.
            length = min(
                block_size - (offset + position) % block_size, len(view) - position
            )
            if view[position : position + length] == zeros[:length]:
                if run is not None:
                    self.device.write(offset + run, view[run:position])
                    run = None
            elif run is None:
                run = position
            position += length
        if run is not None:
            self.device.write(offset + run, view[run:])


@contextlib.contextmanager
def replacing(target: str) -> Iterator[str]:
    """A scratch file beside *target* that becomes *target* when the block ends.

    On any error the scratch file is removed and *target* is left as it was.
    """
    # Imported here: only writing an image needs it, and `osv run` reads one.
    import tempfile

    directory = os.path.dirname(os.path.abspath(target))
    try:
        handle, temporary = tempfile.mkstemp(prefix=".osv-image-", dir=directory)
    except OSError as error:
        raise ImageError(f"cannot create {target}: {error.strerror}") from None
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _write_atomically(
    path: str | os.PathLike[str],
    format: str,
    size: int,
    fill,  # noqa: ANN001 - Callable[[_SparseTarget], None]
) -> None:
    """Create a *format* disk of *size* bytes next to *path*, let *fill* write
    it, and rename it to *path*; on any failure no file is left behind."""
    target = os.fspath(path)
    check_output_path(target)
    try:
        with replacing(target) as temporary:
            if format == "qcow2":
                device: BlockDevice = Qcow2Disk.create(temporary, size)
                cluster = device.cluster_size
            else:
                with open(temporary, "r+b") as file:
                    file.truncate(size)
                device = RawDisk.open(temporary, writable=True)
                cluster = 4096
            try:
                fill(_SparseTarget(device, cluster))
            finally:
                device.close()
    except (OSError, BlockError) as error:
        raise ImageError(f"cannot write {target}: {error}") from None
