"""File and directory system calls: open, read/write, stat, getdents, fcntl, ..."""

from __future__ import annotations

import errno
import logging
import os
import struct

from osv.syscalls._common import (
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_REMOVEDIR,
    AT_SYMLINK_FOLLOW,
    AT_SYMLINK_NOFOLLOW,
    SyscallError,
    dir_of,
    path_arg,
    s32,
    s64,
    unsupported,
)
from osv.syscalls._numbers import NUMBERS
from osv.syscalls.process import sys_kill as _signal_own_group
from osv.vfs import (
    IOCTL_IN_SIZES,
    PTY_IOCTL_IN_SIZES,
    PTY_IOCTL_OUT_SIZES,
    SESSION_IOCTLS,
    TIOCGPTPEER,
    UTIME_NOW,
    UTIME_OMIT,
    FsError,
)

logger = logging.getLogger(__name__)

O_ACCMODE = 0o3
O_CLOEXEC = 0o2000000
F_DUPFD = 0
F_GETFD = 1
F_SETFD = 2
F_GETFL = 3
F_SETFL = 4
F_GETLK = 5
F_SETLK = 6
F_SETLKW = 7
F_DUPFD_CLOEXEC = 1030
F_GETPIPE_SZ = 1032
FD_CLOEXEC = 1
F_UNLCK = 2
IOV_MAX = 1024
MAX_RW = 0x7FFFF000  # Linux caps one read or write at this many bytes


def _file(t, fd: int):  # noqa: ANN001, ANN202
    return t.fds.get(s32(fd))


# ---- reading and writing ---------------------------------------------------


def _read_into_views(f, views: list[memoryview]) -> int:  # noqa: ANN001
    """Read into ``views`` in order, as one read(2) of their total length.

    A buffer can span several runs of guest memory. A regular file is read
    run by run. Anything else (a pipe, a terminal, a socket) is read once
    into a scratch buffer that is then spread over the runs: a stream must
    not wait for more data once some came, nor lose what a first run got if
    a second one were interrupted.
    """
    if len(views) == 1:
        return f.readinto(views[0])
    total = 0
    if f.vnode.is_reg:
        for view in views:
            n = f.readinto(view)
            total += n
            if n < len(view):
                break
        return total
    scratch = bytearray(sum(len(view) for view in views))
    count = f.readinto(memoryview(scratch))
    for view in views:
        if total >= count:
            break
        piece = min(len(view), count - total)
        view[:piece] = scratch[total : total + piece]
        total += piece
    return total


def sys_read(t, fd, buf, count, *_):  # noqa: ANN001, ANN002
    f = t.fds.get(s32(fd))
    if count == 0:
        return 0
    return _read_into_views(f, t.mm.views(buf, min(count, MAX_RW), True))


def sys_write(t, fd, buf, count, *_):  # noqa: ANN001, ANN002
    f = t.fds.get(s32(fd))
    if count == 0:
        return f.write(b"")
    views = t.mm.views(buf, min(count, MAX_RW))
    if len(views) == 1:
        return f.write(views[0])
    if not f.vnode.is_reg:
        # One write, as the program made it: a pipe keeps writes of up to
        # PIPE_BUF bytes whole, and an interrupted write returns its count.
        return f.write(b"".join(views))
    total = 0
    for view in views:
        n = f.write(view)
        total += n
        if n < len(view):
            break
    return total


def sys_pread64(t, fd, buf, count, offset, *_):  # noqa: ANN001, ANN002
    f = _file(t, fd)
    offset = s64(offset)
    if offset < 0:
        raise SyscallError(errno.EINVAL)
    total = 0
    for view in t.mm.views(buf, min(count, MAX_RW), True):
        n = f.preadinto(view, offset + total)
        total += n
        if n < len(view):
            break
    return total


def sys_pwrite64(t, fd, buf, count, offset, *_):  # noqa: ANN001, ANN002
    f = _file(t, fd)
    offset = s64(offset)
    if offset < 0:
        raise SyscallError(errno.EINVAL)
    total = 0
    for view in t.mm.views(buf, min(count, MAX_RW)):
        n = f.pwrite(view, offset + total)
        total += n
        if n < len(view):
            break
    return total


