"""procfs: /proc, generated on demand from the kernel's view of the guest."""

from __future__ import annotations

import errno
import itertools
import stat as statmod
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ._abi import MS_RDONLY, O_PATH, PROC_SUPER_MAGIC, SEEK_CUR, SEEK_SET
from ._errors import FsError
from ._file import File
from ._vnode import FileSystemType, Mount, Vnode

if TYPE_CHECKING:
    from ._vfs import Vfs


class ProcProvider(Protocol):
    """What procfs asks the rest of the kernel; implemented by the process layer.

    Every method is called when a file is opened (or a link read), so each
    open sees the state of that moment. Text is returned exactly as the file
    should read, trailing newline included.
    """

    def pid(self) -> int:
        """The process id: /proc/self links to /proc/<pid>."""
        ...

    def exe_path(self) -> str:
        """Absolute guest path of the program: target of /proc/self/exe."""
        ...

    def cmdline_bytes(self) -> bytes:
        """/proc/self/cmdline: each argument NUL-terminated."""
        ...

    def maps_text(self) -> str:
        """/proc/self/maps: one Linux-format line per memory area."""
        ...

    def status_text(self) -> str:
        """/proc/self/status: "Key:\\tvalue" lines (Name, Pid, VmRSS, Threads...)."""
        ...

    def stat_text(self) -> str:
        """/proc/self/stat: the one-line, space-separated process status."""
        ...

    def fd_targets(self) -> dict[int, str]:
        """Open fds and what /proc/self/fd/<fd> points at (Vfs.fd_target)."""
        ...

    def meminfo_text(self) -> str:
        """/proc/meminfo: "MemTotal:  N kB" lines."""
        ...

    def cpuinfo_text(self) -> str:
        """/proc/cpuinfo: a block of "key\\t: value" lines per CPU."""
        ...

    def hostname(self) -> str:
        """The host name, without newline: /proc/sys/kernel/hostname."""
        ...


NodeBuilder = Callable[[], Vnode]


def _mangle(field: str) -> str:
    """Escape a /proc/mounts field the way Linux does (space as \\040, ...)."""
    for char, code in (
        ("\\", "\\134"),
        (" ", "\\040"),
        ("\t", "\\011"),
        ("\n", "\\012"),
    ):
        field = field.replace(char, code)
    return field


def mounts_text(vfs: Vfs) -> str:
    """The mount table in /proc/mounts format: device dir type options 0 0."""
    lines = []
    for mount in vfs.mounts():
        options = "ro" if mount.readonly else "rw"
        if mount.options:
            options += "," + mount.options
        device = _mangle(mount.device or "none")
        lines.append(
            f"{device} {_mangle(mount.mountpoint)} {mount.fstype} {options} 0 0\n"
        )
    return "".join(lines)


def filesystems_text(vfs: Vfs) -> str:
    """The registered types in /proc/filesystems format."""
    return "".join(
        f"{'nodev' if fs.nodev else ''}\t{fs.name}\n" for fs in vfs.filesystems()
    )


class GeneratedFile(File):
    """An open procfs file: the content generated at open, read like a file.

    As with Linux's seq_file, the size is unknown, so seeking works only
    from the start or the current position.
    """

    def __init__(self, vnode: ProcFile, flags: int, path: str) -> None:
        super().__init__(vnode, flags, path)
        self.content = vnode.generate() if self.readable else b""

    def read(self, size: int) -> bytes:
        data = self.pread(size, self.position)
        self.position += len(data)
        return data

    def readinto(self, buf: memoryview) -> int:
        n = self.preadinto(buf, self.position)
        self.position += n
        return n

    def pread(self, size: int, offset: int) -> bytes:
        if not self.readable:
            raise FsError(errno.EBADF, "file not open for reading")
        if offset < 0:
            raise FsError(errno.EINVAL, "negative offset")
        return self.content[offset : offset + size]

    def preadinto(self, buf: memoryview, offset: int) -> int:
        data = self.pread(len(buf), offset)
        buf[: len(data)] = data
        return len(data)

    def lseek(self, offset: int, whence: int) -> int:
        if self.flags & O_PATH:
            raise FsError(errno.EBADF, "file opened with O_PATH")
        if whence not in (SEEK_SET, SEEK_CUR):
            raise FsError(errno.EINVAL, "procfs files seek only from start or here")
        new = offset if whence == SEEK_SET else self.position + offset
        if new < 0:
            raise FsError(errno.EINVAL, "resulting offset is negative")
        self.position = new
        return new


