"""Vnodes, mounts and file-system types: the contract every file system meets."""

from __future__ import annotations

import abc
import errno
import itertools
import os
import stat as statmod
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

from ._abi import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, ST_VALID, makedev
from ._errors import FsError
from ._stat import Stat, StatFs

if TYPE_CHECKING:
    from ._file import File
    from ._vfs import Vfs

# The file-type bits of st_mode (the stat module only has it as a function).
_S_IFMT = 0o170000

# Every mount gets its own anonymous device number (major 0, like Linux's
# tmpfs and procfs) and a mount id for statx; both only ever grow.
_mount_numbers = itertools.count(1)


class Vnode:
    """One file, directory, symlink or device inside a mounted file system.

    Attributes mirror ``struct stat``: ``ino``, ``mode`` (type and permission
    bits), ``nlink``, ``uid``, ``gid``, ``size``, ``rdev``, ``atime``,
    ``mtime`` and ``ctime`` (integers, nanoseconds since the epoch),
    ``blksize``, and ``mount``, the Mount the vnode belongs to (None for
    anonymous objects such as pipes).

    A file system subclasses this and overrides the operations it supports;
    the defaults raise what Linux raises for an object that cannot do them.
    ``ino`` must be unique and stable within a mount: the VFS finds mount
    points by ``(mount, ino)``.

    ``parent_hint`` and ``name_hint`` are kept by the VFS: the directory and
    name through which the vnode was last reached. They only serve
    ``Vfs.realpath``; file systems never need to touch them.
    """

    blksize: ClassVar[int] = 4096

    def __init__(
        self,
        mount: Mount | None,
        ino: int,
        mode: int,
        *,
        nlink: int = 1,
        uid: int = 0,
        gid: int = 0,
        size: int = 0,
        rdev: int = 0,
        time_ns: int | None = None,
    ) -> None:
        now = time.time_ns() if time_ns is None else time_ns
        self.mount = mount
        self.ino = ino
        self.mode = mode
        self.nlink = nlink
        self.uid = uid
        self.gid = gid
        self.size = size
        self.rdev = rdev
        self.atime = now
        self.mtime = now
        self.ctime = now
        self.parent_hint: Vnode | None = None
        self.name_hint: str | None = None

    def __repr__(self) -> str:
        kind = statmod.filemode(self.mode)[0]
        return f"<{type(self).__name__} ino={self.ino} type={kind!r}>"

    # -- attributes ---------------------------------------------------------

    @property
    def is_dir(self) -> bool:
        return statmod.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return statmod.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return statmod.S_ISLNK(self.mode)

    @property
    def d_type(self) -> int:
        """The directory-entry type (DT_*) of this vnode."""
        return (self.mode >> 12) & 0xF

    @property
    def blocks(self) -> int:
        """512-byte blocks in use; whole pages by default, as tmpfs counts."""
        return (self.size + 4095) // 4096 * 8

    def stat(self) -> Stat:
        """The attributes as stat(2) reports them."""
        mount = self.mount
        return Stat(
            st_dev=mount.dev if mount is not None else 0,
            st_ino=self.ino,
            st_mode=self.mode,
            st_nlink=self.nlink,
            st_uid=self.uid,
            st_gid=self.gid,
            st_rdev=self.rdev,
            st_size=self.size,
            st_blksize=self.blksize,
            st_blocks=self.blocks,
            st_atime_ns=self.atime,
            st_mtime_ns=self.mtime,
            st_ctime_ns=self.ctime,
            st_mnt_id=mount.mount_id if mount is not None else 0,
        )

    def setattr(
        self,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ) -> None:
        """Change permission bits, owner or times (ns); None leaves a field alone.

        ``mode`` replaces only the permission bits (0o7777); the type bits
        stay. Any change also moves ctime to now, as on Linux.
        """
        if mode is not None:
            self.mode = (self.mode & _S_IFMT) | (mode & 0o7777)
        if uid is not None:
            self.uid = uid
        if gid is not None:
            self.gid = gid
        if atime_ns is not None:
            self.atime = atime_ns
        if mtime_ns is not None:
            self.mtime = mtime_ns
        self.ctime = time.time_ns()

    # -- directory operations -----------------------------------------------

    def lookup(self, name: str) -> Vnode:
        """The child called ``name``; ``..`` is the parent (the root: itself)."""
        raise self._no_dir_op()

    def create(self, name: str, mode: int) -> Vnode:
        """Create the regular file ``name`` (``mode`` includes S_IFREG)."""
        raise self._no_dir_op()

    def mkdir(self, name: str, mode: int) -> Vnode:
        """Create the directory ``name`` with permission bits ``mode``."""
        raise self._no_dir_op()

    def unlink(self, name: str) -> None:
        """Remove the non-directory entry ``name``."""
        raise self._no_dir_op()

    def rmdir(self, name: str) -> None:
        """Remove the empty directory ``name``."""
        raise self._no_dir_op()

    def rename(
        self, old_name: str, new_dir: Vnode, new_name: str, flags: int = 0
    ) -> None:
        """Move entry ``old_name`` to ``new_name`` in ``new_dir`` (same mount).

        ``flags`` are renameat2's RENAME_NOREPLACE and RENAME_EXCHANGE; the
        VFS has already checked types, loops and mount points.
        """
        raise self._no_dir_op()

    def symlink(self, name: str, target: str) -> Vnode:
        """Create the symbolic link ``name`` pointing at ``target``."""
        raise self._no_dir_op()

    def link(self, name: str, target: Vnode) -> None:
        """Add the entry ``name`` for the existing non-directory ``target``."""
        raise self._no_dir_op()

    def readdir(self) -> Iterable[tuple[str, int, int]]:
        """Entries as (name, ino, d_type), without ``.`` and ``..``."""
        raise self._no_dir_op()

    # -- symlinks -------------------------------------------------------------

    def readlink(self) -> str:
        """The target of a symbolic link."""
        raise FsError(errno.EINVAL, "not a symbolic link")

    # -- file data ------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset``; short or empty at the end."""
        raise self._no_data_op()

    def readinto(self, offset: int, buf: memoryview) -> int:
        """Read into ``buf`` from ``offset``; returns the byte count."""
        data = self.read(offset, len(buf))
        n = len(data)
        buf[:n] = data
        return n

    def contents_view(self) -> memoryview | None:
        """The whole file as a read-only view of memory it already sits in, or None.

        For a file system that holds a file's bytes in host memory that never
        changes (ramfs files unpacked from the image), the kernel reads a
        program through this view instead of copying the file first. A later
        write to the file must leave the view's bytes as they were (the file
        gets new storage). The default, None, makes the caller read.
        """
        return None

    def content_token(self) -> object | None:
        """An object that stands for the file's bytes while they cannot change.

        The same object is answered until the bytes change, and a changed
        file answers another object or None; None also means the file system
        cannot promise this. The kernel uses it to tell that a copy of the
        file it made earlier still holds the file's bytes. The default is
        None.
        """
        return None

    def mapped_frames(self, offset: int, length: int) -> list[tuple[int, int]] | None:
        """Guest frames that hold the file from ``offset``, for mmap; None to copy.

        A file system that keeps file contents in guest memory (a page cache
        in the kernel's frames) may answer runs of (guest-physical address,
        page count) covering [offset, offset + length), stopping early at the
        page that holds the end of the file. The frames must hold the file's
        bytes followed by zeros, and stay allocated and unchanged until the
        file system is unmounted: mappings that never write share them
        instead of copying the file. ``offset`` is page-aligned. The default,
        None, makes the kernel copy the file into the mapping's own frames.
        """
        return None

    def write(self, offset: int, data: bytes | memoryview) -> int:
        """Write ``data`` at ``offset``; returns the byte count."""
        raise self._no_data_op()

    def truncate(self, size: int) -> None:
        """Cut or extend (with zeros) the file to ``size`` bytes."""
        raise self._no_data_op()

    def fsync(self) -> None:
        """Push the file's data to stable storage; memory needs nothing."""

    def open(self, flags: int, path: str) -> File:
        """An open file description for this vnode.

        Devices return their own File subclass here; the VFS has already
        checked flags against the vnode's type and the mount.
        """
        from ._file import File

        return File(self, flags, path)

    # -- helpers for subclasses ----------------------------------------------

    def _no_dir_op(self) -> FsError:
        if not self.is_dir:
            return FsError(errno.ENOTDIR, "not a directory")
        if self.mount is not None and self.mount.readonly:
            return FsError(errno.EROFS, "read-only file system")
        return FsError(errno.EPERM, "operation not supported by this file system")

    def _no_data_op(self) -> FsError:
        if self.is_dir:
            return FsError(errno.EISDIR, "is a directory")
        return FsError(errno.EINVAL, "operation not supported on this file")

    def _touch(self, now: int | None = None) -> None:
        """Move mtime and ctime to now, as a change of contents does."""
        now = time.time_ns() if now is None else now
        self.mtime = now
        self.ctime = now


