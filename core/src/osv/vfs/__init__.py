"""The virtual file system: mounts, vnodes, open files, fds, ramfs/devfs/procfs.

Modelled on OSv's VFS (itself BSD's): a mount table of file systems, each a
tree of vnodes; open file descriptions shared by fds; ``.`` and ``..`` made
up by the VFS, never stored. Everything fails with ``FsError``, whose
``errno`` is what Linux would report.

Contract (the system-call layer is written against exactly this):

Errors
    ``FsError(errno, message="")`` with ``.errno`` (int) and ``.message``.

Vnode (one per file; subclassed by each file system)
    Attributes ``ino mode nlink uid gid size rdev atime mtime ctime``
    (times: int nanoseconds), ``blksize``, ``mount``; properties
    ``is_dir is_reg is_symlink d_type blocks``.
    ``stat() -> Stat``;
    ``setattr(*, mode=None, uid=None, gid=None, atime_ns=None,
    mtime_ns=None)`` (None: unchanged);
    directories: ``lookup(name)`` (".." gives the parent), ``create(name,
    mode)``, ``mkdir(name, mode)``, ``unlink(name)``, ``rmdir(name)``,
    ``rename(old_name, new_dir, new_name, flags=0)``, ``symlink(name,
    target)``, ``link(name, vnode)``, ``readdir() -> iterable of (name, ino,
    d_type)``; symlinks: ``readlink() -> str``; data: ``read(offset, size)
    -> bytes``, ``readinto(offset, memoryview) -> int``, ``write(offset,
    data) -> int``, ``truncate(size)``, ``fsync()``; ``open(flags, path) ->
    File``.

FileSystemType / Mount
    ``FileSystemType``: class attribute ``name``; ``mount(vfs, device,
    options, readonly, **extra) -> Mount`` (extra: objects from the kernel,
    e.g. ``provider=`` for procfs, ``console=`` for devfs). Types needing
    kernel services also offer ``for_kernel(kernel)``: DevFs uses
    ``kernel.console``, ProcFs ``kernel.proc_info()``.
    ``Mount``: ``root fstype device options mountpoint flags readonly
    covered parent dev mount_id open_files``, ``statfs() -> StatFs``,
    ``unmount()`` hook.

Vfs (``cwd`` is a directory Vnode or None for the root; paths str or bytes)
    ``register_filesystem(fstype)``, ``filesystem(name)``, ``filesystems()``;
    ``mount(fstype | name, device, mountpoint, options="", readonly=False,
    cwd=None, **extra) -> Mount``, ``umount(path, flags=0, cwd=None)``, ``mounts()``,
    ``root``, ``umask``;
    ``resolve(path, cwd=None, follow=True) -> Vnode``,
    ``resolve_parent(path, cwd=None) -> (Vnode, name)``,
    ``resolve_dir(path, cwd=None) -> Vnode``, ``realpath(vnode) -> str``,
    ``fd_target(file) -> str``;
    ``open(path, flags, mode=0o666, cwd=None) -> File``,
    ``stat(path, cwd=None, follow=True) -> Stat``, ``statfs(path, cwd=None)``,
    ``access(path, mode, cwd=None, follow=True)``,
    ``mkdir(path, mode=0o777, cwd=None)``, ``rmdir(path, cwd=None)``,
    ``unlink(path, cwd=None)``,
    ``rename(old, new, cwd=None, new_cwd=<cwd>, flags=0)``,
    ``symlink(target, path, cwd=None)``,
    ``link(old, new, cwd=None, new_cwd=<cwd>, follow=False)``,
    ``readlink(path, cwd=None) -> str``, ``truncate(path, length, cwd=None)``,
    ``utimens(path, times=None, cwd=None, follow=True)`` (times: (atime,
    mtime), each ns, UTIME_NOW or UTIME_OMIT), ``chmod(path, mode, cwd=None,
    follow=True)``, ``chown(path, uid, gid, cwd=None, follow=True)``,
    ``setattr(vnode, *, mode, uid, gid, atime_ns, mtime_ns)`` (the f*
    variants, with the read-only check; uid/gid -1 or None: unchanged).
    Creation modes are used as given: the caller applies the umask.

File (open file description; reference-counted)
    ``vnode flags position path readable writable closed``;
    ``read(n)``, ``readinto(mv)``, ``write(data)``, ``pread(n, offset)``,
    ``preadinto(mv, offset)``, ``pwrite(data, offset)``,
    ``lseek(offset, whence)``, ``truncate(size)``, ``fsync()``, ``fstat()``,
    ``fstatfs()``, ``getdents64(bufsize) -> bytes``, ``ioctl(request, arg)
    -> int | bytes`` (bytes: copy them out to ``arg``; requests in
    IOCTL_IN_SIZES get the input structure's bytes as ``arg``),
    ``isatty()``, ``poll_ready(events) -> revents``,
    ``set_status_flags(flags)`` (F_SETFL), ``acquire()``, ``close()``,
    ``release()`` hook.
    A read or write that waits (pipes and FIFOs, eventfd, console input,
    ptys), called from a guest thread, ends when that thread has a signal to
    handle: with the count moved so far, or ``FsError(EINTR)`` with the call
    marked to start again under SA_RESTART; once the program has ended it
    raises ``osv.sched.ThreadExit``.

FdTable
    ``install(file, fd=None, min_fd=0, cloexec=False) -> int``,
    ``get(fd)``, ``close(fd)``, ``dup(fd, min_fd=0, cloexec=False)``,
    ``dup2(old, new)``, ``dup3(old, new, flags)``, ``get_cloexec(fd)``,
    ``set_cloexec(fd, on)``, ``items()``, ``close_all()``, ``limit``.

Stat / StatFs
    ``Stat.pack()`` (struct stat, 144 bytes), ``Stat.pack_statx(mask)``
    (struct statx, 256 bytes), ``StatFs.pack()`` (struct statfs, 120 bytes).

File systems
    ``RamFs()`` ("ramfs"), ``DevFs(console=None)`` ("devfs";
    ``add_device(name, factory(mount, ino) -> Vnode)``,
    ``remove_device(name)``, ``attach_console(console)``; device nodes
    subclass ``DeviceVnode``), ``ProcFs(provider=None)`` ("procfs"; the
    provider may come at mount as ``provider=``; see ``ProcProvider``);
    ``Console(input_fd=0, output_fd=1)`` behind /dev/console and /dev/tty
    (``read write readinto isatty ioctl redirect_output close``), opened as
    ``ConsoleFile(vnode, flags, path, console)``: a read-only open answers
    isatty and terminal ioctls for the input fd, other opens for the output
    fd.

Pseudo-terminals (``DevFs.attach_ptys() -> DevPts``; the kernel's devfs has
them)
    /dev/ptmx opens a new pair's master (``PtyMasterFile``), /dev/pts lists
    the slaves (``PtySlaveFile`` when opened). Both ends are ``PtyFile``s:
    ``ioctl`` answers the terminal requests; ``open_peer(flags)`` is
    TIOCGPTPEER; ``session_ioctl(request, arg, pgrp) -> (result, signals)``
    answers SESSION_IOCTLS for a caller in process group ``pgrp`` and names
    the signals the caller sends its own group, as kill(0) would
    (TIOCNOTTY's). The signals a terminal sends itself (ISIG characters,
    TIOCSIG, a resize, the master's hang-up) go straight to the program
    whose controlling terminal the slave is (``DevPts.session``).
    PTY_IOCTL_IN_SIZES and PTY_IOCTL_OUT_SIZES give the structure sizes of
    the pty requests.
"""