class ProcMount(Mount):
    """A mounted procfs; nodes are made on first use and kept, for stable inodes."""

    magic = PROC_SUPER_MAGIC

    def __init__(self, device: str, options: str, flags: int) -> None:
        super().__init__(ProcFs.name, device, options, flags)
        self._nodes: dict[str, Vnode] = {}
        self._inos = itertools.count(1)

    def node(self, key: str, build: Callable[[int], Vnode]) -> Vnode:
        """The node known as ``key``, built with a fresh inode number once."""
        node = self._nodes.get(key)
        if node is None:
            node = self._nodes[key] = build(next(self._inos))
        return node


class ProcDir(Vnode):
    """A procfs directory whose entries come from ``listing`` at each look."""

    def __init__(
        self,
        mount: ProcMount,
        ino: int,
        parent: Vnode | None,
        listing: Callable[[], dict[str, NodeBuilder]],
        perm: int = 0o555,
    ) -> None:
        super().__init__(mount, ino, statmod.S_IFDIR | perm, nlink=2)
        self.parent = parent if parent is not None else self
        self._listing = listing

    @property
    def blocks(self) -> int:
        return 0

    def lookup(self, name: str) -> Vnode:
        if name == ".":
            return self
        if name == "..":
            return self.parent
        build = self._listing().get(name)
        if build is None:
            raise FsError(errno.ENOENT, f"no entry {name!r} in procfs")
        return build()

    def readdir(self) -> list[tuple[str, int, int]]:
        entries = []
        for name, build in self._listing().items():
            node = build()
            entries.append((name, node.ino, node.d_type))
        return entries

    # Linux's procfs answers creations with ENOENT and removals with EPERM.
    def _no_dir_op(self) -> FsError:
        return FsError(errno.ENOENT, "procfs entries cannot be created")

    def unlink(self, name: str) -> None:
        raise FsError(errno.EPERM, "procfs entries cannot be removed")

    def rmdir(self, name: str) -> None:
        raise FsError(errno.EPERM, "procfs entries cannot be removed")


class ProcFile(Vnode):
    """A procfs file: ``generate`` makes its bytes; size reads as 0, as on Linux."""

    def __init__(
        self, mount: ProcMount, ino: int, generate: Callable[[], bytes]
    ) -> None:
        super().__init__(mount, ino, statmod.S_IFREG | 0o444)
        self.generate = generate

    @property
    def blocks(self) -> int:
        return 0

    def read(self, offset: int, size: int) -> bytes:
        return self.generate()[offset : offset + size]

    def write(self, offset: int, data: bytes | memoryview) -> int:
        raise FsError(errno.EIO, "procfs file is not writable")

    def truncate(self, size: int) -> None:
        # Linux accepts O_TRUNC on procfs files and changes nothing.
        pass

    def open(self, flags: int, path: str) -> File:
        return GeneratedFile(self, flags, path)


class ProcLink(Vnode):
    """A procfs symbolic link whose target is asked for at each readlink."""

    def __init__(
        self, mount: ProcMount, ino: int, target: Callable[[], str], perm: int = 0o777
    ) -> None:
        super().__init__(mount, ino, statmod.S_IFLNK | perm)
        self._target = target

    @property
    def blocks(self) -> int:
        return 0

    def readlink(self) -> str:
        return self._target()


