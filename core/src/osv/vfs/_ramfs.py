"""ramfs: a read-write file tree kept entirely in host memory."""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import stat as statmod
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from osv.mm import OutOfMemoryError

from ._abi import MS_RDONLY, RAMFS_MAGIC, RENAME_EXCHANGE, RENAME_NOREPLACE
from ._errors import FsError
from ._file import File
from ._pipe import PipeFile, PipeVnode
from ._stat import StatFs
from ._vnode import FileSystemType, Mount, SymlinkVnode, Vnode

if TYPE_CHECKING:
    from osv.mm import AddressSpace, PhysicalMemory

    from ._vfs import Vfs

logger = logging.getLogger(__name__)

# A directory's st_size is each file system's own choice (tmpfs counts 20
# bytes per entry, ext4 whole blocks). ramfs reports what ext4, the usual
# host file system, reports for a small directory: one 4 KiB block. Then
# "ls -l" in the guest prints what it prints on the host.
_DIR_SIZE = 4096

# A file kept in guest frames (see RamFile) holds them in chunks of 2 MiB.
CHUNK_SHIFT = 21
CHUNK_SIZE = 1 << CHUNK_SHIFT
_PAGE_SIZE = 4096
_CHUNK_PAGES = CHUNK_SIZE // _PAGE_SIZE


class RamMount(Mount):
    """A mounted ramfs; hands out inode numbers from 1 (the root)."""

    magic = RAMFS_MAGIC

    def __init__(
        self,
        fstype: str,
        device: str,
        options: str,
        flags: int,
        memory: Callable[[], tuple[int, int]] | None = None,
        frames: PhysicalMemory | None = None,
    ) -> None:
        super().__init__(fstype, device, options, flags)
        self._inos = itertools.count(1)
        self.memory = memory
        #: The kernel's guest memory, where files mapped shared keep their
        #: bytes; None outside a kernel (such files cannot be mapped so).
        self.frames = frames
        self.used = 0

    def next_ino(self) -> int:
        return next(self._inos)

    @property
    def capacity(self) -> int | None:
        """Bytes of file data the mount may hold: half the guest's memory.

        That is tmpfs's default size; file data lives in host memory, and
        the limit keeps a guest from using more of it than its -m allows.
        """
        return None if self.memory is None else self.memory()[0] // 2

    def charge(self, growth: int) -> None:
        """Account for file data growing (or shrinking); ENOSPC past capacity."""
        capacity = self.capacity
        if growth > 0 and capacity is not None and self.used + growth > capacity:
            raise FsError(errno.ENOSPC, "ramfs is full (half of the guest's memory)")
        self.used += growth

    def statfs(self) -> StatFs:
        """With the kernel's memory known, sizes as tmpfs reports them.

        The capacity (half the guest's memory) and what files leave of it
        (tools such as df and shutil.disk_usage expect sizes of a memory file
        system); without the kernel's memory, ramfs's zeros.
        """
        result = super().statfs()
        if self.memory is None:
            return result
        blocks = self.capacity // 4096
        available = max(0, self.capacity - self.used) // 4096
        return dataclasses.replace(
            result, f_blocks=blocks, f_bfree=available, f_bavail=available
        )


