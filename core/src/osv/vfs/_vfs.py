"""The mount table, path resolution, and the path-level file operations."""

# How paths resolve. Resolution follows Linux's namei: components are looked
# up one at a time from the root or from a starting directory; ".." climbs
# out of a mounted file system into the directory it covers before taking
# that directory's parent, and never above the root; a symbolic link met in
# the middle of a path is always followed, the last component only when
# asked (or when a trailing slash demands a directory). One lookup follows at
# most 40 links (MAXSYMLINKS), counting those met while resolving other
# links' targets, so a loop ends in ELOOP instead of recursing forever.
#
# Why the checks come in a fixed order. Programs look at errno to decide what
# to do next (mkdir -p treats EEXIST as success, for one), so every operation
# checks what Linux checks in the order Linux checks it: an existing name on
# a read-only mount is EEXIST, not EROFS; unlink on a read-only mount is
# EROFS even when the name does not exist. File systems then only implement
# the mechanics on a single directory, and all of them agree on errors.

from __future__ import annotations

import enum
import errno
import logging
import os
import stat
import time

from ._abi import (
    MAXSYMLINKS,
    MNT_DETACH,
    MS_RDONLY,
    NAME_MAX,
    O_ACCMODE,
    O_CREAT,
    O_DIRECTORY,
    O_EXCL,
    O_NOFOLLOW,
    O_PATH,
    O_RDWR,
    O_TMPFILE,
    O_TRUNC,
    O_WRONLY,
    PATH_MAX,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    RENAME_WHITEOUT,
    W_OK,
    X_OK,
)
from ._errors import FsError
from ._file import File
from ._stat import Stat, StatFs
from ._vnode import FileSystemType, Mount, Vnode

logger = logging.getLogger(__name__)

# umount2's flag for not following a final symbolic link.
UMOUNT_NOFOLLOW = 8

# Names that do not name a new entry: the root ("" from "/"), "." and "..".
_SPECIAL_NAMES = frozenset(("", ".", ".."))


class TimeUpdate(enum.Enum):
    """The two special values of utimensat's timespec.tv_nsec."""

    NOW = "now"
    OMIT = "omit"


UTIME_NOW = TimeUpdate.NOW
UTIME_OMIT = TimeUpdate.OMIT

TimeSpec = int | TimeUpdate


class _SameDir(enum.Enum):
    TOKEN = "same"


# Default of the second directory of two-path operations: the first one.
_SAME = _SameDir.TOKEN


def _time_value(value: TimeSpec, now: int) -> int | None:
    if value is UTIME_NOW:
        return now
    if value is UTIME_OMIT:
        return None
    return value


def _fspath(path: str | bytes) -> str:
    if isinstance(path, bytes):
        return os.fsdecode(path)
    return path


def _same(a: Vnode, b: Vnode) -> bool:
    return a is b or (a.mount is b.mount and a.ino == b.ino)


def _is_mount_root(vnode: Vnode) -> bool:
    mount = vnode.mount
    return mount is not None and _same(vnode, mount.root)


def _is_special_file(vnode: Vnode) -> bool:
    """Devices, FIFOs and sockets, which stay writable on a read-only mount."""
    return not (vnode.is_reg or vnode.is_dir or vnode.is_symlink)


def _check_name(name: str) -> None:
    # A character takes up to four bytes in UTF-8; encode only when it matters.
    if len(name) > NAME_MAX // 4 and len(os.fsencode(name)) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG, f"file name too long: {name[:32]}...")


def _check_writable(vnode: Vnode) -> None:
    mount = vnode.mount
    if mount is not None and mount.readonly:
        raise FsError(
            errno.EROFS, f"read-only file system mounted on {mount.mountpoint}"
        )