class _ProcTree:
    """Builds the /proc layout of one mount from the provider and the Vfs."""

    def __init__(self, mount: ProcMount, vfs: Vfs, provider: ProcProvider) -> None:
        self.mount = mount
        self.vfs = vfs
        self.provider = provider
        self.root = mount.node(
            "", lambda ino: ProcDir(mount, ino, None, self._root_listing)
        )

    def _file(self, key: str, generate: Callable[[], bytes]) -> NodeBuilder:
        return lambda: self.mount.node(
            key, lambda ino: ProcFile(self.mount, ino, generate)
        )

    def _link(
        self, key: str, target: Callable[[], str], perm: int = 0o777
    ) -> NodeBuilder:
        return lambda: self.mount.node(
            key, lambda ino: ProcLink(self.mount, ino, target, perm)
        )

    def _dir(
        self,
        key: str,
        parent: NodeBuilder,
        listing: Callable[[], dict[str, NodeBuilder]],
        perm: int = 0o555,
    ) -> NodeBuilder:
        return lambda: self.mount.node(
            key, lambda ino: ProcDir(self.mount, ino, parent(), listing, perm)
        )

    def _root_listing(self) -> dict[str, NodeBuilder]:
        provider = self.provider
        pid = str(provider.pid())
        root = lambda: self.root  # noqa: E731
        kernel_dir = self._dir(
            "sys/kernel",
            lambda: self.root.lookup("sys"),
            lambda: {
                "hostname": self._file(
                    "sys/kernel/hostname", lambda: (provider.hostname() + "\n").encode()
                )
            },
        )
        return {
            # Asked at each readlink: a later program has another pid.
            "self": self._link("self", lambda: str(provider.pid())),
            pid: self._dir(pid, root, lambda: self._pid_listing(pid)),
            "cpuinfo": self._file("cpuinfo", lambda: provider.cpuinfo_text().encode()),
            "meminfo": self._file("meminfo", lambda: provider.meminfo_text().encode()),
            "mounts": self._file("mounts", lambda: mounts_text(self.vfs).encode()),
            "filesystems": self._file(
                "filesystems", lambda: filesystems_text(self.vfs).encode()
            ),
            "sys": self._dir("sys", root, lambda: {"kernel": kernel_dir}),
        }

    def _pid_listing(self, pid: str) -> dict[str, NodeBuilder]:
        provider = self.provider
        pid_dir = lambda: self.root.lookup(pid)  # noqa: E731
        return {
            "exe": self._link(f"{pid}/exe", provider.exe_path),
            "cmdline": self._file(f"{pid}/cmdline", provider.cmdline_bytes),
            "maps": self._file(f"{pid}/maps", lambda: provider.maps_text().encode()),
            "stat": self._file(f"{pid}/stat", lambda: provider.stat_text().encode()),
            "status": self._file(
                f"{pid}/status", lambda: provider.status_text().encode()
            ),
            "mounts": self._file(
                f"{pid}/mounts", lambda: mounts_text(self.vfs).encode()
            ),
            "fd": self._dir(f"{pid}/fd", pid_dir, lambda: self._fd_listing(pid), 0o500),
        }

    def _fd_listing(self, pid: str) -> dict[str, NodeBuilder]:
        # TODO: Linux's fd links are "magic": opening one reopens the very
        # file, even a pipe or a deleted file. Ours are plain symbolic links
        # to the path text, so only fds of files still in the tree reopen.
        return {
            str(fd): self._link(f"{pid}/fd/{fd}", self._fd_target(fd), 0o700)
            for fd in sorted(self.provider.fd_targets())
        }

    def _fd_target(self, fd: int) -> Callable[[], str]:
        def target() -> str:
            try:
                return self.provider.fd_targets()[fd]
            except KeyError:
                raise FsError(errno.ENOENT, f"fd {fd} is closed") from None

        return target


class ProcFs(FileSystemType):
    """The ``procfs`` type; its files come from a ProcProvider and the Vfs.

    The provider is given here or, per mount, as ``provider=`` to mount.

    Layout: self -> <pid>; <pid>/{exe, cmdline, maps, stat, status, mounts,
    fd/<n>}; cpuinfo, meminfo, mounts, filesystems, sys/kernel/hostname.
    """

    name = "procfs"

    def __init__(self, provider: ProcProvider | None = None) -> None:
        self.provider = provider

    @classmethod
    def for_kernel(cls, kernel: object) -> ProcFs:
        """The procfs of a kernel, fed by its ``proc_info()`` provider."""
        return cls(kernel.proc_info())  # type: ignore[attr-defined]

    def mount(
        self,
        vfs: Vfs,
        device: str,
        options: str,
        readonly: bool,
        provider: ProcProvider | None = None,
    ) -> Mount:
        provider = provider if provider is not None else self.provider
        if provider is None:
            raise FsError(errno.EINVAL, "procfs needs a ProcProvider to mount")
        mount = ProcMount(device, options, MS_RDONLY if readonly else 0)
        mount.root = _ProcTree(mount, vfs, provider).root
        return mount
