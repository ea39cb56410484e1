"""Open file descriptions: position, flags, and the read/write/seek paths."""

from __future__ import annotations

import bisect
import errno
import os
import struct
from typing import TYPE_CHECKING

from ._abi import (
    DT_DIR,
    FIONREAD,
    O_ACCMODE,
    O_APPEND,
    O_PATH,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    OPEN_ONLY_FLAGS,
    POLLIN,
    POLLOUT,
    POLLRDNORM,
    POLLWRNORM,
    SEEK_CUR,
    SEEK_DATA,
    SEEK_END,
    SEEK_HOLE,
    SEEK_SET,
    SETFL_FLAGS,
)
from ._errors import FsError
from ._stat import Stat, StatFs

if TYPE_CHECKING:
    from ._vnode import Vnode

# struct linux_dirent64: d_ino u64, d_off s64, d_reclen u16, d_type u8, then
# the NUL-terminated name; each record is padded to a multiple of 8 bytes.
_DIRENT64_HEAD = struct.Struct("<QqHB")
_LOFF_MAX = (1 << 63) - 1


class File:
    """An open file description, shared by every fd dup'ed from one open.

    ``flags`` are the status flags of F_GETFL (access mode, O_APPEND,
    O_NONBLOCK, O_PATH, ...; never O_CREAT, O_EXCL, O_TRUNC, O_NOCTTY or
    O_CLOEXEC). ``position`` is the file offset; for a directory it counts
    entries, ``.`` and ``..`` included. ``path`` is the absolute path the
    file was opened under.

    A File starts with one reference, the opener's. ``acquire`` adds one
    (dup, fd passing, mmap); ``close`` drops one and the last ``close`` runs
    ``release``, where devices and pipes free what they hold.
    """

    def __init__(self, vnode: Vnode, flags: int, path: str = "") -> None:
        self.vnode = vnode
        self.flags = flags & ~OPEN_ONLY_FLAGS
        self.path = path
        self.position = 0
        self._refs = 1
        self._dirents: tuple[list[bytes], list[int]] | None = None
        access = flags & O_ACCMODE
        path_only = bool(flags & O_PATH)
        self.readable = not path_only and access in (O_RDONLY, O_RDWR)
        self.writable = not path_only and access in (O_WRONLY, O_RDWR)
        mount = vnode.mount
        if mount is not None:
            mount.open_files += 1

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r} flags={self.flags:#o}>"

    # -- references -----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._refs <= 0

    def acquire(self) -> File:
        """Add a reference (a new fd or another holder) and return self."""
        self._refs += 1
        return self

    def close(self) -> None:
        """Drop one reference; the last one releases the file."""
        if self._refs <= 0:
            return
        self._refs -= 1
        if self._refs == 0:
            mount = self.vnode.mount
            if mount is not None:
                mount.open_files -= 1
            self._dirents = None
            self.release()

    def release(self) -> None:
        """Free what this open file holds; runs once, on the last close."""

    def set_status_flags(self, flags: int) -> None:
        """fcntl(F_SETFL): only O_APPEND, O_NONBLOCK, O_ASYNC, O_DIRECT, O_NOATIME."""
        self.flags = (self.flags & ~SETFL_FLAGS) | (flags & SETFL_FLAGS)

    # -- data -------------------------------------------------------------------

    def read(self, size: int) -> bytes:
        """read(2): up to ``size`` bytes from the file position."""
        if not self.readable:
            raise FsError(errno.EBADF, "file not open for reading")
        data = self.vnode.read(self.position, size)
        self.position += len(data)
        return data

    def readinto(self, buf: memoryview) -> int:
        """read(2) straight into ``buf`` (guest memory); returns the count."""
        if not self.readable:
            raise FsError(errno.EBADF, "file not open for reading")
        n = self.vnode.readinto(self.position, buf)
        self.position += n
        return n

    def write(self, data: bytes | memoryview) -> int:
        """write(2) at the file position, or at the end under O_APPEND."""
        if not self.writable:
            raise FsError(errno.EBADF, "file not open for writing")
        vnode = self.vnode
        if self.flags & O_APPEND:
            self.position = vnode.size
        n = vnode.write(self.position, data)
        self.position += n
        return n

    def pread(self, size: int, offset: int) -> bytes:
        """pread(2): read at ``offset`` without moving the position."""
        if not self.readable:
            raise FsError(errno.EBADF, "file not open for reading")
        if offset < 0:
            raise FsError(errno.EINVAL, "negative offset")
        return self.vnode.read(offset, size)

    def preadinto(self, buf: memoryview, offset: int) -> int:
        """pread(2) straight into ``buf``; returns the count."""
        if not self.readable:
            raise FsError(errno.EBADF, "file not open for reading")
        if offset < 0:
            raise FsError(errno.EINVAL, "negative offset")
        return self.vnode.readinto(offset, buf)

    def pwrite(self, data: bytes | memoryview, offset: int) -> int:
        """pwrite(2) at ``offset`` without moving the position.

        Under O_APPEND Linux ignores the offset and appends; so do we.
        """
        if not self.writable:
            raise FsError(errno.EBADF, "file not open for writing")
        if offset < 0:
            raise FsError(errno.EINVAL, "negative offset")
        if self.flags & O_APPEND:
            offset = self.vnode.size
        return self.vnode.write(offset, data)

    def lseek(self, offset: int, whence: int) -> int:
        """lseek(2); returns the new position.

        Files without hole tracking report, as Linux's generic code does,
        all data up to the end and one hole at the end.
        """
        if self.flags & O_PATH:
            raise FsError(errno.EBADF, "file opened with O_PATH")
        vnode = self.vnode
        if whence == SEEK_SET:
            new = offset
        elif whence == SEEK_CUR:
            new = self.position + offset
        elif whence == SEEK_END and not vnode.is_dir:
            new = vnode.size + offset
        elif whence in (SEEK_DATA, SEEK_HOLE) and not vnode.is_dir:
            if offset < 0 or offset >= vnode.size:
                raise FsError(errno.ENXIO, "offset is past the end of the file")
            new = offset if whence == SEEK_DATA else vnode.size
        else:
            raise FsError(errno.EINVAL, f"unsupported whence {whence}")
        if new < 0 or new > _LOFF_MAX:
            raise FsError(errno.EINVAL, "resulting offset is out of range")
        if vnode.is_dir and new == 0:
            # Seeking a directory back to its start is rewinddir(3): the next
            # getdents sees the directory as it is now.
            self._dirents = None
        self.position = new
        return new

    def truncate(self, size: int) -> None:
        """ftruncate(2)."""
        if self.flags & O_PATH:
            raise FsError(errno.EBADF, "file opened with O_PATH")
        if not self.writable:
            raise FsError(errno.EINVAL, "file not open for writing")
        if size < 0:
            raise FsError(errno.EINVAL, "negative length")
        if not self.vnode.is_reg:
            raise FsError(errno.EINVAL, "not a regular file")
        self.vnode.truncate(size)

    def fsync(self) -> None:
        """fsync(2) and fdatasync(2)."""
        if self.flags & O_PATH:
            raise FsError(errno.EBADF, "file opened with O_PATH")
        self.vnode.fsync()

    # -- attributes -----------------------------------------------------------

    def fstat(self) -> Stat:
        """fstat(2)."""
        return self.vnode.stat()

    def fstatfs(self) -> StatFs:
        """fstatfs(2)."""
        mount = self.vnode.mount
        if mount is None:
            raise FsError(errno.ENOSYS, "file belongs to no file system")
        return mount.statfs()

    # -- directories ------------------------------------------------------------

    def getdents64(self, bufsize: int) -> bytes:
        """getdents64(2): as many ``struct linux_dirent64`` as fit in ``bufsize``.

        Returns b"" at the end. The entries are listed once when reading
        starts at position 0 and served from that list afterwards, so a
        program that deletes entries while it reads sees each name once.
        """
        if self.flags & O_PATH:
            raise FsError(errno.EBADF, "file opened with O_PATH")
        vnode = self.vnode
        if not vnode.is_dir:
            raise FsError(errno.ENOTDIR, "not a directory")
        listing = self._dirents
        if listing is None or self.position == 0:
            listing = self._dirents = self._list_directory()
        records, ends = listing

        # ends[i] is where record i ends in the whole listing packed end to
        # end, so the records that fit are found by one search.
        pos = self.position
        if pos >= len(records):
            return b""
        before = ends[pos - 1] if pos else 0
        stop = bisect.bisect_right(ends, before + bufsize, pos)
        if stop == pos:
            raise FsError(errno.EINVAL, "buffer too small for the next entry")
        self.position = stop
        return b"".join(records[pos:stop])

    def _list_directory(self) -> tuple[list[bytes], list[int]]:
        """The directory's entries as packed ``linux_dirent64`` records, and
        the running total of their lengths."""
        vnode = self.vnode
        try:
            parent_ino = vnode.lookup("..").ino
        except FsError:
            parent_ino = vnode.ino
        entries = [(".", vnode.ino, DT_DIR), ("..", parent_ino, DT_DIR)]
        entries.extend(vnode.readdir())
        head, pack, fsencode = _DIRENT64_HEAD.size, _DIRENT64_HEAD.pack, os.fsencode
        records = []
        ends = []
        total = 0
        for position, (name, ino, d_type) in enumerate(entries, 1):
            raw = fsencode(name)
            # The name, its NUL and padding to 8 bytes follow the fixed head.
            reclen = (head + len(raw) + 8) & ~7
            records.append(
                pack(ino, position, reclen, d_type)
                + raw
                + bytes(reclen - head - len(raw))
            )
            total += reclen
            ends.append(total)
        return records, ends

    # -- devices and readiness ------------------------------------------------

    def ioctl(self, request: int, arg: int | bytes) -> int | bytes:
        """ioctl(2). Returns the result, or bytes to copy out to ``arg``.

        ``arg`` is the raw argument, or for requests listed in
        IOCTL_IN_SIZES the bytes the caller read from there. Regular files
        answer FIONREAD; everything else is ENOTTY, as on Linux.
        """
        if self.flags & O_PATH:
            raise FsError(errno.EBADF, "file opened with O_PATH")
        if request == FIONREAD and self.vnode.is_reg:
            return struct.pack(
                "<i", max(0, min(self.vnode.size - self.position, 2**31 - 1))
            )
        raise FsError(errno.ENOTTY, f"ioctl {request:#x} not supported")

    def isatty(self) -> bool:
        """Whether this file is a terminal."""
        return False

    def poll_ready(self, events: int) -> int:
        """The subset of poll ``events`` that would not block now.

        Regular files, directories and memory devices are always ready.
        """
        return events & (POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM)


class StreamFile(File):
    """A file with no position (a terminal, a pipe): seeks and positioned I/O
    fail with ESPIPE, as Linux answers for such files."""

    #: How the ESPIPE error describes the file.
    no_position = "this file has no position"

    def pread(self, size: int, offset: int) -> bytes:
        raise FsError(errno.ESPIPE, self.no_position)

    def preadinto(self, buf: memoryview, offset: int) -> int:
        raise FsError(errno.ESPIPE, self.no_position)

    def pwrite(self, data: bytes | memoryview, offset: int) -> int:
        raise FsError(errno.ESPIPE, self.no_position)

    def lseek(self, offset: int, whence: int) -> int:
        raise FsError(errno.ESPIPE, self.no_position)
