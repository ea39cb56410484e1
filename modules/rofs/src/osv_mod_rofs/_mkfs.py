"""Writing a ROFS file system byte for byte as OSv's ``gen-rofs-img.py`` does."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from typing import BinaryIO, Protocol

from osv.image import build_time_ns, host_time_ns

from ._errors import RofsMkfsError
from ._format import (
    DIRECTORY_ENTRY_HEAD,
    INODE,
    ROFS_BLOCK_SIZE,
    ROFS_MAGIC,
    ROFS_TIME,
    ROFS_TIMES_MAGIC,
    ROFS_VERSION,
    S_IFDIR,
    S_IFLNK,
    S_IFREG,
    SYMLINK_HEAD,
    Superblock,
)

logger = logging.getLogger(__name__)

# Byte compatibility with OSv's writer is the point here, so its order of
# work is kept exactly (a different order gives a valid but different file
# system):
#
# 1. The entries, in manifest order, build a tree of dictionaries keyed by
#    path component; a key keeps the place of its first appearance, and a
#    later entry for the same path replaces the value in that place.
# 2. Block 0 is left for the superblock; file data starts at block 1.
# 3. The root takes inode 1. Then each directory, in dictionary order, gives
#    every child the next inode number as it reaches it, descends into a
#    child directory at once, and writes a child file's data at once. Only
#    when all its children are done are the directory's own entries
#    appended to the entry table. So inode numbers are in pre-order and the
#    entry table in post-order (the root's entries come last).
# 4. The entry table, the symlink table and the inode table follow the data
#    and are padded to a whole block. OSv pads with 512 - (length % 512)
#    zero bytes, which is a whole extra block, not counted in the
#    superblock, when the tables end on a block boundary; we do the same.
# 5. The superblock is written last, over block 0.
#
# With ``times`` (the default), the tables end with the time table described
# in _format, before the padding; without it the bytes are OSv's exactly.
#
# Two things OSv's build does that belong to its build system rather than
# to the format are not repeated: replacing shared objects by stripped
# copies, and skipping host files whose name ends in "-stripped.so".

_COPY_CHUNK = 1 << 20


class Entry(Protocol):
    """What mkfs needs of a manifest entry (``osv.image.ManifestEntry`` fits).

    ``kind`` is ``file`` (content from the host path ``host``), ``dir`` or
    ``symlink`` (pointing at ``target``); ``guest`` is the absolute path in
    the file system and ``origin`` where the entry came from, for messages.
    """

    guest: str
    kind: str
    host: str | None
    target: str | None
    origin: str


@dataclasses.dataclass(frozen=True)
class RofsSummary:
    """What mkfs wrote: counts from the superblock, and sizes in bytes."""

    inodes: int
    directory_entries: int
    symlinks: int
    files: int
    file_bytes: int
    image_bytes: int


@dataclasses.dataclass(frozen=True)
class _File:
    host: str
    origin: str


@dataclasses.dataclass(frozen=True)
class _Symlink:
    target: bytes


_Tree = dict[str, "_Tree | _File | _Symlink"]


def write_rofs(
    entries: Iterable[Entry], output: BinaryIO, *, times: bool = True
) -> RofsSummary:
    """Write the ROFS holding ``entries`` (in manifest order) to ``output``.

    ``output`` is a seekable binary file positioned where the file system
    starts (its superblock is written last, over the first block). With
    ``times``, each object keeps its host object's modification time in a
    time table; objects with no host object (symlinks, directories made
    only as parents) get SOURCE_DATE_EPOCH or the current time. Raises
    ``RofsMkfsError`` for an entry that cannot be placed or read.
    """
    directory_times: dict[tuple[str, ...], int] = {}
    tree = _build_tree(entries, directory_times)
    writer = _Writer(output, directory_times if times else None)
    return writer.write(tree)


def _build_tree(
    entries: Iterable[Entry], directory_times: dict[tuple[str, ...], int]
) -> _Tree:
    """The tree of ``entries``; the host times of directories named by an
    entry go into ``directory_times``, keyed by their path components."""
    root: _Tree = {}
    for entry in entries:
        parts = [part for part in entry.guest.split("/") if part]
        if entry.kind == "dir":
            if entry.host is not None:
                mtime = host_time_ns(entry.host, None)
                if mtime is not None:
                    directory_times[tuple(parts)] = mtime
            node = root
            for depth, part in enumerate(parts):
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    if depth + 1 < len(parts):
                        raise _not_a_directory(entry, parts[: depth + 1])
                    # OSv's writer leaves a file or link where a later line
                    # names a directory of the same path.
                    logger.debug("%s: %s stays a file", entry.origin, entry.guest)
                    break
                node = child
            continue

        if not parts:
            raise RofsMkfsError(f"{entry.origin}: / can only be a directory")
        parent = root
        for depth, part in enumerate(parts[:-1]):
            child = parent.setdefault(part, {})
            if not isinstance(child, dict):
                raise _not_a_directory(entry, parts[: depth + 1])
            parent = child
        if entry.kind == "symlink":
            if entry.target is None:
                raise RofsMkfsError(
                    f"{entry.origin}: symlink {entry.guest} has no target"
                )
            parent[parts[-1]] = _Symlink(os.fsencode(entry.target))
        elif entry.kind == "file":
            if entry.host is None:
                raise RofsMkfsError(
                    f"{entry.origin}: file {entry.guest} has no host file"
                )
            parent[parts[-1]] = _File(os.fspath(entry.host), entry.origin)
        else:
            raise RofsMkfsError(f"{entry.origin}: unknown entry kind {entry.kind!r}")
    return root


def _not_a_directory(entry: Entry, parts: list[str]) -> RofsMkfsError:
    return RofsMkfsError(
        f"{entry.origin}: cannot place {entry.guest}: /{'/'.join(parts)} is a "
        "file or symlink, not a directory"
    )


class _Writer:
    def __init__(
        self, output: BinaryIO, directory_times: dict[tuple[str, ...], int] | None
    ) -> None:
        self.output = output
        self.start = output.tell()
        self.block = 0
        # Inode k is inodes[k - 1]: (mode, data_offset, count), and its time
        # mtimes[k - 1] when a time table is written.
        self.inodes: list[list[int]] = []
        self.directory_times = directory_times
        self.mtimes: list[int] | None = None if directory_times is None else []
        self.built = build_time_ns()
        self.entries: list[tuple[bytes, int]] = []
        self.symlinks: list[bytes] = []
        self.files = 0
        self.file_bytes = 0

    def write(self, root: _Tree) -> RofsSummary:
        self.output.write(bytes(ROFS_BLOCK_SIZE))
        self.block = 1
        self._write_tree(root)

        first_block = self.block
        tables = bytearray()
        for name, inode_no in self.entries:
            tables += DIRECTORY_ENTRY_HEAD.pack(inode_no, len(name)) + name
        for target in self.symlinks:
            tables += SYMLINK_HEAD.pack(len(target)) + target
        for number, (mode, data_offset, count) in enumerate(self.inodes, 1):
            tables += INODE.pack(mode, 0, number, data_offset, count)
        if self.mtimes is not None:
            tables += ROFS_TIMES_MAGIC
            tables += b"".join(ROFS_TIME.pack(mtime) for mtime in self.mtimes)
        blocks = -(-len(tables) // ROFS_BLOCK_SIZE)
        padding = ROFS_BLOCK_SIZE - len(tables) % ROFS_BLOCK_SIZE
        self.output.write(tables)
        self.output.write(bytes(padding))
        end = self.output.tell()

        superblock = Superblock(
            magic=ROFS_MAGIC,
            version=ROFS_VERSION,
            block_size=ROFS_BLOCK_SIZE,
            structure_info_first_block=first_block,
            structure_info_blocks_count=blocks,
            directory_entries_count=len(self.entries),
            symlinks_count=len(self.symlinks),
            inodes_count=len(self.inodes),
        )
        self.output.seek(self.start)
        self.output.write(superblock.pack())
        self.output.seek(end)
        logger.debug(
            "rofs: tables at block %d, %d blocks; %d inodes, %d entries, %d symlinks",
            first_block,
            blocks,
            len(self.inodes),
            len(self.entries),
            len(self.symlinks),
        )
        return RofsSummary(
            inodes=len(self.inodes),
            directory_entries=len(self.entries),
            symlinks=len(self.symlinks),
            files=self.files,
            file_bytes=self.file_bytes,
            image_bytes=end - self.start,
        )

    def _new_inode(self, mode: int, mtime: int | None = None) -> int:
        self.inodes.append([mode, 0, 0])
        if self.mtimes is not None:
            self.mtimes.append(self.built if mtime is None else mtime)
        return len(self.inodes)

    def _directory_time(self, path: tuple[str, ...]) -> int | None:
        if self.directory_times is None:
            return None
        return self.directory_times.get(path)

    def _write_tree(self, root: _Tree) -> None:
        # The walk is the recursive one described at the top of this module,
        # kept on an explicit stack so that no depth of tree can exhaust
        # Python's recursion limit. A frame is (directory inode, iterator
        # over its children, the children's (name, inode) pairs so far, its
        # path components).
        root_inode = self._new_inode(S_IFDIR, self._directory_time(()))
        stack = [(root_inode, iter(root.items()), [], ())]
        while stack:
            directory, children, named, path = stack[-1]
            for name, value in children:
                encoded = os.fsencode(name)
                if len(encoded) > 0xFFFF:
                    raise RofsMkfsError(f"name too long for ROFS: {name[:64]}...")
                if isinstance(value, dict):
                    child_path = (*path, name)
                    inode = self._new_inode(S_IFDIR, self._directory_time(child_path))
                    named.append((encoded, inode))
                    stack.append((inode, iter(value.items()), [], child_path))
                    break
                if isinstance(value, _Symlink):
                    if len(value.target) > 0xFFFF:
                        raise RofsMkfsError(f"symlink target too long for ROFS: {name}")
                    inode = self._new_inode(S_IFLNK)
                    self.inodes[inode - 1][1:] = [len(self.symlinks), 1]
                    self.symlinks.append(value.target)
                else:
                    inode = self._new_inode(S_IFREG)
                    first = self.block
                    size, mtime = self._write_file(value)
                    self.inodes[inode - 1][1:] = [first, size]
                    if self.mtimes is not None:
                        self.mtimes[inode - 1] = mtime
                named.append((encoded, inode))
            else:
                self.inodes[directory - 1][1:] = [len(self.entries), len(named)]
                self.entries.extend(named)
                stack.pop()

    def _write_file(self, file: _File) -> tuple[int, int]:
        """Copy a host file's content, zero-padded to a whole block; return its
        size and modification time."""
        size = 0
        try:
            with open(file.host, "rb") as source:
                mtime = os.fstat(source.fileno()).st_mtime_ns
                while chunk := source.read(_COPY_CHUNK):
                    self.output.write(chunk)
                    size += len(chunk)
        except OSError as error:
            raise RofsMkfsError(
                f"{file.origin}: cannot read {file.host}: {error.strerror}"
            ) from None
        tail = size % ROFS_BLOCK_SIZE
        if tail:
            self.output.write(bytes(ROFS_BLOCK_SIZE - tail))
        self.block += -(-size // ROFS_BLOCK_SIZE)
        self.files += 1
        self.file_bytes += size
        return size, mtime
