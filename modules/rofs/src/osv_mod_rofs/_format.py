"""ROFS on disk: the superblock, inode, directory-entry and symlink records,
and reading them back with every count and offset checked."""

from __future__ import annotations

import dataclasses
import logging
import struct
from typing import NamedTuple

from osv.block import BlockDevice, BlockError

from ._errors import RofsMountError

logger = logging.getLogger(__name__)

# The layout, in 512-byte blocks (all integers little-endian):
#
#     block 0          superblock: eight u64 (64 bytes), zero-padded
#     1 .. F-1         file data; each file starts on a block of its own and
#                      its last block is zero-padded; empty files take none
#     F .. F+N-1       the tables, one packed byte stream: directory entries
#                      (u64 inode_no, u16 name length, name), then symlinks
#                      (u16 length, target), then inodes (4 x u64 each)
#
# F is structure_info_first_block and N structure_info_blocks_count. Block
# numbers count from the start of the partition. A directory's children are
# the run [data_offset, data_offset + count) of the entry table; "." and ".."
# are not stored. Inode k of the table is inode number k + 1; number 1 is the
# root directory. Only the file-type bits of a mode are stored.
#
# OSv's format has no times. Ours may append a time table to the tables:
# the 8 bytes ROFS_TIMES_MAGIC, then one i64 modification time (nanoseconds
# since the epoch, negative before 1970) per inode, in inode order. OSv's reader parses the three
# tables by their counts and never looks past them, so it mounts such a file
# system as before; ours dates each object from the table when the magic is
# there, and at the epoch otherwise.
ROFS_MAGIC = 0xDEADBEAD
ROFS_VERSION = 1
ROFS_BLOCK_SIZE = 512

SUPERBLOCK = struct.Struct("<8Q")
# The mode is a 32-bit mode_t followed by 4 bytes of padding in OSv's C
# structure; its Python writer emits mode as one u64, which is the same bytes.
INODE = struct.Struct("<IIQQQ")
DIRECTORY_ENTRY_HEAD = struct.Struct("<QH")
SYMLINK_HEAD = struct.Struct("<H")
ROFS_TIMES_MAGIC = b"OSVMTIME"
ROFS_TIME = struct.Struct("<q")

S_IFDIR = 0x4000
S_IFREG = 0x8000
S_IFLNK = 0xA000
FILE_TYPES = (S_IFDIR, S_IFREG, S_IFLNK)

ROOT_INODE = 1

# Names quoted in error messages are cut to this many bytes: a damaged length
# field can make a "name" of up to 64 KiB of whatever follows it.
SHOWN_NAME_BYTES = 64

# The tables are read whole at mount and kept in memory, as OSv does. A tree
# of a million files needs about 60 MiB of them; a superblock claiming more
# than this is refused rather than trusted with that much memory.
MAX_TABLE_BYTES = 256 << 20


@dataclasses.dataclass(frozen=True)
class Superblock:
    """Block 0 of a ROFS file system; field names as in OSv's ``rofs.hh``."""

    magic: int
    version: int
    block_size: int
    structure_info_first_block: int
    structure_info_blocks_count: int
    directory_entries_count: int
    symlinks_count: int
    inodes_count: int

    def pack(self) -> bytes:
        return SUPERBLOCK.pack(*dataclasses.astuple(self))

    @classmethod
    def unpack(cls, data: bytes) -> Superblock:
        return cls(*SUPERBLOCK.unpack_from(data))


class Inode(NamedTuple):
    """An inode record: what ``data_offset`` and ``count`` mean depends on ``mode``.

    Regular file: first data block, size in bytes. Directory: index of its
    first entry, number of entries. Symlink: index in the symlink table, 1.
    """

    mode: int
    inode_no: int
    data_offset: int
    count: int


class DirectoryEntry(NamedTuple):
    """A name in a directory and the inode number it leads to."""

    inode_no: int
    name: bytes


@dataclasses.dataclass
class RofsMetadata:
    """Everything a mount keeps in memory: the checked superblock and tables.

    ``parents`` maps each directory reachable from the root to the directory
    holding it (the root to itself); ``subdirectories`` counts each
    directory's children that are directories. ``mtimes`` holds each inode's
    modification time in nanoseconds (inode k at index k - 1), or is None
    for a file system written without a time table.
    """

    superblock: Superblock
    entries: list[DirectoryEntry]
    symlinks: list[bytes]
    inodes: list[Inode]
    parents: dict[int, int]
    subdirectories: dict[int, int]
    mtimes: list[int] | None = None

    def inode(self, inode_no: int) -> Inode:
        return self.inodes[inode_no - 1]

    def children(self, inode: Inode) -> list[DirectoryEntry]:
        return self.entries[inode.data_offset : inode.data_offset + inode.count]