from ._abi import (
    AT_FDCWD,
    DT_BLK,
    DT_CHR,
    DT_DIR,
    DT_FIFO,
    DT_LNK,
    DT_REG,
    DT_SOCK,
    DT_UNKNOWN,
    F_OK,
    FIONREAD,
    MAXSYMLINKS,
    MNT_DETACH,
    MNT_FORCE,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    NAME_MAX,
    O_ACCMODE,
    O_APPEND,
    O_ASYNC,
    O_CLOEXEC,
    O_CREAT,
    O_DIRECT,
    O_DIRECTORY,
    O_DSYNC,
    O_EXCL,
    O_LARGEFILE,
    O_NOATIME,
    O_NOCTTY,
    O_NOFOLLOW,
    O_NONBLOCK,
    O_PATH,
    O_RDONLY,
    O_RDWR,
    O_SYNC,
    O_TMPFILE,
    O_TRUNC,
    O_WRONLY,
    PATH_MAX,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLNVAL,
    POLLOUT,
    POLLPRI,
    POLLRDNORM,
    POLLWRNORM,
    PROC_SUPER_MAGIC,
    R_OK,
    RAMFS_MAGIC,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    RENAME_WHITEOUT,
    SEEK_CUR,
    SEEK_DATA,
    SEEK_END,
    SEEK_HOLE,
    SEEK_SET,
    STATX_BASIC_STATS,
    STATX_BTIME,
    STATX_MNT_ID,
    TCGETS,
    TCSETS,
    TCSETSF,
    TCSETSW,
    TIOCGWINSZ,
    TIOCSWINSZ,
    TMPFS_MAGIC,
    W_OK,
    X_OK,
    major,
    makedev,
    minor,
)
from ._console import IOCTL_IN_SIZES, Console, ConsoleDevice, ConsoleFile
from ._devfs import DevFs, DeviceVnode, NullDevice, RandomDevice, ZeroDevice
from ._errors import FsError
from ._eventfd import EFD_SEMAPHORE, EpollFile, EventFile
from ._fdtable import DEFAULT_FD_LIMIT, FdTable
from ._file import File
from ._pipe import PIPE_BUF, PipeFile, make_pipe
from ._procfs import GeneratedFile, ProcFs, ProcProvider, mounts_text
from ._pty import (
    PTY_IOCTL_IN_SIZES,
    PTY_IOCTL_OUT_SIZES,
    SESSION_IOCTLS,
    TIOCGPTPEER,
    DevPts,
    PtyFile,
    PtyMasterFile,
    PtySlaveFile,
    Termios,
)
from ._ramfs import RamFs
from ._stat import Stat, StatFs
from ._vfs import UMOUNT_NOFOLLOW, UTIME_NOW, UTIME_OMIT, TimeUpdate, Vfs
from ._vnode import FileSystemType, Mount, Vnode

