"""The ROFS driver: a ROFS mounted read-only, its files served through OSv's cache."""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, BinaryIO

from osv.block import BlockDevice, BlockError
from osv.mm import OutOfMemoryError
from osv.vfs import (
    MS_RDONLY,
    FileSystemType,
    FsError,
    Mount,
    StatFs,
    Vnode,
)

from ._format import (
    INODE,
    ROFS_BLOCK_SIZE,
    ROFS_MAGIC,
    ROOT_INODE,
    S_IFDIR,
    S_IFLNK,
    Inode,
    RofsMetadata,
    read_metadata,
)
from ._mkfs import Entry, RofsSummary, write_rofs

if TYPE_CHECKING:
    from osv.mm import PhysicalMemory
    from osv.vfs import Vfs

logger = logging.getLogger(__name__)

# Reads are cached as in OSv: a file is cut into segments of 64 blocks
# (32 KiB); the first read touching a segment reads all of it (a file
# shorter than that is read whole) and keeps it until the file system is
# unmounted. Nothing is evicted: a ROFS holds an application's files, read
# again and again, and never changes. Where one read misses several segments
# in a row, they are read from the device at once, into one buffer they then
# share.
#
# Mounted by a kernel, the cache lives in the guest's own memory, as OSv's
# page cache does: each file's cached bytes sit in runs of frames of at most
# 2 MiB ("chunks"), chunk k holding the file's bytes from k * 2 MiB on. Reads
# copy out of the chunks, and mmap maps the chunks themselves into the
# program (Vnode.mapped_frames): nothing is copied, and a 2 MiB-aligned chunk
# is mapped by one 2 MiB page-table leaf. Where guest memory runs out, the
# rest of the file is cached in host memory and mapped by copying.
SEGMENT_BLOCKS = 64
SEGMENT_SIZE = SEGMENT_BLOCKS * ROFS_BLOCK_SIZE
_SEGMENT_SHIFT = SEGMENT_SIZE.bit_length() - 1
CHUNK_SHIFT = 21
CHUNK_SIZE = 1 << CHUNK_SHIFT
_PAGE_SIZE = 4096
# A chunk whose frames could not be had: its segments live in host memory.
_NO_FRAMES = -1

# Every object reports these permission bits, whatever its type: ROFS stores
# none, and OSv reports r-x for everyone.
PERMISSIONS = 0o555
# A directory's size is that of one inode record, as OSv reports it.
DIRECTORY_SIZE = INODE.size

_DEV_PREFIX = "/dev/"


class RoFs(FileSystemType):
    """The ``rofs`` type: OSv's read-only file system on a block device.

    The device string names one of ``devices`` (``/dev/vblk0.1`` or
    ``vblk0.1``). Mount options: ``cache=on`` (the default) or ``cache=off``
    (every read goes to the device, as OSv's ``--disable_rofs_cache``);
    ``ro`` and ``defaults`` are accepted and change nothing.
    """

    name = "rofs"
    nodev = False

    def __init__(
        self,
        devices: Mapping[str, BlockDevice] | None = None,
        frames: PhysicalMemory | None = None,
    ) -> None:
        self.devices = dict(devices or {})
        self.frames = frames

    @classmethod
    def for_kernel(cls, kernel: object) -> RoFs:
        """The type as a kernel mounts it: over the kernel's block devices,
        caching in the kernel's guest memory."""
        return cls(getattr(kernel, "block_devices", {}), getattr(kernel, "phys", None))

    @classmethod
    def mkfs(cls, entries: Iterable[Entry], output: BinaryIO) -> RofsSummary:
        """Write a ROFS holding ``entries`` (manifest order) to ``output``."""
        return write_rofs(entries, output)

    def mount(self, vfs: Vfs, device: str, options: str, readonly: bool) -> Mount:
        cached = True
        for option in filter(None, options.split(",")):
            if option in ("cache=on", "cache=off"):
                cached = option == "cache=on"
            elif option not in ("ro", "defaults"):
                raise FsError(errno.EINVAL, f"rofs: unknown mount option {option!r}")
        name = device[len(_DEV_PREFIX) :] if device.startswith(_DEV_PREFIX) else device
        block = self.devices.get(name)
        if block is None:
            raise FsError(errno.ENXIO, f"rofs: no block device {device!r}")
        metadata = read_metadata(block)
        mount = RofsMount(
            self.name, device, options, metadata, block, cached, self.frames
        )
        mount.root = mount.vnode(ROOT_INODE)
        logger.info(
            "rofs: mounted %s (%d inodes, cache %s)",
            device,
            len(metadata.inodes),
            "on" if cached else "off",
        )
        return mount