def read_metadata(device: BlockDevice) -> RofsMetadata:
    """Read and check the superblock and tables of the ROFS on ``device``.

    Raises ``RofsMountError`` naming the first thing found wrong. Every read
    stays inside the device, every record inside the tables, and the work
    is bounded by the size of the tables, whatever the bytes say.
    """
    name = device.name
    if device.size < ROFS_BLOCK_SIZE:
        raise RofsMountError(
            f"{name}: {device.size} bytes is too small for a ROFS superblock"
        )
    superblock = Superblock.unpack(_read(device, 0, ROFS_BLOCK_SIZE))
    _check_superblock(superblock, device)

    first = superblock.structure_info_first_block
    count = superblock.structure_info_blocks_count
    tables = _read(device, first * ROFS_BLOCK_SIZE, count * ROFS_BLOCK_SIZE)
    entries, position = _parse_entries(tables, superblock, name)
    symlinks, position = _parse_symlinks(tables, position, superblock, name)
    inodes, position = _parse_inodes(tables, position, superblock, name)
    mtimes = _parse_times(tables, position, superblock.inodes_count)
    metadata = RofsMetadata(superblock, entries, symlinks, inodes, {}, {}, mtimes)
    _check_inodes(metadata, device)
    _check_tree(metadata, name)
    logger.debug(
        "%s: ROFS with %d inodes, %d directory entries, %d symlinks",
        name,
        len(inodes),
        len(entries),
        len(symlinks),
    )
    return metadata


def _read(device: BlockDevice, offset: int, size: int) -> bytes:
    try:
        return device.read(offset, size)
    except BlockError as error:
        raise RofsMountError(f"{device.name}: cannot read: {error}") from None


def _check_superblock(superblock: Superblock, device: BlockDevice) -> None:
    name = device.name
    if superblock.magic != ROFS_MAGIC:
        raise RofsMountError(
            f"{name}: no ROFS here (magic {superblock.magic:#x}, "
            f"expected {ROFS_MAGIC:#x})"
        )
    if superblock.version != ROFS_VERSION:
        raise RofsMountError(
            f"{name}: ROFS version {superblock.version} is not supported "
            f"(version {ROFS_VERSION} is)"
        )
    if superblock.block_size != ROFS_BLOCK_SIZE:
        raise RofsMountError(
            f"{name}: ROFS block size {superblock.block_size} is not supported "
            f"({ROFS_BLOCK_SIZE} is)"
        )
    first = superblock.structure_info_first_block
    count = superblock.structure_info_blocks_count
    device_blocks = device.size // ROFS_BLOCK_SIZE
    if first < 1 or count < 1 or first + count > device_blocks:
        raise RofsMountError(
            f"{name}: the tables (blocks {first} to {first + count - 1}) do not "
            f"lie inside the {device_blocks} blocks after the superblock"
        )

    table_bytes = count * ROFS_BLOCK_SIZE
    if table_bytes > MAX_TABLE_BYTES:
        raise RofsMountError(
            f"{name}: {table_bytes} bytes of tables is more than this driver "
            f"accepts ({MAX_TABLE_BYTES})"
        )

    # Each record has a least size; a count the tables cannot hold is refused
    # before a single record is parsed.
    least = (
        superblock.directory_entries_count * DIRECTORY_ENTRY_HEAD.size
        + superblock.symlinks_count * SYMLINK_HEAD.size
        + superblock.inodes_count * INODE.size
    )
    if least > table_bytes:
        raise RofsMountError(
            f"{name}: {superblock.directory_entries_count} directory entries, "
            f"{superblock.symlinks_count} symlinks and {superblock.inodes_count} "
            f"inodes cannot fit in {table_bytes} bytes of tables"
        )
    if superblock.inodes_count < ROOT_INODE:
        raise RofsMountError(f"{name}: no inodes, not even the root directory")


def _parse_entries(
    tables: bytes, superblock: Superblock, name: str
) -> tuple[list[DirectoryEntry], int]:
    entries = []
    position = 0
    head = DIRECTORY_ENTRY_HEAD
    for index in range(superblock.directory_entries_count):
        if position + head.size > len(tables):
            raise RofsMountError(f"{name}: directory entry {index} is truncated")
        inode_no, length = head.unpack_from(tables, position)
        start = position + head.size
        position = start + length
        if position > len(tables):
            raise RofsMountError(
                f"{name}: the name of directory entry {index} is truncated"
            )
        entry_name = tables[start:position]
        if (
            not entry_name
            or entry_name in (b".", b"..")
            or b"/" in entry_name
            or b"\0" in entry_name
        ):
            raise RofsMountError(
                f"{name}: directory entry {index} has an invalid name "
                f"{_shown(entry_name)}"
            )
        if not ROOT_INODE <= inode_no <= superblock.inodes_count:
            raise RofsMountError(
                f"{name}: directory entry {index} names inode {inode_no}, outside "
                f"1..{superblock.inodes_count}"
            )
        entries.append(DirectoryEntry(inode_no, entry_name))
    return entries, position