class RamDir(Vnode):
    """A ramfs directory: a dict of names to vnodes, in creation order."""

    mount: RamMount

    def __init__(self, mount: RamMount, mode: int, parent: RamDir | None) -> None:
        super().__init__(
            mount,
            mount.next_ino(),
            statmod.S_IFDIR | mode,
            nlink=2,
            size=_DIR_SIZE,
        )
        self.entries: dict[str, Vnode] = {}
        self.parent = parent if parent is not None else self

    def lookup(self, name: str) -> Vnode:
        try:
            return self.entries[name]
        except KeyError:
            if name == "..":
                return self.parent
            if name == ".":
                return self
            raise FsError(errno.ENOENT, f"no entry {name!r}") from None

    def readdir(self) -> list[tuple[str, int, int]]:
        return [(name, node.ino, node.d_type) for name, node in self.entries.items()]

    def create(self, name: str, mode: int) -> Vnode:
        return self._add(name, RamFile(self.mount, statmod.S_IFREG | (mode & 0o7777)))

    def mkdir(self, name: str, mode: int) -> Vnode:
        node = self._add(name, RamDir(self.mount, mode & 0o7777, self))
        self.nlink += 1
        return node

    def symlink(self, name: str, target: str) -> Vnode:
        return self._add(name, RamSymlink(self.mount, target))

    def populate_from(self, lower: Vnode) -> int:
        """Fill this empty directory with the tree of ``lower``, copied on write.

        Directories and symbolic links are made here; each regular file
        reads from its ``lower`` counterpart until it is first changed (see
        RamFile.back_by), so nothing is copied at once. Other kinds of files
        are left out with a log line. Returns the number of entries made.
        """
        made = 0
        for name, _, _ in lower.readdir():
            if name in (".", ".."):
                continue
            node = lower.lookup(name)
            if node.is_dir:
                made += 1 + self.mkdir(name, node.mode).populate_from(node)
            elif node.is_symlink:
                link = self.symlink(name, node.readlink())
                link.atime, link.mtime = node.atime, node.mtime
                made += 1
            elif node.is_reg:
                self.create(name, node.mode).back_by(node)
                made += 1
            else:
                logger.info("ramfs: %r left out of the copy (not a regular file)", name)
        # Last: each name added above moved this directory's times to now.
        self.atime, self.mtime = lower.atime, lower.mtime
        return made

    def mknod(self, name: str, mode: int) -> Vnode:
        """mknod(2) for regular files and named pipes (FIFOs)."""
        kind = statmod.S_IFMT(mode)
        if kind in (0, statmod.S_IFREG):
            return self.create(name, mode)
        if kind == statmod.S_IFIFO:
            return self._add(name, RamFifo(self.mount, mode & 0o7777))
        raise FsError(errno.EPERM, "ramfs holds no device or socket nodes")

    def link(self, name: str, target: Vnode) -> None:
        if target.mount is not self.mount:
            raise FsError(errno.EXDEV, "hard links cannot cross mounts")
        if target.is_dir:
            raise FsError(errno.EPERM, "hard links to directories are not allowed")
        self._add(name, target)
        target.nlink += 1
        target.ctime = self.mtime

    def unlink(self, name: str) -> None:
        node = self._existing(name)
        if node.is_dir:
            raise FsError(errno.EISDIR, f"{name!r} is a directory")
        self._remove(name)
        node.ctime = self.mtime
        _drop_link(node)

    def rmdir(self, name: str) -> None:
        node = self._existing(name)
        if not isinstance(node, RamDir):
            raise FsError(errno.ENOTDIR, f"{name!r} is not a directory")
        if node.entries:
            raise FsError(errno.ENOTEMPTY, f"{name!r} is not empty")
        self._remove(name)
        self.nlink -= 1
        node.nlink = 0
        node.ctime = self.mtime

    def rename(
        self, old_name: str, new_dir: Vnode, new_name: str, flags: int = 0
    ) -> None:
        if not isinstance(new_dir, RamDir) or new_dir.mount is not self.mount:
            raise FsError(errno.EXDEV, "rename across mounts")
        source = self._existing(old_name)
        if new_dir.nlink == 0:
            raise FsError(errno.ENOENT, "the target directory has been removed")
        target = new_dir.entries.get(new_name)
        if flags & RENAME_EXCHANGE:
            if target is None:
                raise FsError(errno.ENOENT, f"no entry {new_name!r}")
            self._exchange(old_name, source, new_dir, new_name, target)
            return
        if target is source:
            return
        now = time.time_ns()
        if target is not None:
            if flags & RENAME_NOREPLACE:
                raise FsError(errno.EEXIST, f"{new_name!r} exists")
            if isinstance(target, RamDir):
                if not source.is_dir:
                    raise FsError(errno.EISDIR, f"{new_name!r} is a directory")
                if target.entries:
                    raise FsError(errno.ENOTEMPTY, f"{new_name!r} is not empty")
                target.nlink = 0
                new_dir.nlink -= 1
            else:
                if source.is_dir:
                    raise FsError(errno.ENOTDIR, f"{new_name!r} is not a directory")
            target.ctime = now
            new_dir._remove(new_name, now)
            if not isinstance(target, RamDir):
                _drop_link(target)

        self._remove(old_name, now)
        new_dir._insert(new_name, source, now)
        if isinstance(source, RamDir) and new_dir is not self:
            source.parent = new_dir
            self.nlink -= 1
            new_dir.nlink += 1
        source.ctime = now

    def _exchange(
        self,
        old_name: str,
        source: Vnode,
        new_dir: RamDir,
        new_name: str,
        target: Vnode,
    ) -> None:
        now = time.time_ns()
        self.entries[old_name] = target
        new_dir.entries[new_name] = source
        if new_dir is not self:
            # A directory moving to the other parent takes its ".." link along.
            for node, parent in ((source, new_dir), (target, self)):
                if isinstance(node, RamDir):
                    node.parent.nlink -= 1
                    node.parent = parent
                    parent.nlink += 1
        for node in (source, target, self, new_dir):
            node.ctime = now
        self.mtime = new_dir.mtime = now

    def _existing(self, name: str) -> Vnode:
        try:
            return self.entries[name]
        except KeyError:
            raise FsError(errno.ENOENT, f"no entry {name!r}") from None

    def _add(self, name: str, node: Vnode) -> Vnode:
        if self.nlink == 0:
            raise FsError(errno.ENOENT, "the directory has been removed")
        if name in self.entries:
            raise FsError(errno.EEXIST, f"{name!r} exists")
        self._insert(name, node, time.time_ns())
        return node

    def _insert(self, name: str, node: Vnode, now: int) -> None:
        self.entries[name] = node
        self._touch(now)

    def _remove(self, name: str, now: int | None = None) -> None:
        del self.entries[name]
        self._touch(now)