class Vfs:
    """The file-system tree of one guest: mounts, resolution, operations.

    Paths are str (bytes are decoded with os.fsdecode). ``cwd`` is the
    directory vnode relative paths start from (the *at family's dirfd);
    None starts them at the root. Creation modes are used as given: the
    process umask is the caller's to apply.
    """

    def __init__(self) -> None:
        self._fstypes: dict[str, FileSystemType] = {}
        self._mounts: list[Mount] = []
        self._covered: dict[tuple[Mount, int], Mount] = {}
        self._root_mount: Mount | None = None

    # -- file-system types ------------------------------------------------------

    def register_filesystem(self, fstype: FileSystemType) -> None:
        """Make ``fstype`` mountable by its name; a name can be claimed once."""
        name = fstype.name
        if not name:
            raise FsError(errno.EINVAL, f"{type(fstype).__qualname__} has no name")
        other = self._fstypes.get(name)
        if other is not None and other is not fstype:
            raise FsError(
                errno.EEXIST,
                f"file-system type {name!r} is claimed by both "
                f"{type(other).__module__}.{type(other).__qualname__} and "
                f"{type(fstype).__module__}.{type(fstype).__qualname__}",
            )
        self._fstypes[name] = fstype
        logger.debug("registered file-system type %s", name)

    def filesystem(self, name: str) -> FileSystemType:
        """The registered type called ``name``; ENODEV, as mount(2), if none."""
        try:
            return self._fstypes[name]
        except KeyError:
            raise FsError(errno.ENODEV, f"unknown file-system type {name!r}") from None

    def filesystems(self) -> list[FileSystemType]:
        """Registered types, in registration order."""
        return list(self._fstypes.values())

    # -- mounts -----------------------------------------------------------------

    @property
    def root(self) -> Vnode:
        """The root directory vnode."""
        if self._root_mount is None:
            raise FsError(errno.ENOENT, "no root file system is mounted")
        return self._root_mount.root

    def mount(
        self,
        fstype: FileSystemType | str,
        device: str,
        mountpoint: str | bytes,
        options: str = "",
        readonly: bool = False,
        cwd: Vnode | None = None,
        **extra: object,
    ) -> Mount:
        """Mount a file system on an existing directory (or first on "/").

        ``fstype`` is a FileSystemType or the name of a registered one;
        ``extra`` goes to its ``mount`` (procfs: provider=, devfs: console=).
        Mounting on a mount point stacks the new mount on top, as Linux does.
        """
        fs = fstype if isinstance(fstype, FileSystemType) else self.filesystem(fstype)
        mountpoint = _fspath(mountpoint)
        if self._root_mount is None:
            if not mountpoint or mountpoint.strip("/"):
                raise FsError(errno.ENOENT, "the first mount must be on /")
            covered = None
            path = "/"
        else:
            covered = self._walk(mountpoint, cwd, True, [MAXSYMLINKS])
            if not covered.is_dir:
                raise FsError(
                    errno.ENOTDIR, f"mount point {mountpoint} is not a directory"
                )
            path = self.realpath(covered)

        mount = fs.mount(self, device, options, readonly, **extra)
        if readonly:
            mount.flags |= MS_RDONLY
        mount.mountpoint = path
        mount.covered = covered
        if covered is None:
            self._root_mount = mount
        else:
            mount.parent = covered.mount
            self._covered[(covered.mount, covered.ino)] = mount
            if _same(covered, self.root):
                self._root_mount = mount
        self._mounts.append(mount)
        logger.info(
            "mounted %s %s on %s%s", fs.name, device, path, " (ro)" if readonly else ""
        )
        return mount

    def umount(
        self, path: str | bytes, flags: int = 0, cwd: Vnode | None = None
    ) -> None:
        """umount2(2): EINVAL if ``path`` is no mount point, EBUSY while in use.

        With MNT_DETACH the mount and everything under it leave the tree at
        once; files still open keep working.
        """
        vnode = self._walk(
            _fspath(path), cwd, not flags & UMOUNT_NOFOLLOW, [MAXSYMLINKS]
        )
        mount = vnode.mount
        if mount is None or not _is_mount_root(vnode) or mount not in self._mounts:
            raise FsError(errno.EINVAL, f"{_fspath(path)} is not a mount point")
        if not flags & MNT_DETACH:
            if any(m.parent is mount for m in self._mounts):
                raise FsError(errno.EBUSY, f"{mount.mountpoint} has mounts below it")
            if mount.open_files:
                raise FsError(errno.EBUSY, f"{mount.mountpoint} has open files")
            if mount.covered is None:
                raise FsError(errno.EBUSY, "the root file system cannot be unmounted")
        self._detach(mount)

    def _detach(self, mount: Mount) -> None:
        for child in [m for m in self._mounts if m.parent is mount]:
            self._detach(child)
        self._mounts.remove(mount)
        covered = mount.covered
        if covered is not None:
            del self._covered[(covered.mount, covered.ino)]
        if mount is self._root_mount:
            self._root_mount = mount.parent
        mount.covered = None
        mount.parent = None
        logger.info("unmounted %s from %s", mount.fstype, mount.mountpoint)
        mount.unmount()

    def mounts(self) -> list[Mount]:
        """Mounts in the order they were made, as /proc/mounts lists them."""
        return list(self._mounts)

    # -- resolution -------------------------------------------------------------

    def resolve(
        self, path: str | bytes, cwd: Vnode | None = None, follow: bool = True
    ) -> Vnode:
        """The vnode ``path`` names; ``follow`` says whether a final symlink is followed."""
        return self._walk(_fspath(path), cwd, follow, [MAXSYMLINKS])

    def resolve_parent(
        self, path: str | bytes, cwd: Vnode | None = None
    ) -> tuple[Vnode, str]:
        """The directory holding the last component of ``path``, and that name.

        The name is returned as written: "." or ".." when the path ends so,
        and "" for the root itself ("/").
        """
        directory, name, _ = self._walk_parent(_fspath(path), cwd, [MAXSYMLINKS])
        return directory, name

    def resolve_dir(self, path: str | bytes, cwd: Vnode | None = None) -> Vnode:
        """Like resolve, but ENOTDIR unless the result is a directory (chdir)."""
        vnode = self.resolve(path, cwd)
        if not vnode.is_dir:
            raise FsError(errno.ENOTDIR, f"{_fspath(path)} is not a directory")
        return vnode

    def realpath(self, vnode: Vnode) -> str:
        """The absolute path of ``vnode`` now (getcwd, /proc/self/fd).

        ENOENT when the vnode has been removed from the tree.
        """
        parts: list[str] = []
        root = self.root
        # A bound on the walk guards against a file system whose ".." loops.
        for _ in range(PATH_MAX):
            if _same(vnode, root):
                break
            mount = vnode.mount
            if mount is not None and _same(vnode, mount.root):
                if mount.covered is None:
                    break
                vnode = mount.covered
                continue
            if vnode.nlink == 0:
                raise FsError(errno.ENOENT, "the file has been removed")
            parent = self._parent_of(vnode)
            parts.append(self._name_in(parent, vnode))
            vnode = parent
        else:
            raise FsError(errno.ELOOP, "the directory tree loops")
        return "/" + "/".join(reversed(parts))

    def fd_target(self, file: File) -> str:
        """What /proc/self/fd/N shows for ``file``: its path, or path "(deleted)"."""
        if file.vnode.mount is None:
            return file.path
        try:
            return self.realpath(file.vnode)
        except FsError:
            return f"{file.path} (deleted)"

    def _parent_of(self, vnode: Vnode) -> Vnode:
        parent = None
        if vnode.is_dir:
            try:
                parent = vnode.lookup("..")
            except FsError:
                parent = None
        if parent is None:
            parent = vnode.parent_hint
        if parent is None:
            raise FsError(errno.ENOENT, "no known path leads to this file")
        return parent

    def _name_in(self, parent: Vnode, vnode: Vnode) -> str:
        name = vnode.name_hint
        if name is not None:
            try:
                if _same(parent.lookup(name), vnode):
                    return name
            except FsError:
                pass
        for entry_name, ino, _ in parent.readdir():
            if ino == vnode.ino:
                vnode.parent_hint = parent
                vnode.name_hint = entry_name
                return entry_name
        raise FsError(errno.ENOENT, "the file is no longer in its directory")

    def _walk_parent(
        self, path: str, cwd: Vnode | None, links: list[int]
    ) -> tuple[Vnode, str, bool]:
        """Resolve all but the last component: (directory, last name, trailing slash).

        ``links`` is a one-element list holding the symbolic links this
        lookup may still follow; nested resolutions of link targets share it,
        so the budget of 40 covers the whole lookup.
        """
        if not path:
            raise FsError(errno.ENOENT, "empty path")
        if len(path) >= PATH_MAX // 4 and len(os.fsencode(path)) >= PATH_MAX:
            raise FsError(errno.ENAMETOOLONG, "path too long")
        if path[0] == "/" or cwd is None:
            current = self.root
        else:
            current = cwd
        names = [name for name in path.split("/") if name]
        trailing = path[-1] == "/"
        if not names:
            if not current.is_dir:
                raise FsError(errno.ENOTDIR, "not a directory")
            return current, "", trailing
        for name in names[:-1]:
            child = self._child(current, name)
            if child.is_symlink:
                child = self._follow(child, current, links)
            current = child
        if not current.is_dir:
            raise FsError(errno.ENOTDIR, f"not a directory in {path}")
        return current, names[-1], trailing

    def _walk(
        self, path: str, cwd: Vnode | None, follow: bool, links: list[int]
    ) -> Vnode:
        directory, name, trailing = self._walk_parent(path, cwd, links)
        vnode = self._child(directory, name)
        if vnode.is_symlink and (follow or trailing):
            vnode = self._follow(vnode, directory, links)
        if trailing and not vnode.is_dir:
            raise FsError(errno.ENOTDIR, f"{path} is not a directory")
        return vnode

    def _child(self, directory: Vnode, name: str) -> Vnode:
        """One lookup step from ``directory``, crossing mount points both ways."""
        if not directory.is_dir:
            raise FsError(errno.ENOTDIR, "not a directory")
        if name == "." or not name:
            return directory
        if name == "..":
            return self._dotdot(directory)
        _check_name(name)
        vnode = directory.lookup(name)
        vnode.parent_hint = directory
        vnode.name_hint = name
        if self._covered:
            mount = self._covered.get((vnode.mount, vnode.ino))
            while mount is not None:
                vnode = mount.root
                mount = self._covered.get((vnode.mount, vnode.ino))
        return vnode

    def _child_or_none(self, directory: Vnode, name: str) -> Vnode | None:
        """Like _child, but None where the name does not exist."""
        try:
            return self._child(directory, name)
        except FsError as err:
            if err.errno != errno.ENOENT:
                raise
            return None

    def _dotdot(self, directory: Vnode) -> Vnode:
        root = self.root
        while not _same(directory, root):
            mount = directory.mount
            if (
                mount is None
                or mount.covered is None
                or not _same(directory, mount.root)
            ):
                break
            directory = mount.covered
        if _same(directory, root):
            return directory
        try:
            return directory.lookup("..")
        except FsError:
            return directory.parent_hint or directory

    def _follow(self, link: Vnode, directory: Vnode, links: list[int]) -> Vnode:
        """Resolve the target of ``link``, which sits in ``directory``."""
        links[0] -= 1
        if links[0] < 0:
            raise FsError(errno.ELOOP, "too many levels of symbolic links")
        target = link.readlink()
        if not target:
            raise FsError(errno.ENOENT, "symbolic link with an empty target")
        return self._walk(target, directory if target[0] != "/" else None, True, links)

    # -- open ------------------------------------------------------------------

    def open(
        self, path: str | bytes, flags: int, mode: int = 0o666, cwd: Vnode | None = None
    ) -> File:
        """open(2)/openat(2): the new open file description.

        ``mode`` gives the permission bits when O_CREAT makes a file.
        O_CLOEXEC belongs to the fd; the caller records it.
        """
        path = _fspath(path)
        if flags & O_TMPFILE == O_TMPFILE:
            raise FsError(errno.EOPNOTSUPP, "O_TMPFILE is not supported")
        links = [MAXSYMLINKS]
        if flags & O_PATH:
            vnode = self._walk(path, cwd, not flags & O_NOFOLLOW, links)
            if flags & O_DIRECTORY and not vnode.is_dir:
                raise FsError(errno.ENOTDIR, f"{path} is not a directory")
            kept = flags & (O_PATH | O_DIRECTORY | O_NOFOLLOW)
            return File(vnode, kept, self._path_for(vnode, path))

        created = False
        if flags & O_CREAT:
            if flags & O_DIRECTORY:
                raise FsError(errno.EINVAL, "O_CREAT with O_DIRECTORY")
            vnode, created = self._open_create(path, cwd, flags, mode, links)
        else:
            vnode = self._walk(path, cwd, not flags & O_NOFOLLOW, links)
            if vnode.is_symlink:
                raise FsError(errno.ELOOP, f"{path} is a symbolic link (O_NOFOLLOW)")

        if flags & O_DIRECTORY and not vnode.is_dir:
            raise FsError(errno.ENOTDIR, f"{path} is not a directory")
        access = flags & O_ACCMODE
        writes = access in (O_WRONLY, O_RDWR) or bool(flags & O_TRUNC)
        if vnode.is_dir and (writes or flags & O_CREAT):
            raise FsError(errno.EISDIR, f"{path} is a directory")
        if writes and not created and not _is_special_file(vnode):
            _check_writable(vnode)
        if flags & O_TRUNC and vnode.is_reg and not created:
            # open with O_TRUNC stamps mtime and ctime even when the file was
            # already empty, unlike truncate(2).
            vnode.truncate(0)
            vnode.setattr(mtime_ns=time.time_ns())
        return vnode.open(flags, self._path_for(vnode, path))

    def _open_create(
        self, path: str, cwd: Vnode | None, flags: int, mode: int, links: list[int]
    ) -> tuple[Vnode, bool]:
        directory, name, trailing = self._walk_parent(path, cwd, links)
        while True:
            if name in _SPECIAL_NAMES:
                if flags & O_EXCL:
                    raise FsError(errno.EEXIST, f"{path} exists")
                return self._child(directory, name), False
            # Linux refuses O_CREAT on a name with a trailing slash before
            # looking at it: even an existing file or directory is EISDIR.
            if trailing:
                raise FsError(errno.EISDIR, f"{path} ends in / (O_CREAT)")
            vnode = self._child_or_none(directory, name)
            if vnode is None:
                _check_writable(directory)
                vnode = directory.create(name, 0o100000 | (mode & 0o7777))
                vnode.parent_hint = directory
                vnode.name_hint = name
                return vnode, True
            if flags & O_EXCL:
                raise FsError(errno.EEXIST, f"{path} exists")
            if not vnode.is_symlink:
                return vnode, False
            if flags & O_NOFOLLOW:
                raise FsError(errno.ELOOP, f"{path} is a symbolic link (O_NOFOLLOW)")
            # O_CREAT through a symbolic link creates the link's target, so
            # the target's parent is resolved and the loop tries again.
            links[0] -= 1
            if links[0] < 0:
                raise FsError(errno.ELOOP, "too many levels of symbolic links")
            target = vnode.readlink()
            if not target:
                raise FsError(errno.ENOENT, "symbolic link with an empty target")
            base = directory if target[0] != "/" else None
            directory, name, trailing = self._walk_parent(target, base, links)

    def _path_for(self, vnode: Vnode, path: str) -> str:
        try:
            return self.realpath(vnode)
        except FsError:
            return path

    # -- attributes -------------------------------------------------------------

    def stat(
        self, path: str | bytes, cwd: Vnode | None = None, follow: bool = True
    ) -> Stat:
        """stat(2), or lstat(2) with ``follow=False``."""
        return self.resolve(path, cwd, follow).stat()

    def statfs(self, path: str | bytes, cwd: Vnode | None = None) -> StatFs:
        """statfs(2) of the mount holding ``path``."""
        mount = self.resolve(path, cwd).mount
        if mount is None:
            raise FsError(errno.ENOSYS, "file belongs to no file system")
        return mount.statfs()

    def access(
        self,
        path: str | bytes,
        mode: int,
        cwd: Vnode | None = None,
        follow: bool = True,
    ) -> None:
        """access(2)/faccessat(2) for the superuser every guest runs as.

        Reading and writing are always allowed except writing on a
        read-only mount (EROFS); executing needs an x bit (EACCES).
        """
        if mode & ~7:
            raise FsError(errno.EINVAL, f"bad access mode {mode:#o}")
        vnode = self.resolve(path, cwd, follow)
        if mode & W_OK and not _is_special_file(vnode):
            _check_writable(vnode)
        if mode & X_OK and not vnode.is_dir and not vnode.mode & 0o111:
            raise FsError(errno.EACCES, f"{_fspath(path)} is not executable")

    def setattr(
        self,
        vnode: Vnode,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        atime_ns: TimeSpec = UTIME_OMIT,
        mtime_ns: TimeSpec = UTIME_OMIT,
    ) -> None:
        """Change attributes of a vnode (fchmod, fchown, futimens).

        uid or gid of None or -1 stay; times are nanoseconds, UTIME_NOW or
        UTIME_OMIT. EROFS on a read-only mount.
        """
        _check_writable(vnode)
        now = time.time_ns()
        vnode.setattr(
            mode=mode,
            uid=None if uid == -1 else uid,
            gid=None if gid == -1 else gid,
            atime_ns=_time_value(atime_ns, now),
            mtime_ns=_time_value(mtime_ns, now),
        )

    def chmod(
        self,
        path: str | bytes,
        mode: int,
        cwd: Vnode | None = None,
        follow: bool = True,
    ) -> None:
        """chmod(2)/fchmodat(2); a symbolic link's own mode cannot change."""
        vnode = self.resolve(path, cwd, follow)
        if vnode.is_symlink:
            raise FsError(errno.EOPNOTSUPP, "cannot change the mode of a symbolic link")
        self.setattr(vnode, mode=mode)

    def chown(
        self,
        path: str | bytes,
        uid: int | None,
        gid: int | None,
        cwd: Vnode | None = None,
        follow: bool = True,
    ) -> None:
        """chown(2)/lchown(2)/fchownat(2); -1 or None leaves an id alone.

        Like Linux, even for the superuser, a chown of a non-directory drops
        set-user-ID, and set-group-ID when the group may execute.
        """
        vnode = self.resolve(path, cwd, follow)
        mode = None
        if not vnode.is_dir and not vnode.is_symlink:
            mode = vnode.mode & 0o7777 & ~stat.S_ISUID
            if mode & stat.S_IXGRP:
                mode &= ~stat.S_ISGID
        self.setattr(vnode, mode=mode, uid=uid, gid=gid)

    def utimens(
        self,
        path: str | bytes,
        times: tuple[TimeSpec, TimeSpec] | None = None,
        cwd: Vnode | None = None,
        follow: bool = True,
    ) -> None:
        """utimensat(2): ``times`` is (atime, mtime), or None for now and now."""
        vnode = self.resolve(path, cwd, follow)
        atime, mtime = (UTIME_NOW, UTIME_NOW) if times is None else times
        if atime is UTIME_OMIT and mtime is UTIME_OMIT:
            return
        self.setattr(vnode, atime_ns=atime, mtime_ns=mtime)

    def truncate(
        self, path: str | bytes, length: int, cwd: Vnode | None = None
    ) -> None:
        """truncate(2)."""
        if length < 0:
            raise FsError(errno.EINVAL, "negative length")
        vnode = self.resolve(path, cwd)
        if vnode.is_dir:
            raise FsError(errno.EISDIR, f"{_fspath(path)} is a directory")
        if not vnode.is_reg:
            raise FsError(errno.EINVAL, f"{_fspath(path)} is not a regular file")
        _check_writable(vnode)
        vnode.truncate(length)

    def readlink(self, path: str | bytes, cwd: Vnode | None = None) -> str:
        """readlink(2): EINVAL unless ``path`` is a symbolic link."""
        vnode = self.resolve(path, cwd, follow=False)
        if not vnode.is_symlink:
            raise FsError(errno.EINVAL, f"{_fspath(path)} is not a symbolic link")
        return vnode.readlink()

    # -- namespace changes --------------------------------------------------------

    def _create_slot(
        self, path: str, cwd: Vnode | None, *, want_dir: bool
    ) -> tuple[Vnode, str]:
        """Where a new entry goes, with Linux's filename_create checks."""
        directory, name, trailing = self._walk_parent(path, cwd, [MAXSYMLINKS])
        if name in _SPECIAL_NAMES:
            raise FsError(errno.EEXIST, f"{path} exists")
        _check_name(name)
        if self._child_or_none(directory, name) is not None:
            raise FsError(errno.EEXIST, f"{path} exists")
        if trailing and not want_dir:
            raise FsError(errno.ENOENT, f"{path} ends in / but names no directory")
        _check_writable(directory)
        return directory, name

    def mkdir(
        self, path: str | bytes, mode: int = 0o777, cwd: Vnode | None = None
    ) -> Vnode:
        """mkdir(2)/mkdirat(2); the new directory's vnode."""
        directory, name = self._create_slot(_fspath(path), cwd, want_dir=True)
        vnode = directory.mkdir(name, mode & 0o1777)
        vnode.parent_hint = directory
        vnode.name_hint = name
        return vnode

    def symlink(
        self, target: str | bytes, path: str | bytes, cwd: Vnode | None = None
    ) -> Vnode:
        """symlink(2)/symlinkat(2): make ``path`` a link to ``target``."""
        target = _fspath(target)
        if not target:
            raise FsError(errno.ENOENT, "empty symbolic link target")
        if len(os.fsencode(target)) >= PATH_MAX:
            raise FsError(errno.ENAMETOOLONG, "symbolic link target too long")
        directory, name = self._create_slot(_fspath(path), cwd, want_dir=False)
        vnode = directory.symlink(name, target)
        vnode.parent_hint = directory
        vnode.name_hint = name
        return vnode

    def link(
        self,
        old: str | bytes,
        new: str | bytes,
        cwd: Vnode | None = None,
        new_cwd: Vnode | None | _SameDir = _SAME,
        follow: bool = False,
    ) -> None:
        """link(2)/linkat(2); ``follow`` is AT_SYMLINK_FOLLOW for ``old``."""
        vnode = self.resolve(old, cwd, follow)
        target_cwd = cwd if new_cwd is _SAME else new_cwd
        directory, name = self._create_slot(_fspath(new), target_cwd, want_dir=False)
        if vnode.mount is not directory.mount:
            raise FsError(errno.EXDEV, "hard links cannot cross mounts")
        if vnode.is_dir:
            raise FsError(errno.EPERM, "hard links to directories are not allowed")
        directory.link(name, vnode)

    def unlink(self, path: str | bytes, cwd: Vnode | None = None) -> None:
        """unlink(2)/unlinkat(2) without AT_REMOVEDIR."""
        path = _fspath(path)
        directory, name, trailing = self._walk_parent(path, cwd, [MAXSYMLINKS])
        if name in _SPECIAL_NAMES:
            raise FsError(errno.EISDIR, f"{path} is a directory")
        _check_writable(directory)
        vnode = self._child(directory, name)
        if vnode.is_dir:
            raise FsError(errno.EISDIR, f"{path} is a directory")
        if trailing:
            raise FsError(errno.ENOTDIR, f"{path} is not a directory")
        directory.unlink(name)

    def rmdir(self, path: str | bytes, cwd: Vnode | None = None) -> None:
        """rmdir(2)/unlinkat(2) with AT_REMOVEDIR."""
        path = _fspath(path)
        directory, name, _ = self._walk_parent(path, cwd, [MAXSYMLINKS])
        if not name:
            raise FsError(errno.EBUSY, "cannot remove the root directory")
        if name == ".":
            raise FsError(errno.EINVAL, "cannot remove '.'")
        if name == "..":
            raise FsError(errno.ENOTEMPTY, "cannot remove '..'")
        _check_writable(directory)
        vnode = self._child(directory, name)
        if not vnode.is_dir:
            raise FsError(errno.ENOTDIR, f"{path} is not a directory")
        if _is_mount_root(vnode):
            raise FsError(errno.EBUSY, f"{path} is a mount point")
        directory.rmdir(name)

    def rename(
        self,
        old: str | bytes,
        new: str | bytes,
        cwd: Vnode | None = None,
        new_cwd: Vnode | None | _SameDir = _SAME,
        flags: int = 0,
    ) -> None:
        """rename(2)/renameat2(2) with RENAME_NOREPLACE or RENAME_EXCHANGE."""
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT):
            raise FsError(errno.EINVAL, f"unknown rename flags {flags:#x}")
        if flags & RENAME_NOREPLACE and flags & RENAME_EXCHANGE:
            raise FsError(errno.EINVAL, "RENAME_NOREPLACE with RENAME_EXCHANGE")
        if flags & RENAME_WHITEOUT:
            raise FsError(errno.EINVAL, "RENAME_WHITEOUT is not supported")
        old, new = _fspath(old), _fspath(new)
        links = [MAXSYMLINKS]
        old_dir, old_name, old_slash = self._walk_parent(old, cwd, links)
        new_dir, new_name, new_slash = self._walk_parent(
            new, cwd if new_cwd is _SAME else new_cwd, links
        )
        exchange = bool(flags & RENAME_EXCHANGE)

        # The order of these checks is Linux's do_renameat2.
        if old_dir.mount is not new_dir.mount:
            raise FsError(errno.EXDEV, "rename across mounts")
        if old_name in _SPECIAL_NAMES:
            raise FsError(errno.EBUSY, f"cannot rename {old}")
        if new_name in _SPECIAL_NAMES:
            raise FsError(
                errno.EEXIST if flags & RENAME_NOREPLACE else errno.EBUSY, new
            )
        _check_writable(old_dir)
        source = self._child(old_dir, old_name)
        target = self._child_or_none(new_dir, new_name)
        if target is not None and flags & RENAME_NOREPLACE:
            raise FsError(errno.EEXIST, f"{new} exists")
        if target is None and exchange:
            raise FsError(errno.ENOENT, f"{new} does not exist")
        if exchange and new_slash and not target.is_dir:
            raise FsError(errno.ENOTDIR, f"{new} is not a directory")
        if not source.is_dir and (old_slash or (new_slash and not exchange)):
            raise FsError(errno.ENOTDIR, f"{old} is not a directory")
        if source.is_dir and self._is_ancestor(source, new_dir):
            raise FsError(errno.EINVAL, f"cannot move {old} into itself")
        if target is not None and target.is_dir and self._is_ancestor(target, old_dir):
            raise FsError(errno.EINVAL if exchange else errno.ENOTEMPTY, new)
        if target is not None and _same(source, target):
            return
        if _is_mount_root(source) or (target is not None and _is_mount_root(target)):
            raise FsError(errno.EBUSY, "cannot rename a mount point")
        if target is not None and not exchange:
            if source.is_dir and not target.is_dir:
                raise FsError(errno.ENOTDIR, f"{new} is not a directory")
            if not source.is_dir and target.is_dir:
                raise FsError(errno.EISDIR, f"{new} is a directory")

        old_dir.rename(old_name, new_dir, new_name, flags)
        source.parent_hint = new_dir
        source.name_hint = new_name
        if exchange and target is not None:
            target.parent_hint = old_dir
            target.name_hint = old_name

    def _is_ancestor(self, ancestor: Vnode, vnode: Vnode) -> bool:
        """Whether ``vnode`` is ``ancestor`` or below it, within one mount."""
        mount = ancestor.mount
        for _ in range(PATH_MAX):
            if vnode.mount is not mount:
                return False
            if _same(vnode, ancestor):
                return True
            if mount is not None and _same(vnode, mount.root):
                return False
            vnode = self._parent_of(vnode)
        return False