def _iovecs(t, iov: int, iovcnt: int) -> list[tuple[int, int]]:  # noqa: ANN001
    iovcnt = s32(iovcnt)
    if iovcnt < 0 or iovcnt > IOV_MAX:
        raise SyscallError(errno.EINVAL)
    if iovcnt == 0:
        return []
    words = struct.unpack(f"<{2 * iovcnt}Q", t.mm.read(iov, 16 * iovcnt))
    return [(words[i], words[i + 1]) for i in range(0, len(words), 2)]


def sys_readv(t, fd, iov, iovcnt, *_):  # noqa: ANN001, ANN002
    f = _file(t, fd)
    views = [
        view
        for base, length in _iovecs(t, iov, iovcnt)
        if length
        for view in t.mm.views(base, length, True)
    ]
    return _read_into_views(f, views) if views else 0


def sys_writev(t, fd, iov, iovcnt, *_):  # noqa: ANN001, ANN002
    f = _file(t, fd)
    vectors = _iovecs(t, iov, iovcnt)
    # One write per call when possible, so a console line is not split.
    data = b"".join(t.mm.read(base, length) for base, length in vectors if length)
    if not data:
        return 0
    return f.write(data)


def sys_preadv(t, fd, iov, iovcnt, offset, *_):  # noqa: ANN001, ANN002
    f = _file(t, fd)
    offset = s64(offset)
    total = 0
    for base, length in _iovecs(t, iov, iovcnt):
        for view in t.mm.views(base, length, True):
            n = f.preadinto(view, offset + total)
            total += n
            if n < len(view):
                return total
    return total


def sys_pwritev(t, fd, iov, iovcnt, offset, *_):  # noqa: ANN001, ANN002
    f = _file(t, fd)
    data = b"".join(t.mm.read(b, n) for b, n in _iovecs(t, iov, iovcnt) if n)
    return f.pwrite(data, s64(offset))


def sys_lseek(t, fd, offset, whence, *_):  # noqa: ANN001, ANN002
    return _file(t, fd).lseek(s64(offset), s32(whence))


def sys_sendfile(t, out_fd, in_fd, offset_ptr, count, *_):  # noqa: ANN001, ANN002
    source = _file(t, in_fd)
    target = _file(t, out_fd)
    count = min(count, MAX_RW)
    # The source's offset moves by what was written, not by what was read:
    # a write that fails (a full disk, a closed pipe) leaves the data for the
    # program's fallback to read again, as Linux's sendfile does.
    if offset_ptr:
        offset = s64(t.mm.read_u64(offset_ptr))
    elif getattr(getattr(source, "vnode", None), "is_reg", False):
        offset = source.position
    else:
        data = source.read(count)
        return target.write(data) if data else 0
    data = source.pread(count, offset)
    if not data:
        return 0
    written = target.write(data)
    if offset_ptr:
        t.mm.write_u64(offset_ptr, offset + written)
    else:
        source.position = offset + written
    return written


# ---- opening and closing ---------------------------------------------------


def _open(t, dirfd, path_ptr, flags, mode):  # noqa: ANN001, ANN202
    path = path_arg(t, path_ptr)
    flags = s32(flags)
    cwd = dir_of(t, dirfd) if not path.startswith("/") else None
    f = t.vfs.open(path, flags, mode & ~t.process.umask & 0o7777, cwd)
    return t.fds.install(f, cloexec=bool(flags & O_CLOEXEC))


def sys_open(t, path, flags, mode, *_):  # noqa: ANN001, ANN002
    return _open(t, AT_FDCWD, path, flags, mode)


def sys_openat(t, dirfd, path, flags, mode, *_):  # noqa: ANN001, ANN002
    return _open(t, dirfd, path, flags, mode)


def sys_creat(t, path, mode, *_):  # noqa: ANN001, ANN002
    return _open(t, AT_FDCWD, path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)