class SymlinkVnode(Vnode):
    """A symbolic link: its target text, and no data blocks."""

    def __init__(self, mount: Mount | None, ino: int, target: str) -> None:
        super().__init__(
            mount, ino, statmod.S_IFLNK | 0o777, size=len(os.fsencode(target))
        )
        self.target = target

    @property
    def blocks(self) -> int:
        return 0

    def readlink(self) -> str:
        return self.target


class Mount:
    """One mounted file system: its root vnode and where it hangs in the tree.

    The file system sets ``root`` right after creating the Mount. The VFS
    fills ``mountpoint`` (absolute path), ``covered`` (the directory vnode it
    hides, None for the first root) and ``parent`` (the Mount of
    ``covered``). ``flags`` holds MS_* bits; ``open_files`` counts open file
    descriptions, which keep a mount busy.
    """

    magic: ClassVar[int] = 0

    def __init__(
        self, fstype: str, device: str, options: str = "", flags: int = 0
    ) -> None:
        number = next(_mount_numbers)
        self.fstype = fstype
        self.device = device
        self.options = options
        self.flags = flags
        self.dev = makedev(0, number)
        self.mount_id = number
        self.root: Vnode
        self.mountpoint = ""
        self.covered: Vnode | None = None
        self.parent: Mount | None = None
        self.open_files = 0

    def __repr__(self) -> str:
        return f"<Mount {self.fstype} {self.device!r} on {self.mountpoint!r}>"

    @property
    def readonly(self) -> bool:
        return bool(self.flags & MS_RDONLY)

    def statfs(self) -> StatFs:
        """statfs(2) for this mount; memory file systems report no sizes.

        That is what Linux's ramfs and procfs report too (simple_statfs):
        a block size, a name limit, and zero counts.
        """
        return StatFs(
            f_type=self.magic,
            f_bsize=4096,
            f_namelen=255,
            f_fsid=0,
            f_flags=self.statfs_flags(),
        )

    def statfs_flags(self) -> int:
        """ST_* flags for statfs: the mount's MS_* bits share their values."""
        return ST_VALID | (self.flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC))

    def unmount(self) -> None:
        """Called once when the mount leaves the tree; releases resources."""


class FileSystemType(abc.ABC):
    """A kind of file system that can be mounted, registered by ``name``.

    ``nodev`` says the type needs no block device (listed as ``nodev`` in
    /proc/filesystems).
    """

    name: ClassVar[str] = ""
    nodev: ClassVar[bool] = True

    @abc.abstractmethod
    def mount(
        self, vfs: Vfs, device: str, options: str, readonly: bool, **extra: object
    ) -> Mount:
        """Build a Mount (with its root vnode) for ``device``.

        ``options`` is the comma-separated option string of mount(8);
        ``readonly`` asks for MS_RDONLY. ``extra`` carries objects a type
        needs from the kernel (procfs: ``provider``; devfs: ``console``);
        a type rejects extras it does not know with TypeError. Failures
        raise FsError.
        """