__all__ = [
    "AT_FDCWD",
    "DEFAULT_FD_LIMIT",
    "DT_BLK",
    "DT_CHR",
    "DT_DIR",
    "DT_FIFO",
    "DT_LNK",
    "DT_REG",
    "DT_SOCK",
    "DT_UNKNOWN",
    "F_OK",
    "FIONREAD",
    "IOCTL_IN_SIZES",
    "MAXSYMLINKS",
    "MNT_DETACH",
    "MNT_FORCE",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_RDONLY",
    "NAME_MAX",
    "O_ACCMODE",
    "O_APPEND",
    "O_ASYNC",
    "O_CLOEXEC",
    "O_CREAT",
    "O_DIRECT",
    "O_DIRECTORY",
    "O_DSYNC",
    "O_EXCL",
    "O_LARGEFILE",
    "O_NOATIME",
    "O_NOCTTY",
    "O_NOFOLLOW",
    "O_NONBLOCK",
    "O_PATH",
    "O_RDONLY",
    "O_RDWR",
    "O_SYNC",
    "O_TMPFILE",
    "O_TRUNC",
    "O_WRONLY",
    "PATH_MAX",
    "POLLERR",
    "POLLHUP",
    "POLLIN",
    "POLLNVAL",
    "POLLOUT",
    "POLLPRI",
    "POLLRDNORM",
    "POLLWRNORM",
    "PROC_SUPER_MAGIC",
    "R_OK",
    "RAMFS_MAGIC",
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "RENAME_WHITEOUT",
    "SEEK_CUR",
    "SEEK_DATA",
    "SEEK_END",
    "SEEK_HOLE",
    "SEEK_SET",
    "STATX_BASIC_STATS",
    "STATX_BTIME",
    "STATX_MNT_ID",
    "TCGETS",
    "TCSETS",
    "TCSETSF",
    "TCSETSW",
    "TIOCGWINSZ",
    "TIOCSWINSZ",
    "TMPFS_MAGIC",
    "UMOUNT_NOFOLLOW",
    "UTIME_NOW",
    "UTIME_OMIT",
    "W_OK",
    "X_OK",
    "Console",
    "ConsoleDevice",
    "ConsoleFile",
    "DevFs",
    "DeviceVnode",
    "FdTable",
    "File",
    "FileSystemType",
    "EFD_SEMAPHORE",
    "EpollFile",
    "EventFile",
    "FsError",
    "PIPE_BUF",
    "PipeFile",
    "PTY_IOCTL_IN_SIZES",
    "PTY_IOCTL_OUT_SIZES",
    "SESSION_IOCTLS",
    "TIOCGPTPEER",
    "DevPts",
    "PtyFile",
    "PtyMasterFile",
    "PtySlaveFile",
    "Termios",
    "make_pipe",
    "GeneratedFile",
    "Mount",
    "NullDevice",
    "ProcFs",
    "ProcProvider",
    "RamFs",
    "RandomDevice",
    "Stat",
    "StatFs",
    "TimeUpdate",
    "Vfs",
    "Vnode",
    "ZeroDevice",
    "major",
    "makedev",
    "minor",
    "mounts_text",
]