def sys_close(t, fd, *_):  # noqa: ANN001, ANN002
    t.fds.close(s32(fd))
    return 0


def sys_dup(t, fd, *_):  # noqa: ANN001, ANN002
    return t.fds.dup(s32(fd))


def sys_dup2(t, old, new, *_):  # noqa: ANN001, ANN002
    return t.fds.dup2(s32(old), s32(new))


def sys_dup3(t, old, new, flags, *_):  # noqa: ANN001, ANN002
    return t.fds.dup3(s32(old), s32(new), s32(flags))


def sys_fcntl(t, fd, cmd, arg, *_):  # noqa: ANN001, ANN002
    fd = s32(fd)
    cmd = s32(cmd)
    f = t.fds.get(fd)
    if cmd == F_DUPFD:
        return t.fds.dup(fd, min_fd=s32(arg))
    if cmd == F_DUPFD_CLOEXEC:
        return t.fds.dup(fd, min_fd=s32(arg), cloexec=True)
    if cmd == F_GETFD:
        return FD_CLOEXEC if t.fds.get_cloexec(fd) else 0
    if cmd == F_SETFD:
        t.fds.set_cloexec(fd, bool(arg & FD_CLOEXEC))
        return 0
    if cmd == F_GETFL:
        return f.flags
    if cmd == F_SETFL:
        f.set_status_flags(s32(arg))
        return 0
    if cmd in (F_SETLK, F_SETLKW):
        # One application owns every file of the VM, so a record lock can
        # only conflict with the program's own locks, which POSIX lets a
        # process always take over: granting is the correct answer.
        return 0
    if cmd == F_GETLK:
        # struct flock: l_type is the first short; no other owner exists.
        t.mm.write(arg, struct.pack("<h", F_UNLCK))
        return 0
    logger.debug("unsupported fcntl cmd %#x", cmd)
    return unsupported(f"fcntl command {cmd:#x}", errno.EINVAL)


def sys_ioctl(t, fd, request, arg, *_):  # noqa: ANN001, ANN002
    fd = s32(fd)
    f = t.fds.get(fd)
    request &= 0xFFFFFFFF
    if request in (FIOCLEX, FIONCLEX):
        t.fds.set_cloexec(fd, request == FIOCLEX)
        return 0
    if request == TIOCGPTPEER:
        return _open_pty_peer(t, f, s32(arg))
    return _ioctl(t, f, request, arg)


TCGETS = 0x5401
TIOCGWINSZ = 0x5413
FIONREAD = 0x541B
FIONBIO = 0x5421
FIOCLEX = 0x5451
FIONCLEX = 0x5450
TERMIOS_SIZE = 36
WINSIZE_SIZE = 8

# Requests that take a structure from the program (TCSETS*, TIOCSWINSZ, ...):
# File.ioctl receives the structure's bytes instead of the address.
IN_SIZES = {**IOCTL_IN_SIZES, **PTY_IOCTL_IN_SIZES}
# Requests whose answer is a structure copied out to the program.
OUT_SIZES = {
    TCGETS: TERMIOS_SIZE,
    TIOCGWINSZ: WINSIZE_SIZE,
    FIONREAD: 4,
    **PTY_IOCTL_OUT_SIZES,
}


def _ioctl(t, f, request: int, arg: int) -> int:  # noqa: ANN001
    if request == FIONBIO:
        flags = f.flags
        nonblocking = int.from_bytes(t.mm.read(arg, 4), "little")
        f.set_status_flags(
            flags | os.O_NONBLOCK if nonblocking else flags & ~os.O_NONBLOCK
        )
        return 0
    in_size = IN_SIZES.get(request)
    value = t.mm.read(arg, in_size) if in_size is not None else arg
    session_ioctl = getattr(f, "session_ioctl", None)
    if request in SESSION_IOCTLS and session_ioctl is not None:
        # Controlling-terminal requests need the caller's process group,
        # and may signal it (SIGHUP on TIOCNOTTY, SIGWINCH on a resize), as
        # kill(0, sig) would; sys_kill is imported under another name so
        # that SYSCALLS below does not list it as this module's.
        result, signals = session_ioctl(request, value, t.process.pid)
        for signal in signals:
            _signal_own_group(t, 0, signal)
    else:
        result = f.ioctl(request, value)
    if isinstance(result, bytes):
        size = OUT_SIZES.get(request)
        if size is not None:
            t.mm.write(arg, result[:size])
        return 0
    if request == FIONREAD:
        t.mm.write(arg, result.to_bytes(4, "little"))
        return 0
    return result