class RamFifo(Vnode):
    """A named pipe: every open is an end of the one pipe the node holds."""

    # TODO: opening a FIFO does not wait for the other end to be opened, as
    # POSIX requires of a blocking open; reads see end of file until a
    # writer has opened it.

    def __init__(self, mount: RamMount, perm: int) -> None:
        super().__init__(mount, mount.next_ino(), statmod.S_IFIFO | perm)
        self.pipe: PipeVnode | None = None

    def open(self, flags: int, path: str) -> File:
        if self.pipe is None or (self.pipe.readers == 0 and self.pipe.writers == 0):
            self.pipe = PipeVnode()
        return PipeFile(self.pipe, flags)


def _drop_link(node: Vnode) -> None:
    """One directory entry for ``node`` went away (unlink, rename over it)."""
    if isinstance(node, RamFile):
        node.drop_link()
    else:
        node.nlink -= 1


def _chunk_pieces(offset: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(chunk index, offset in the chunk, length) for each chunk [offset, end) meets."""
    while offset < end:
        index = offset >> CHUNK_SHIFT
        at = offset & (CHUNK_SIZE - 1)
        length = min(end - offset, CHUNK_SIZE - at)
        yield index, at, length
        offset += length


def _chunk_count(size: int) -> int:
    return (size + CHUNK_SIZE - 1) >> CHUNK_SHIFT


class RamFile(Vnode):
    """A ramfs regular file.

    Its bytes are in one of four places. ``lower``: a file of another
    (read-only) file system, read until the first change (back_by).
    ``data`` as a read-only memoryview: bytes of the boot image, shared
    until the first change (share). ``data`` as a bytearray: the bytes
    written so far; ``size`` may run past its end, and that tail reads as
    zeros, so growing a file with truncate costs no memory until the new
    part is written. ``chunks``: guest frames, once the file is mapped
    shared (lend_frames); it stays there until nothing refers to it.
    """

    # Rationale: a shared mapping must see write(2) at once, and a store
    # through it must be seen by read(2) and by every other mapping, as on
    # Linux, where all of them go through one page cache. Copying between a
    # host buffer and the mappings (at msync, munmap, each read) cannot give
    # that, so a file that gets a shared mapping moves its bytes into guest
    # frames and from then on reads and writes them there: every mapping
    # maps those very frames (osv.mm's borrowed areas), and the mappings
    # are the file. Chunk k holds bytes [k * 2 MiB, (k + 1) * 2 MiB) in 512
    # frames allocated 2 MiB-aligned, so that a mapping of a whole chunk
    # takes 2 MiB page-table leaves, and a growing file never moves frames
    # a program maps. A chunk never written nor mapped is a hole (None)
    # and reads as zeros. Chunks count against the mount's capacity.
    #
    # The frames go back to the allocator only once nothing refers to the
    # file: no directory entry (nlink), no open file description
    # (RamOpenFile counts them) and no mapping (address spaces say when
    # they map the file and when an area mapping it goes: the FrameLender
    # calls). A frame must never be freed while mapped, since KVM's shadow
    # MMU could keep serving a stale translation to it. For the same
    # reason, a file that shrinks first makes every mapping drop the cut
    # pages (AddressSpace.refit_lender), then frees them.

    mount: RamMount

    def __init__(self, mount: RamMount, mode: int) -> None:
        super().__init__(mount, mount.next_ino(), mode)
        self.data: bytearray | memoryview = bytearray()
        # A file of another (read-only) file system whose bytes this one
        # reads until its first change.
        self.lower: Vnode | None = None
        #: Frame addresses of the 2 MiB chunks (None: a hole), or None
        #: while the bytes are elsewhere.
        self.chunks: list[int | None] | None = None
        self._opens = 0
        # Address spaces that map the file's frames. Weak: an address space
        # that nothing else holds maps nothing any more. Made on the first
        # mapping: an image's tree holds thousands of files, most never
        # mapped, and a WeakSet costs about as much to make as the file.
        self._spaces: weakref.WeakSet[AddressSpace] | None = None

    def open(self, flags: int, path: str) -> File:
        return RamOpenFile(self, flags, path)

    def back_by(self, lower: Vnode) -> None:
        """Read ``lower``'s bytes until the file is first changed (copy on write).

        The file takes ``lower``'s size and times; mmap shares ``lower``'s
        cached pages where its file system offers them.
        """
        self.lower = lower
        self.data = bytearray()
        self.size = lower.size
        self.atime, self.mtime, self.ctime = lower.atime, lower.mtime, lower.ctime

    def _copy_up(self) -> None:
        lower = self.lower
        if lower is not None:
            self.lower = None
            content = bytearray(self.size)
            count = lower.readinto(0, memoryview(content))
            del content[count:]
            self.mount.charge(len(content))
            self.data = content

    def mapped_frames(self, offset: int, length: int) -> list[tuple[int, int]] | None:
        # Only the lower file's cache: frames of this file's own are lent
        # through lend_frames, which tracks who maps them.
        if self.lower is not None:
            return self.lower.mapped_frames(offset, length)
        return None

    def contents_view(self) -> memoryview | None:
        # Shared bytes are replaced, never changed, when the file is written.
        data = self.data
        if type(data) is memoryview and self.lower is None and self.chunks is None:
            return data[: self.size]
        return None

    def content_token(self) -> object | None:
        # Shared bytes are never changed in place: a write replaces them.
        data = self.data
        if type(data) is memoryview and self.lower is None and self.chunks is None:
            return data
        return None

    def share(self, content: memoryview) -> None:
        """Make ``content`` the file's data without copying it (copied on write).

        Used for files unpacked from the image, whose bytes already sit in
        memory for the life of the VM, as OSv serves bootfs files from the
        kernel image. Shared bytes do not count against the mount's size.
        """
        self.data = content.toreadonly()
        self.size = len(content)

    def _own_data(self) -> bytearray:
        """The data as a private bytearray, copying shared bytes first."""
        self._copy_up()
        if type(self.data) is not bytearray:
            self.mount.charge(len(self.data))
            self.data = bytearray(self.data)
        return self.data

    @property
    def blocks(self) -> int:
        chunks = self.chunks
        if chunks is not None:
            # The frames of its chunks that hold part of the file.
            pages = (self.size + _PAGE_SIZE - 1) // _PAGE_SIZE
            held = sum(
                min(_CHUNK_PAGES, pages - index * _CHUNK_PAGES)
                for index, pa in enumerate(chunks)
                if pa is not None
            )
            return max(held, 0) * 8
        stored = self.size if self.lower is not None else len(self.data)
        return (stored + 4095) // 4096 * 8

    # -- reading and writing ------------------------------------------------

    def read(self, offset: int, size: int) -> bytes:
        end = min(self.size, offset + size)
        if offset >= end:
            return b""
        if self.chunks is not None:
            ram = self.mount.frames.ram
            parts = []
            for index, at, length in _chunk_pieces(offset, end):
                pa = self.chunks[index]
                if pa is None:
                    parts.append(bytes(length))
                else:
                    parts.append(ram[pa + at : pa + at + length])
            return b"".join(parts)
        if self.lower is not None:
            return self.lower.read(offset, end - offset)
        data = self.data
        if end <= len(data):
            with memoryview(data) as view:
                return bytes(view[offset:end])
        return bytes(data[offset:end]) + bytes(end - max(offset, len(data)))

    def readinto(self, offset: int, buf: memoryview) -> int:
        end = min(self.size, offset + len(buf))
        if offset >= end:
            return 0
        if self.chunks is not None:
            ram = self.mount.frames.ram
            done = 0
            for index, at, length in _chunk_pieces(offset, end):
                pa = self.chunks[index]
                if pa is None:
                    buf[done : done + length] = bytes(length)
                else:
                    buf[done : done + length] = ram[pa + at : pa + at + length]
                done += length
            return done
        if self.lower is not None:
            return self.lower.readinto(offset, buf[: end - offset])
        n = end - offset
        data = self.data
        stored = min(end, len(data)) - offset
        if stored > 0:
            with memoryview(data) as view:
                buf[:stored] = view[offset : offset + stored]
        else:
            stored = 0
        if stored < n:
            buf[stored:n] = bytes(n - stored)
        return n

    def write(self, offset: int, data: bytes | memoryview) -> int:
        n = len(data)
        if self.chunks is not None:
            self._write_frames(offset, data)
            return n
        buf = self._own_data()
        length = len(buf)
        if offset + n > length:
            self.mount.charge(offset + n - length)
        if offset == length:
            buf += data
        elif offset + n <= length:
            buf[offset : offset + n] = data
        else:
            if offset > length:
                buf += bytes(offset - length)
            buf[offset:] = data
        if len(buf) > self.size:
            self.size = len(buf)
        now = time.time_ns()
        self.mtime = now
        self.ctime = now
        return n

    def truncate(self, size: int) -> None:
        if size == self.size:
            return
        if self.chunks is not None:
            self._truncate_frames(size)
            self._touch()
            return
        self._copy_up()
        if size < len(self.data):
            data = self._own_data()
            self.mount.charge(size - len(data))
            del data[size:]
        self.size = size
        self._touch()

    # -- the file in guest frames --------------------------------------------

    def lend_frames(
        self, offset: int, length: int, shared: bool
    ) -> list[tuple[int, int]] | None:
        """Frames for a mapping of the file, which tracks them as their lender.

        A shared mapping first moves the file's bytes into guest frames. A
        private one gets them when the file is there already, or when it is
        a large file unpacked from the image (see below); None otherwise,
        and the kernel copies the file then. Answers runs of (frame address,
        page count) covering [offset, offset + length), both page-aligned
        and within the file; None without the kernel's memory. ENOMEM when
        guest memory or the mount's capacity runs out for a shared mapping.
        """
        if self.chunks is None:
            if self.mount.frames is None:
                return None
            if not shared and not self._worth_frames():
                return None
            try:
                self._move_to_frames()
            except FsError as error:
                if not shared:
                    return None  # the kernel copies the file instead
                raise FsError(errno.ENOMEM, error.message) from None
        try:
            return self.lender_runs(offset, length)
        except OutOfMemoryError as error:
            raise FsError(errno.ENOMEM, str(error)) from None

    def _worth_frames(self) -> bool:
        """Whether private read-only mappings should share this file's frames.

        A dynamic linker maps each library twice (its whole span, then each
        segment over it), so a copy per mapping copies a library's text
        twice, into frames no other program shares. A file unpacked from
        the image never changes, so its bytes are moved into frames once
        and lent to every such mapping. Each file then takes whole 2 MiB
        chunks, which the host backs whole on first touch, so only files of
        at least half a chunk are moved; smaller ones are copied as before.
        """
        return (
            type(self.data) is memoryview
            and self.lower is None
            and self.size >= CHUNK_SIZE // 2
        )

    def lender_runs(self, offset: int, length: int) -> list[tuple[int, int]]:
        """Runs of the frames that hold [offset, offset + length) (see FrameLender).

        Holes get their chunk first; OutOfMemoryError when they cannot.
        """
        runs: list[tuple[int, int]] = []
        for index, at, count in _chunk_pieces(offset, offset + length):
            try:
                pa = self._chunk(index) + at
            except FsError as error:
                raise OutOfMemoryError(error.message) from None
            npages = count // _PAGE_SIZE
            if runs and runs[-1][0] + runs[-1][1] * _PAGE_SIZE == pa:
                runs[-1] = (runs[-1][0], runs[-1][1] + npages)
            else:
                runs.append((pa, npages))
        return runs

    def lent(self, space: AddressSpace) -> None:
        if self._spaces is None:
            self._spaces = weakref.WeakSet()
        self._spaces.add(space)

    def returned(self, space: AddressSpace) -> None:
        if not space.maps_lender(self):
            if self._spaces is not None:
                self._spaces.discard(space)
            self._release_if_unused()

    def opened(self) -> None:
        """An open file description of the file was made."""
        self._opens += 1

    def drop_link(self) -> None:
        """A directory entry for the file went away."""
        self.nlink -= 1
        self._release_if_unused()

    def closed(self) -> None:
        """An open file description of the file was released."""
        self._opens -= 1
        self._release_if_unused()

    def _release_if_unused(self) -> None:
        """Give the file's memory back once nothing can reach its bytes."""
        if self.nlink > 0 or self._opens > 0 or self._spaces:
            return
        chunks = self.chunks
        if chunks is not None:
            self.chunks = None
            self._free_chunks(chunks)
        elif type(self.data) is bytearray:
            self.mount.charge(-len(self.data))
        self.data = bytearray()
        self.lower = None

    def _move_to_frames(self) -> None:
        """Copy the file's bytes into chunks of guest frames; read and write there."""
        lower, data = self.lower, self.data
        stored = self.size if lower is not None else len(data)
        # The bytes held so far stop counting against the mount as the
        # chunks start to.
        held = len(data) if type(data) is bytearray else 0
        self.mount.charge(-held)
        chunks: list[int | None] = [None] * _chunk_count(self.size)
        self.chunks = chunks
        ram = self.mount.frames.ram
        try:
            for index in range(_chunk_count(stored)):
                self._chunk(index)
            source = memoryview(data) if lower is None else None
            for index, at, length in _chunk_pieces(0, stored):
                pa = chunks[index] + at
                position = (index << CHUNK_SHIFT) + at
                if source is None:
                    lower.readinto(position, ram[pa : pa + length])
                else:
                    ram[pa : pa + length] = source[position : position + length]
        except FsError:
            # The bytes stay where they were (a lower file that fails to
            # read, a full mount).
            self.chunks = None
            self._free_chunks(chunks)
            self.mount.charge(held)
            raise
        self.data = bytearray()
        self.lower = None
        logger.debug("ramfs: inode %d moved to guest frames for mmap", self.ino)

    def _chunk(self, index: int) -> int:
        """The frames of chunk ``index``, allocated (zeroed) if it is a hole."""
        chunks = self.chunks
        pa = chunks[index]
        if pa is not None:
            return pa
        self.mount.charge(CHUNK_SIZE)
        frames = self.mount.frames
        try:
            try:
                pa = frames.allocate(_CHUNK_PAGES, 0)
            except OutOfMemoryError:
                # Aligned runs are gone: any run will do, with 4 KiB leaves.
                pa = frames.allocate(_CHUNK_PAGES)
        except OutOfMemoryError as error:
            self.mount.charge(-CHUNK_SIZE)
            raise FsError(errno.ENOSPC, str(error)) from None
        chunks[index] = pa
        return pa

    def _free_chunks(self, chunks: list[int | None]) -> None:
        frames = self.mount.frames
        for pa in chunks:
            if pa is not None:
                frames.free(pa, _CHUNK_PAGES)
                self.mount.charge(-CHUNK_SIZE)

    def _write_frames(self, offset: int, data: bytes | memoryview) -> None:
        end = offset + len(data)
        chunks = self.chunks
        if _chunk_count(end) > len(chunks):
            chunks.extend([None] * (_chunk_count(end) - len(chunks)))
        # Every chunk first, so that a full file system fails the whole write.
        pieces = list(_chunk_pieces(offset, end))
        for index, _, _ in pieces:
            self._chunk(index)
        ram = self.mount.frames.ram
        source = memoryview(data)
        done = 0
        for index, at, length in pieces:
            pa = chunks[index] + at
            ram[pa : pa + length] = source[done : done + length]
            done += length
        if end > self.size:
            self.size = end
            self._refit_mappings()
        self._touch()

    def _truncate_frames(self, size: int) -> None:
        old, chunks = self.size, self.chunks
        self.size = size
        if size > old:
            chunks.extend([None] * (_chunk_count(size) - len(chunks)))
            self._refit_mappings()
            return
        # Mappings give up the cut pages before their frames are touched.
        self._refit_mappings()
        keep = _chunk_count(size)
        cut, chunks[keep:] = chunks[keep:], []
        self._free_chunks(cut)
        last = chunks[keep - 1] if keep else None
        if last is None or not size & (CHUNK_SIZE - 1):
            return
        # The cut part of the last chunk must read as zeros should the file
        # grow again; a mapping still shows the rest of the last page, as
        # Linux zeroes the part of a page past the end.
        start = last + (size & (CHUNK_SIZE - 1))
        stop = last + min(old - ((keep - 1) << CHUNK_SHIFT), CHUNK_SIZE)
        page = min((start + _PAGE_SIZE - 1) & ~(_PAGE_SIZE - 1), stop)
        self.mount.frames.ram[start:page] = bytes(page - start)
        if stop > page:
            whole = (stop - page + _PAGE_SIZE - 1) // _PAGE_SIZE
            self.mount.frames.discard(page, whole)

    def _refit_mappings(self) -> None:
        for space in list(self._spaces or ()):
            space.refit_lender(self, self.size)


class RamOpenFile(File):
    """An open ramfs file: the file keeps its bytes while one is open."""

    vnode: RamFile

    def __init__(self, vnode: RamFile, flags: int, path: str = "") -> None:
        super().__init__(vnode, flags, path)
        vnode.opened()

    def release(self) -> None:
        self.vnode.closed()


class RamSymlink(SymlinkVnode):
    """A ramfs symbolic link."""

    def __init__(self, mount: RamMount, target: str) -> None:
        super().__init__(mount, mount.next_ino(), target)


class RamFs(FileSystemType):
    """The ``ramfs`` type: every mount is a new, empty tree in memory.

    Options: ``mode=<octal>`` sets the root's permissions (default 0755);
    other options are ignored, as Linux's ramfs ignores them.
    """

    name = "ramfs"

    def __init__(
        self,
        memory: Callable[[], tuple[int, int]] | None = None,
        frames: PhysicalMemory | None = None,
    ) -> None:
        self.memory = memory
        self.frames = frames

    @classmethod
    def for_kernel(cls, kernel) -> RamFs:  # noqa: ANN001
        """A ramfs that reports the guest's memory as its size (see statfs)
        and keeps files mapped shared in the guest's frames (see RamFile)."""
        phys = kernel.phys
        return cls(lambda: (phys.size, phys.free_frames * 4096), phys)

    def mount(self, vfs: Vfs, device: str, options: str, readonly: bool) -> Mount:
        root_mode = 0o755
        for option in filter(None, options.split(",")):
            key, _, value = option.partition("=")
            if key == "mode":
                try:
                    root_mode = int(value, 8) & 0o7777
                except ValueError:
                    raise FsError(errno.EINVAL, f"bad ramfs mode {value!r}") from None
            else:
                logger.debug("ramfs ignores mount option %r", option)
        mount = RamMount(
            self.name,
            device,
            options,
            MS_RDONLY if readonly else 0,
            self.memory,
            self.frames,
        )
        mount.root = RamDir(mount, root_mode, None)
        return mount