def _parse_symlinks(
    tables: bytes, position: int, superblock: Superblock, name: str
) -> tuple[list[bytes], int]:
    symlinks = []
    for index in range(superblock.symlinks_count):
        if position + SYMLINK_HEAD.size > len(tables):
            raise RofsMountError(f"{name}: symlink {index} is truncated")
        (length,) = SYMLINK_HEAD.unpack_from(tables, position)
        start = position + SYMLINK_HEAD.size
        position = start + length
        if position > len(tables):
            raise RofsMountError(f"{name}: the target of symlink {index} is truncated")
        target = tables[start:position]
        if b"\0" in target:
            raise RofsMountError(f"{name}: symlink {index} has a NUL in its target")
        symlinks.append(target)
    return symlinks, position


def _parse_inodes(
    tables: bytes, position: int, superblock: Superblock, name: str
) -> tuple[list[Inode], int]:
    end = position + superblock.inodes_count * INODE.size
    if end > len(tables):
        raise RofsMountError(f"{name}: the inode table is truncated")
    inodes = [
        Inode(mode, inode_no, data_offset, count)
        for mode, _, inode_no, data_offset, count in INODE.iter_unpack(
            tables[position:end]
        )
    ]
    return inodes, end


def _parse_times(tables: bytes, position: int, inodes_count: int) -> list[int] | None:
    """The time table after the inodes, or None when there is none.

    Every i64 is a valid time, so a table that is there cannot be wrong, only
    absent: OSv pads its tables with zeros, which never read as the magic.
    """
    start = position + len(ROFS_TIMES_MAGIC)
    end = start + inodes_count * ROFS_TIME.size
    if tables[position:start] != ROFS_TIMES_MAGIC or end > len(tables):
        return None
    return [mtime for (mtime,) in ROFS_TIME.iter_unpack(tables[start:end])]


def _check_inodes(metadata: RofsMetadata, device: BlockDevice) -> None:
    name = device.name
    entries = len(metadata.entries)
    symlinks = len(metadata.symlinks)
    runs = []
    for index, inode in enumerate(metadata.inodes):
        number = index + 1
        if inode.inode_no != number:
            raise RofsMountError(
                f"{name}: inode record {index} claims number {inode.inode_no}, "
                f"expected {number}"
            )
        if inode.mode == S_IFDIR:
            if inode.data_offset + inode.count > entries:
                raise RofsMountError(
                    f"{name}: directory inode {number} lists entries "
                    f"{inode.data_offset}..{inode.data_offset + inode.count - 1}, "
                    f"but there are {entries}"
                )
            if inode.count:
                runs.append((inode.data_offset, inode.count, number))
        elif inode.mode == S_IFREG:
            end = inode.data_offset * ROFS_BLOCK_SIZE + inode.count
            if inode.count and end > device.size:
                raise RofsMountError(
                    f"{name}: file inode {number} ({inode.count} bytes from block "
                    f"{inode.data_offset}) runs past the end of the device"
                )
        elif inode.mode == S_IFLNK:
            if inode.data_offset >= symlinks:
                raise RofsMountError(
                    f"{name}: symlink inode {number} names symlink "
                    f"{inode.data_offset}, but there are {symlinks}"
                )
        else:
            raise RofsMountError(
                f"{name}: inode {number} has mode {inode.mode:#x}, which is not "
                "a directory, regular file or symlink"
            )
    if metadata.inodes[ROOT_INODE - 1].mode != S_IFDIR:
        raise RofsMountError(f"{name}: the root inode is not a directory")

    # The writer appends each directory's entries once, so the runs of two
    # directories never overlap. Insisting on that keeps every walk of the
    # tree linear in the size of the entry table.
    runs.sort()
    for (start, count, number), (next_start, _, next_number) in zip(
        runs, runs[1:], strict=False
    ):
        if start + count > next_start:
            raise RofsMountError(
                f"{name}: directories {number} and {next_number} share "
                "directory entries"
            )


def _check_tree(metadata: RofsMetadata, name: str) -> None:
    """Every directory reachable from the root must be reached exactly once.

    A directory listed twice, or listing an ancestor, would make the tree a
    graph with cycles, on which ``find`` and ``..`` never end.
    """
    parents = {ROOT_INODE: ROOT_INODE}
    subdirectories: dict[int, int] = {}
    pending = [ROOT_INODE]
    while pending:
        directory = pending.pop()
        count = 0
        for entry in metadata.children(metadata.inode(directory)):
            child = entry.inode_no
            if metadata.inode(child).mode != S_IFDIR:
                continue
            if child in parents:
                raise RofsMountError(
                    f"{name}: directory inode {child} is listed more than once "
                    "(the tree has a cycle)"
                )
            parents[child] = directory
            pending.append(child)
            count += 1
        subdirectories[directory] = count
    metadata.parents = parents
    metadata.subdirectories = subdirectories


def _shown(name: bytes) -> str:
    """A name as quoted in an error message: its first bytes and its length."""
    if len(name) <= SHOWN_NAME_BYTES:
        return repr(name)
    return f"{name[:SHOWN_NAME_BYTES]!r}... ({len(name)} bytes)"