def _open_pty_peer(t, f, flags: int) -> int:  # noqa: ANN001
    """TIOCGPTPEER: open the slave of the pty master ``f`` as a new fd."""
    open_peer = getattr(f, "open_peer", None)
    if open_peer is None:
        raise SyscallError(errno.ENOTTY)
    peer = open_peer(flags)
    try:
        return t.fds.install(peer, cloexec=bool(flags & O_CLOEXEC))
    except FsError:
        peer.close()
        raise


# ---- metadata --------------------------------------------------------------


def _stat_at(t, dirfd, path_ptr, flags):  # noqa: ANN001, ANN202
    flags = s32(flags)
    path = path_arg(t, path_ptr) if path_ptr else ""
    if not path:
        if flags & AT_EMPTY_PATH:
            if s32(dirfd) == AT_FDCWD:
                return t.process.cwd.stat()
            return t.fds.get(s32(dirfd)).fstat()
        raise SyscallError(errno.ENOENT)
    cwd = dir_of(t, dirfd) if not path.startswith("/") else None
    return t.vfs.stat(path, cwd, not flags & AT_SYMLINK_NOFOLLOW)


def sys_stat(t, path, buf, *_):  # noqa: ANN001, ANN002
    t.mm.write(buf, _stat_at(t, AT_FDCWD, path, 0).pack())
    return 0


def sys_lstat(t, path, buf, *_):  # noqa: ANN001, ANN002
    t.mm.write(buf, _stat_at(t, AT_FDCWD, path, AT_SYMLINK_NOFOLLOW).pack())
    return 0


def sys_fstat(t, fd, buf, *_):  # noqa: ANN001, ANN002
    t.mm.write(buf, _file(t, fd).fstat().pack())
    return 0


def sys_newfstatat(t, dirfd, path, buf, flags, *_):  # noqa: ANN001, ANN002
    t.mm.write(buf, _stat_at(t, dirfd, path, flags).pack())
    return 0


def sys_statx(t, dirfd, path, flags, mask, buf, *_):  # noqa: ANN001, ANN002
    st = _stat_at(t, dirfd, path, flags)
    t.mm.write(buf, st.pack_statx(mask & 0xFFFFFFFF))
    return 0


def sys_statfs(t, path, buf, *_):  # noqa: ANN001, ANN002
    t.mm.write(buf, t.vfs.statfs(path_arg(t, path), t.process.cwd).pack())
    return 0


def sys_fstatfs(t, fd, buf, *_):  # noqa: ANN001, ANN002
    t.mm.write(buf, _file(t, fd).fstatfs().pack())
    return 0


def sys_getdents64(t, fd, buf, count, *_):  # noqa: ANN001, ANN002
    data = _file(t, fd).getdents64(count & 0xFFFFFFFF)
    if data:
        t.mm.write(buf, data)
    return len(data)


def _readlink(t, dirfd, path_ptr, buf, size):  # noqa: ANN001, ANN202
    size = s32(size)
    if size <= 0:
        raise SyscallError(errno.EINVAL)
    path = path_arg(t, path_ptr)
    cwd = dir_of(t, dirfd) if not path.startswith("/") else None
    target = t.vfs.readlink(path, cwd).encode("utf-8", "surrogateescape")[:size]
    t.mm.write(buf, target)
    return len(target)


def sys_readlink(t, path, buf, size, *_):  # noqa: ANN001, ANN002
    return _readlink(t, AT_FDCWD, path, buf, size)


def sys_readlinkat(t, dirfd, path, buf, size, *_):  # noqa: ANN001, ANN002
    return _readlink(t, dirfd, path, buf, size)