class RofsMount(Mount):
    """A mounted ROFS: its checked metadata, its vnodes and its read cache.

    ``stats`` counts, since the mount, the nanoseconds spent reading the
    device, the blocks read, the blocks kept in the cache, and the cache's
    hits and misses (in segments).
    """

    magic = ROFS_MAGIC

    def __init__(
        self,
        fstype: str,
        device: str,
        options: str,
        metadata: RofsMetadata,
        block: BlockDevice,
        cached: bool,
        frames: PhysicalMemory | None = None,
    ) -> None:
        super().__init__(fstype, device, options, MS_RDONLY)
        self.metadata = metadata
        self.block = block
        self.cached = cached
        self.frames = frames
        self._chunks: dict[int, list[int | None]] = {}
        self.stats = {
            "read_ns": 0,
            "blocks_read": 0,
            "blocks_cached": 0,
            "hits": 0,
            "misses": 0,
        }
        self._vnodes: dict[int, RofsVnode] = {}
        self._segments: dict[int, list[tuple[memoryview, int] | None]] = {}

    def vnode(self, inode_no: int) -> RofsVnode:
        """The vnode of inode ``inode_no`` (one per inode for the mount's life)."""
        vnode = self._vnodes.get(inode_no)
        if vnode is None:
            inode = self.metadata.inode(inode_no)
            if inode.mode == S_IFDIR:
                vnode = RofsDirectory(self, inode)
            elif inode.mode == S_IFLNK:
                vnode = RofsSymlink(self, inode)
            else:
                vnode = RofsFile(self, inode)
            self._vnodes[inode_no] = vnode
        return vnode

    def statfs(self) -> StatFs:
        """What OSv's rofs_statfs reports: no free space, no name limit given."""
        superblock = self.metadata.superblock
        return StatFs(
            f_type=self.magic,
            f_bsize=superblock.block_size,
            f_blocks=superblock.structure_info_first_block
            + superblock.structure_info_blocks_count,
            f_bfree=0,
            f_bavail=0,
            f_files=superblock.inodes_count,
            f_ffree=0,
            f_fsid=self.mount_id,
            f_namelen=0,
            f_flags=self.statfs_flags(),
        )

    def unmount(self) -> None:
        stats = self.stats
        lookups = stats["hits"] + stats["misses"]
        ratio = 100.0 * stats["hits"] / lookups if lookups else 0.0
        logger.info(
            "rofs %s: %.3f ms reading, %d blocks read, %d blocks cached, "
            "cache hit ratio %.1f%%",
            self.device,
            stats["read_ns"] / 1e6,
            stats["blocks_read"],
            stats["blocks_cached"],
            ratio,
        )
        self._segments.clear()
        self._vnodes.clear()
        if self.frames is not None:
            for inode_no, chunks in self._chunks.items():
                count = self.metadata.inode(inode_no).count
                for index, pa in enumerate(chunks):
                    if pa is not None and pa != _NO_FRAMES:
                        self.frames.free(
                            pa, self._chunk_size(count, index) // _PAGE_SIZE
                        )
        self._chunks.clear()

    # -- file data --------------------------------------------------------------

    def read_file(self, inode: Inode, offset: int, buffer: memoryview) -> int:
        """Read the file ``inode`` from ``offset`` into ``buffer``; return the count."""
        end = min(inode.count, offset + len(buffer))
        if offset >= end:
            return 0
        if not self.cached:
            start = inode.data_offset * ROFS_BLOCK_SIZE + offset
            self._read_device(start, buffer[: end - offset])
            return end - offset
        done = 0
        for piece in self._cached_pieces(inode, offset, end):
            buffer[done : done + len(piece)] = piece
            done += len(piece)
        return done

    def read_bytes(self, inode: Inode, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of the file ``inode`` from ``offset``."""
        end = min(inode.count, offset + size)
        if offset >= end:
            return b""
        if not self.cached:
            buffer = bytearray(end - offset)
            self.read_file(inode, offset, memoryview(buffer))
            return bytes(buffer)
        # Joining views of the cached segments copies the data once.
        return b"".join(self._cached_pieces(inode, offset, end))

    def _cached_pieces(self, inode: Inode, offset: int, end: int) -> list[memoryview]:
        """Views of the cache covering [offset, end), after loading what is missing.

        Each segment is kept as (buffer, start): the buffer of the device
        read that loaded it, and where the segment starts in it. Segments
        loaded together lie one after another in one buffer, so a piece runs
        on to the end of its buffer: a read that spans many segments copies
        a few large pieces rather than one per segment.
        """
        segments = self._segments.get(inode.inode_no)
        if segments is None:
            segments = [None] * ((inode.count + SEGMENT_SIZE - 1) >> _SEGMENT_SHIFT)
            self._segments[inode.inode_no] = segments
        last = (end - 1) >> _SEGMENT_SHIFT
        pieces = []
        hits = 0
        position = offset
        while position < end:
            index = position >> _SEGMENT_SHIFT
            entry = segments[index]
            hit = entry is not None
            if not hit:
                self._load_segments(inode, segments, index, last)
                entry = segments[index]
            buffer, start = entry
            start += position - (index << _SEGMENT_SHIFT)
            length = min(len(buffer) - start, end - position)
            pieces.append(buffer[start : start + length])
            if hit:
                # Every segment the piece touches was already in the cache.
                hits += ((position + length - 1) >> _SEGMENT_SHIFT) - index + 1
            position += length
        self.stats["hits"] += hits
        return pieces

    def _load_segments(
        self,
        inode: Inode,
        segments: list[tuple[memoryview, int] | None],
        first: int,
        last: int,
    ) -> None:
        """Read the missing segments from ``first`` on (at most to ``last``) at once."""
        stop = first + 1
        while stop <= last and segments[stop] is None:
            stop += 1
        start = first << _SEGMENT_SHIFT
        length = min(stop << _SEGMENT_SHIFT, inode.count) - start
        if self.frames is None:
            self._load_run(inode, segments, start, memoryview(bytearray(length)))
        else:
            # The run is read chunk by chunk, straight into guest frames.
            position, end = start, start + length
            while position < end:
                index = position >> CHUNK_SHIFT
                piece_end = min(end, (index + 1) << CHUNK_SHIFT)
                pa = self._chunk(inode, index)
                if pa == _NO_FRAMES:
                    view = memoryview(bytearray(piece_end - position))
                else:
                    at = pa + position - (index << CHUNK_SHIFT)
                    view = self.frames.ram[at : at + piece_end - position]
                self._load_run(inode, segments, position, view)
                position = piece_end
        self.stats["misses"] += stop - first
        self.stats["blocks_cached"] += -(-length // ROFS_BLOCK_SIZE)

    def _load_run(
        self,
        inode: Inode,
        segments: list[tuple[memoryview, int] | None],
        start: int,
        view: memoryview,
    ) -> None:
        """Fill ``view`` with the file's bytes from ``start`` (a segment boundary).

        One device read fills one buffer; its segments are places in it, so
        nothing is copied, and the buffer lives as long as they do.
        """
        self._read_device(inode.data_offset * ROFS_BLOCK_SIZE + start, view)
        view = view.toreadonly()
        first = start >> _SEGMENT_SHIFT
        for index in range(first, first + -(-len(view) // SEGMENT_SIZE)):
            segments[index] = (view, (index - first) << _SEGMENT_SHIFT)

    @staticmethod
    def _chunk_size(count: int, index: int) -> int:
        """Bytes of frames chunk ``index`` of a ``count``-byte file takes."""
        rest = count - (index << CHUNK_SHIFT)
        return min(CHUNK_SIZE, -(-rest // _PAGE_SIZE) * _PAGE_SIZE)

    def _chunk(self, inode: Inode, index: int) -> int:
        """The frames of chunk ``index`` of the file (_NO_FRAMES without them)."""
        chunks = self._chunks.get(inode.inode_no)
        if chunks is None:
            chunks = [None] * -(-inode.count // CHUNK_SIZE)
            self._chunks[inode.inode_no] = chunks
        pa = chunks[index]
        if pa is None:
            npages = self._chunk_size(inode.count, index) // _PAGE_SIZE
            try:
                pa = self.frames.allocate(npages, 0)
            except OutOfMemoryError as error:
                logger.warning(
                    "rofs %s: cache kept in host memory: %s", self.device, error
                )
                pa = _NO_FRAMES
            chunks[index] = pa
        return pa

    def mapped_frames(
        self, inode: Inode, offset: int, length: int
    ) -> list[tuple[int, int]] | None:
        """Runs of cache frames holding the file from ``offset`` (see Vnode)."""
        if self.frames is None or not self.cached:
            return None
        end = min(offset + length, -(-inode.count // _PAGE_SIZE) * _PAGE_SIZE)
        if offset >= end:
            return None
        self._cached_pieces(inode, offset, min(end, inode.count))
        chunks = self._chunks.get(inode.inode_no)
        runs = []
        position = offset
        while position < end:
            index = position >> CHUNK_SHIFT
            pa = chunks[index] if chunks is not None else None
            if pa is None or pa == _NO_FRAMES:
                return None
            stop = min(end, (index + 1) << CHUNK_SHIFT)
            at = pa + position - (index << CHUNK_SHIFT)
            runs.append((at, (stop - position) // _PAGE_SIZE))
            position = stop
        return runs

    def _read_device(self, offset: int, buffer: memoryview) -> None:
        started = time.monotonic_ns()
        try:
            self.block.readinto(offset, buffer)
        except BlockError as error:
            logger.error("rofs %s: read failed: %s", self.device, error)
            raise FsError(errno.EIO, f"rofs: {error}") from None
        finally:
            self.stats["read_ns"] += time.monotonic_ns() - started
        self.stats["blocks_read"] += -(-len(buffer) // ROFS_BLOCK_SIZE)


def _time_of(mtimes: list[int] | None, inode_no: int) -> int:
    """An inode's time from the file system's time table; the epoch without one."""
    return 0 if mtimes is None else mtimes[inode_no - 1]


class RofsVnode(Vnode):
    """A ROFS object: attributes from its inode, every change refused with EROFS."""

    mount: RofsMount

    def __init__(self, mount: RofsMount, inode: Inode, size: int, nlink: int) -> None:
        super().__init__(
            mount,
            inode.inode_no,
            inode.mode | PERMISSIONS,
            nlink=nlink,
            size=size,
            time_ns=_time_of(mount.metadata.mtimes, inode.inode_no),
        )
        self.inode = inode

    @property
    def blocks(self) -> int:
        return 0

    def setattr(self, **_: object) -> None:
        raise FsError(errno.EROFS, "read-only file system")


class RofsDirectory(RofsVnode):
    """A ROFS directory; its names are looked up through a table built on first use."""

    def __init__(self, mount: RofsMount, inode: Inode) -> None:
        subdirectories = mount.metadata.subdirectories.get(inode.inode_no, 0)
        super().__init__(mount, inode, DIRECTORY_SIZE, 2 + subdirectories)
        self._names: dict[str, int] | None = None

    def lookup(self, name: str) -> Vnode:
        if name == "..":
            parent = self.mount.metadata.parents.get(self.ino, self.ino)
            return self.mount.vnode(parent)
        if name == ".":
            return self
        names = self._names
        if names is None:
            names = {}
            for entry in self.mount.metadata.children(self.inode):
                # Should a name appear twice, the first one wins, as in
                # OSv's linear search.
                names.setdefault(os.fsdecode(entry.name), entry.inode_no)
            self._names = names
        inode_no = names.get(name)
        if inode_no is None:
            raise FsError(errno.ENOENT, f"no entry {name!r}")
        return self.mount.vnode(inode_no)

    def readdir(self) -> list[tuple[str, int, int]]:
        metadata = self.mount.metadata
        return [
            (
                os.fsdecode(entry.name),
                entry.inode_no,
                metadata.inode(entry.inode_no).mode >> 12,
            )
            for entry in metadata.children(self.inode)
        ]


class RofsFile(RofsVnode):
    """A ROFS regular file: reads go through the mount's segment cache."""

    def __init__(self, mount: RofsMount, inode: Inode) -> None:
        super().__init__(mount, inode, inode.count, 1)

    @property
    def blocks(self) -> int:
        return -(-self.size // ROFS_BLOCK_SIZE)

    def read(self, offset: int, size: int) -> bytes:
        return self.mount.read_bytes(self.inode, offset, size)

    def readinto(self, offset: int, buf: memoryview) -> int:
        return self.mount.read_file(self.inode, offset, buf)

    def mapped_frames(self, offset: int, length: int) -> list[tuple[int, int]] | None:
        return self.mount.mapped_frames(self.inode, offset, length)

    def write(self, offset: int, data: bytes | memoryview) -> int:
        raise FsError(errno.EROFS, "read-only file system")

    def truncate(self, size: int) -> None:
        raise FsError(errno.EROFS, "read-only file system")


class RofsSymlink(RofsVnode):
    """A ROFS symbolic link.

    Its size is the length of its target, as POSIX asks of lstat (programs
    size their readlink buffers by it); OSv reports 512 instead.
    """

    def __init__(self, mount: RofsMount, inode: Inode) -> None:
        self.target = mount.metadata.symlinks[inode.data_offset]
        super().__init__(mount, inode, len(self.target), 1)

    def readlink(self) -> str:
        return os.fsdecode(self.target)
