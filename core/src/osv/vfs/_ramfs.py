"""ramfs: a read-write file tree kept entirely in host memory."""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import os
import stat as statmod
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._abi import MS_RDONLY, RAMFS_MAGIC, RENAME_EXCHANGE, RENAME_NOREPLACE
from ._errors import FsError
from ._file import File
from ._pipe import PipeFile, PipeVnode
from ._stat import StatFs
from ._vnode import FileSystemType, Mount, Vnode

if TYPE_CHECKING:
    from ._vfs import Vfs

logger = logging.getLogger(__name__)

# A directory's st_size is each file system's own choice (tmpfs counts 20
# bytes per entry, ext4 whole blocks). ramfs reports what ext4, the usual
# host file system, reports for a small directory: one 4 KiB block. Then
# "ls -l" in the guest prints what it prints on the host.
_DIR_SIZE = 4096


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
    ) -> None:
        super().__init__(fstype, device, options, flags)
        self._inos = itertools.count(1)
        self.memory = memory
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
                self.symlink(name, node.readlink())
                made += 1
            elif node.is_reg:
                self.create(name, node.mode).back_by(node)
                made += 1
            else:
                logger.info("ramfs: %r left out of the copy (not a regular file)", name)
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
        node.nlink -= 1
        node.ctime = self.mtime
        if (
            node.nlink == 0
            and isinstance(node, RamFile)
            and type(node.data) is bytearray
        ):
            # The data stays readable through open descriptors, but it no
            # longer counts against the file system's size.
            self.mount.charge(-len(node.data))

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
                target.nlink -= 1
            target.ctime = now
            new_dir._remove(new_name, now)

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


class RamFile(Vnode):
    """A ramfs regular file.

    ``data`` holds the bytes written so far; ``size`` may run past its end,
    and that tail reads as zeros. Growing a file with truncate therefore
    costs no memory until the new part is written.
    """

    mount: RamMount

    def __init__(self, mount: RamMount, mode: int) -> None:
        super().__init__(mount, mount.next_ino(), mode)
        self.data: bytearray | memoryview = bytearray()
        # A file of another (read-only) file system whose bytes this one
        # reads until its first change.
        self.lower: Vnode | None = None

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
        if self.lower is not None:
            return self.lower.mapped_frames(offset, length)
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
        stored = self.size if self.lower is not None else len(self.data)
        return (stored + 4095) // 4096 * 8

    def read(self, offset: int, size: int) -> bytes:
        end = min(self.size, offset + size)
        if offset >= end:
            return b""
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
        self._copy_up()
        if size < len(self.data):
            data = self._own_data()
            self.mount.charge(size - len(data))
            del data[size:]
        self.size = size
        self._touch()


class RamSymlink(Vnode):
    """A ramfs symbolic link."""

    def __init__(self, mount: RamMount, target: str) -> None:
        super().__init__(
            mount,
            mount.next_ino(),
            statmod.S_IFLNK | 0o777,
            size=len(os.fsencode(target)),
        )
        self.target = target

    @property
    def blocks(self) -> int:
        return 0

    def readlink(self) -> str:
        return self.target


class RamFs(FileSystemType):
    """The ``ramfs`` type: every mount is a new, empty tree in memory.

    Options: ``mode=<octal>`` sets the root's permissions (default 0755);
    other options are ignored, as Linux's ramfs ignores them.
    """

    name = "ramfs"

    def __init__(self, memory: Callable[[], tuple[int, int]] | None = None) -> None:
        self.memory = memory

    @classmethod
    def for_kernel(cls, kernel) -> RamFs:  # noqa: ANN001
        """A ramfs that reports the guest's memory as its size (see statfs)."""
        phys = kernel.phys
        return cls(lambda: (phys.size, phys.free_frames * 4096))

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
            self.name, device, options, MS_RDONLY if readonly else 0, self.memory
        )
        mount.root = RamDir(mount, root_mode, None)
        return mount