def _access(t, dirfd, path_ptr, mode, flags):  # noqa: ANN001, ANN202
    path = path_arg(t, path_ptr)
    cwd = dir_of(t, dirfd) if not path.startswith("/") else None
    t.vfs.access(path, s32(mode), cwd, follow=not s32(flags) & AT_SYMLINK_NOFOLLOW)
    return 0


def sys_access(t, path, mode, *_):  # noqa: ANN001, ANN002
    return _access(t, AT_FDCWD, path, mode, 0)


def sys_faccessat(t, dirfd, path, mode, *_):  # noqa: ANN001, ANN002
    return _access(t, dirfd, path, mode, 0)


def sys_faccessat2(t, dirfd, path, mode, flags, *_):  # noqa: ANN001, ANN002
    return _access(t, dirfd, path, mode, flags)


# ---- changing the tree -----------------------------------------------------


def _at(t, dirfd, path_ptr):  # noqa: ANN001, ANN202
    path = path_arg(t, path_ptr)
    return path, (dir_of(t, dirfd) if not path.startswith("/") else None)


def sys_mkdir(t, path, mode, *_):  # noqa: ANN001, ANN002
    return sys_mkdirat(t, AT_FDCWD, path, mode)


def sys_mkdirat(t, dirfd, path, mode, *_):  # noqa: ANN001, ANN002
    name, cwd = _at(t, dirfd, path)
    t.vfs.mkdir(name, mode & ~t.process.umask & 0o7777, cwd)
    return 0


def sys_mknodat(t, dirfd, path, mode, dev, *_):  # noqa: ANN001, ANN002
    name, cwd = _at(t, dirfd, path)
    directory, leaf = t.vfs.resolve_parent(name, cwd)
    if not leaf:
        raise SyscallError(errno.EEXIST)
    mknod = getattr(directory, "mknod", None)
    if mknod is None:
        raise SyscallError(errno.EPERM)
    if directory.mount is not None and directory.mount.readonly:
        raise SyscallError(errno.EROFS)
    mode &= 0xFFFFFFFF
    mknod(leaf, (mode & ~0o7777) | (mode & 0o7777 & ~t.process.umask))
    return 0


def sys_mknod(t, path, mode, dev, *_):  # noqa: ANN001, ANN002
    return sys_mknodat(t, AT_FDCWD, path, mode, dev)


def sys_rmdir(t, path, *_):  # noqa: ANN001, ANN002
    name, cwd = _at(t, AT_FDCWD, path)
    t.vfs.rmdir(name, cwd)
    return 0


def sys_unlink(t, path, *_):  # noqa: ANN001, ANN002
    return sys_unlinkat(t, AT_FDCWD, path, 0)


def sys_unlinkat(t, dirfd, path, flags, *_):  # noqa: ANN001, ANN002
    name, cwd = _at(t, dirfd, path)
    if s32(flags) & AT_REMOVEDIR:
        t.vfs.rmdir(name, cwd)
    else:
        t.vfs.unlink(name, cwd)
    return 0


def sys_rename(t, old, new, *_):  # noqa: ANN001, ANN002
    return sys_renameat2(t, AT_FDCWD, old, AT_FDCWD, new, 0)


def sys_renameat(t, olddir, old, newdir, new, *_):  # noqa: ANN001, ANN002
    return sys_renameat2(t, olddir, old, newdir, new, 0)


def sys_renameat2(t, olddir, old, newdir, new, flags, *_):  # noqa: ANN001, ANN002
    old_name, old_cwd = _at(t, olddir, old)
    new_name, new_cwd = _at(t, newdir, new)
    t.vfs.rename(old_name, new_name, old_cwd, new_cwd, s32(flags))
    return 0


def sys_symlink(t, target, path, *_):  # noqa: ANN001, ANN002
    return sys_symlinkat(t, target, AT_FDCWD, path)


def sys_symlinkat(t, target, dirfd, path, *_):  # noqa: ANN001, ANN002
    destination = path_arg(t, target)
    name, cwd = _at(t, dirfd, path)
    t.vfs.symlink(destination, name, cwd)
    return 0


def sys_link(t, old, new, *_):  # noqa: ANN001, ANN002
    return sys_linkat(t, AT_FDCWD, old, AT_FDCWD, new, 0)


def sys_linkat(t, olddir, old, newdir, new, flags, *_):  # noqa: ANN001, ANN002
    old_name, old_cwd = _at(t, olddir, old)
    new_name, new_cwd = _at(t, newdir, new)
    t.vfs.link(
        old_name, new_name, old_cwd, new_cwd, bool(s32(flags) & AT_SYMLINK_FOLLOW)
    )
    return 0


def sys_truncate(t, path, length, *_):  # noqa: ANN001, ANN002
    name, cwd = _at(t, AT_FDCWD, path)
    t.vfs.truncate(name, s64(length), cwd)
    return 0


def sys_ftruncate(t, fd, length, *_):  # noqa: ANN001, ANN002
    length = s64(length)
    if length < 0:
        raise SyscallError(errno.EINVAL)
    _file(t, fd).truncate(length)
    return 0


def sys_fsync(t, fd, *_):  # noqa: ANN001, ANN002
    _file(t, fd).fsync()
    return 0


def sys_chmod(t, path, mode, *_):  # noqa: ANN001, ANN002
    return sys_fchmodat(t, AT_FDCWD, path, mode)


def sys_fchmodat(t, dirfd, path, mode, *_):  # noqa: ANN001, ANN002
    name, cwd = _at(t, dirfd, path)
    t.vfs.chmod(name, mode & 0o7777, cwd)
    return 0


def sys_fchmod(t, fd, mode, *_):  # noqa: ANN001, ANN002
    t.vfs.setattr(_file(t, fd).vnode, mode=mode & 0o7777)
    return 0


def _ids(uid: int, gid: int) -> tuple[int | None, int | None]:
    uid, gid = s32(uid), s32(gid)
    return (None if uid == -1 else uid), (None if gid == -1 else gid)


def sys_chown(t, path, uid, gid, *_):  # noqa: ANN001, ANN002
    return sys_fchownat(t, AT_FDCWD, path, uid, gid, 0)


def sys_lchown(t, path, uid, gid, *_):  # noqa: ANN001, ANN002
    return sys_fchownat(t, AT_FDCWD, path, uid, gid, AT_SYMLINK_NOFOLLOW)


def sys_fchown(t, fd, uid, gid, *_):  # noqa: ANN001, ANN002
    new_uid, new_gid = _ids(uid, gid)
    t.vfs.setattr(_file(t, fd).vnode, uid=new_uid, gid=new_gid)
    return 0


def sys_fchownat(t, dirfd, path, uid, gid, flags, *_):  # noqa: ANN001, ANN002
    flags = s32(flags)
    if flags & AT_EMPTY_PATH and not t.mm.read_cstring(path, 1):
        return sys_fchown(t, dirfd, uid, gid)
    name, cwd = _at(t, dirfd, path)
    new_uid, new_gid = _ids(uid, gid)
    t.vfs.chown(name, new_uid, new_gid, cwd, not flags & AT_SYMLINK_NOFOLLOW)
    return 0


_UTIME_NOW_NSEC = (1 << 30) - 1
_UTIME_OMIT_NSEC = (1 << 30) - 2


def _timespec_arg(sec: int, nsec: int):  # noqa: ANN202 - int or a VFS sentinel
    if nsec == _UTIME_NOW_NSEC:
        return UTIME_NOW
    if nsec == _UTIME_OMIT_NSEC:
        return UTIME_OMIT
    if not 0 <= nsec < 1_000_000_000:
        raise SyscallError(errno.EINVAL)
    return sec * 1_000_000_000 + nsec


def sys_utimensat(t, dirfd, path, times, flags, *_):  # noqa: ANN001, ANN002
    flags = s32(flags)
    spec = None
    if times:
        a_sec, a_nsec, m_sec, m_nsec = struct.unpack("<qqqq", t.mm.read(times, 32))
        spec = (_timespec_arg(a_sec, a_nsec), _timespec_arg(m_sec, m_nsec))
    if not path:
        atime, mtime = spec if spec is not None else (UTIME_NOW, UTIME_NOW)
        t.vfs.setattr(t.fds.get(s32(dirfd)).vnode, atime_ns=atime, mtime_ns=mtime)
        return 0
    name, cwd = _at(t, dirfd, path)
    t.vfs.utimens(name, spec, cwd, not flags & AT_SYMLINK_NOFOLLOW)
    return 0


POSIX_FADV_DONTNEED = 4
POSIX_FADV_NOREUSE = 5


def sys_fadvise64(t, fd, offset, length, advice, *_):  # noqa: ANN001, ANN002
    f = _file(t, fd)
    if not 0 <= s32(advice) <= POSIX_FADV_NOREUSE:
        raise SyscallError(errno.EINVAL)
    if f.path.startswith("pipe:"):
        raise SyscallError(errno.ESPIPE)
    # Advice about future access: the kernel keeps no page cache to tune, so
    # following it changes nothing, and success is the truthful answer.
    return 0


CLOSE_RANGE_UNSHARE = 2
CLOSE_RANGE_CLOEXEC = 4


def sys_close_range(t, first, last, flags, *_):  # noqa: ANN001, ANN002
    first, last, flags = first & 0xFFFFFFFF, last & 0xFFFFFFFF, s32(flags)
    if first > last or flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC):
        raise SyscallError(errno.EINVAL)
    for fd, _open_file in t.fds.items():
        if first <= fd <= last:
            if flags & CLOSE_RANGE_CLOEXEC:
                t.fds.set_cloexec(fd, True)
            else:
                t.fds.close(fd)
    return 0


MFD_CLOEXEC = 1
MFD_ALLOW_SEALING = 2
_memfd_numbers = iter(range(1, 1 << 62))


def sys_memfd_create(t, name, flags, *_):  # noqa: ANN001, ANN002
    flags = s32(flags)
    if flags & ~(MFD_CLOEXEC | MFD_ALLOW_SEALING):
        return unsupported(f"memfd_create flags {flags:#x}", errno.EINVAL)
    label = t.mm.read_cstring(name, 250).decode("utf-8", "replace")
    # An anonymous file is a ramfs file whose only name is removed at once.
    path = f"/tmp/.memfd-{next(_memfd_numbers)}-{label.replace('/', '_')}"
    f = t.vfs.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    t.vfs.unlink(path)
    return t.fds.install(f, cloexec=bool(flags & MFD_CLOEXEC))


def sys_umask(t, mask, *_):  # noqa: ANN001, ANN002
    old = t.process.umask
    t.process.umask = mask & 0o777
    return old


# ---- the working directory -------------------------------------------------


def sys_getcwd(t, buf, size, *_):  # noqa: ANN001, ANN002
    path = t.vfs.realpath(t.process.cwd).encode() + b"\0"
    if len(path) > size:
        raise SyscallError(errno.ERANGE)
    t.mm.write(buf, path)
    return len(path)


def sys_chdir(t, path, *_):  # noqa: ANN001, ANN002
    name, cwd = _at(t, AT_FDCWD, path)
    vnode = t.vfs.resolve(name, cwd)
    if not vnode.is_dir:
        raise SyscallError(errno.ENOTDIR)
    t.process.cwd = vnode
    return 0


def sys_fchdir(t, fd, *_):  # noqa: ANN001, ANN002
    vnode = _file(t, fd).vnode
    if not vnode.is_dir:
        raise SyscallError(errno.ENOTDIR)
    t.process.cwd = vnode
    return 0


SYSCALLS = {
    NUMBERS[name[4:]]: function
    for name, function in list(globals().items())
    if name.startswith("sys_") and name[4:] in NUMBERS
}
SYSCALLS[NUMBERS["fdatasync"]] = sys_fsync
SYSCALLS[NUMBERS["syncfs"]] = sys_fsync
