"""devfs: device nodes (null, zero, random, console, ptmx...) and /dev/pts."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat as statmod
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._abi import MS_RDONLY, TMPFS_MAGIC, makedev
from ._errors import FsError
from ._vnode import FileSystemType, Mount, SymlinkVnode, Vnode

if TYPE_CHECKING:
    from ._console import Console
    from ._pty import DevPts
    from ._vfs import Vfs

logger = logging.getLogger(__name__)

DeviceFactory = Callable[[Mount, int], Vnode]


class DeviceVnode(Vnode):
    """Base for device nodes: a character device that holds no data.

    Subclasses override ``read``/``readinto``/``write`` (which ignore the
    offset unless the device is seekable), or ``open`` to hand out their own
    File class.
    """

    def __init__(self, mount: Mount, ino: int, rdev: int, perm: int = 0o666) -> None:
        super().__init__(mount, ino, statmod.S_IFCHR | perm, rdev=rdev)

    @property
    def blocks(self) -> int:
        return 0


class NullDevice(DeviceVnode):
    """/dev/null: reads hit end of file, writes vanish."""

    def read(self, offset: int, size: int) -> bytes:
        return b""

    def readinto(self, offset: int, buf: memoryview) -> int:
        return 0

    def write(self, offset: int, data: bytes | memoryview) -> int:
        return len(data)


class ZeroDevice(DeviceVnode):
    """/dev/zero: endless zero bytes; writes vanish."""

    def read(self, offset: int, size: int) -> bytes:
        return bytes(size)

    def readinto(self, offset: int, buf: memoryview) -> int:
        n = len(buf)
        buf[:] = bytes(n)
        return n

    def write(self, offset: int, data: bytes | memoryview) -> int:
        return len(data)


class RandomDevice(DeviceVnode):
    """/dev/random and /dev/urandom: bytes from the host's generator.

    Writes are accepted and dropped; on Linux they only stir the pool.
    """

    def read(self, offset: int, size: int) -> bytes:
        return os.urandom(size)

    def readinto(self, offset: int, buf: memoryview) -> int:
        n = len(buf)
        buf[:] = os.urandom(n)
        return n

    def write(self, offset: int, data: bytes | memoryview) -> int:
        return len(data)


# The links every Linux /dev has into the calling process's descriptors.
_FD_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}


def _console_node(console: Console, rdev: int, perm: int) -> DeviceFactory:
    from ._console import ConsoleDevice

    def factory(mount: Mount, ino: int) -> Vnode:
        return ConsoleDevice(mount, ino, console, rdev, perm)

    return factory


class DevMount(Mount):
    """A mounted devfs. Linux's /dev is devtmpfs, which reports tmpfs's magic."""

    magic = TMPFS_MAGIC

    def __init__(self, devfs: DevFs, device: str, options: str, flags: int) -> None:
        super().__init__(devfs.name, device, options, flags)
        self.devfs = devfs

    def unmount(self) -> None:
        self.devfs.forget_root(self.root)


class DevDir(Vnode):
    """The devfs root: device nodes appear as they are added to the DevFs."""

    def __init__(self, mount: DevMount, devfs: DevFs) -> None:
        self._inos = itertools.count(1)
        super().__init__(mount, next(self._inos), statmod.S_IFDIR | 0o755, nlink=2)
        self._devfs = devfs
        self._nodes: dict[str, Vnode] = {}

    @property
    def blocks(self) -> int:
        return 0

    def lookup(self, name: str) -> Vnode:
        if name in (".", ".."):
            return self
        node = self._nodes.get(name)
        if node is not None:
            return node
        factory = self._devfs.factories.get(name)
        if factory is None:
            raise FsError(errno.ENOENT, f"no device {name!r}")
        node = self._nodes[name] = factory(self.mount, next(self._inos))
        return node

    def new_ino(self) -> int:
        """A fresh inode number in this mount, for nodes below the root."""
        return next(self._inos)

    def readdir(self) -> list[tuple[str, int, int]]:
        entries = []
        for name in list(self._devfs.factories):
            node = self.lookup(name)
            entries.append((name, node.ino, node.d_type))
        return entries

    def forget(self, name: str) -> None:
        self._nodes.pop(name, None)

    def _no_dir_op(self) -> FsError:
        return FsError(errno.EPERM, "devfs holds only the devices the kernel adds")


class DevFs(FileSystemType):
    """The ``devfs`` type: null, zero, random, urandom, the links fd, stdin,
    stdout and stderr into /proc/self/fd; console and tty once
    a Console is attached (here, by ``attach_console``, or by mounting with
    ``console=``); ptmx and the pts directory once ``attach_ptys`` is
    called; other parts of the kernel add their devices (disks, ...) with
    ``add_device``.
    """

    name = "devfs"

    def __init__(self, console: Console | None = None) -> None:
        self.factories: dict[str, DeviceFactory] = {}
        self.devpts: DevPts | None = None
        self._roots: list[DevDir] = []
        self.add_device("null", lambda m, i: NullDevice(m, i, makedev(1, 3)))
        self.add_device("zero", lambda m, i: ZeroDevice(m, i, makedev(1, 5)))
        self.add_device("random", lambda m, i: RandomDevice(m, i, makedev(1, 8)))
        self.add_device("urandom", lambda m, i: RandomDevice(m, i, makedev(1, 9)))
        for name, target in _FD_LINKS.items():
            self.add_device(
                name, lambda m, i, target=target: SymlinkVnode(m, i, target)
            )
        if console is not None:
            self.attach_console(console)

    @classmethod
    def for_kernel(cls, kernel: object) -> DevFs:
        """The devfs of a kernel: its ``console`` behind /dev/console and
        /dev/tty, and pseudo-terminals."""
        devfs = cls(kernel.console)  # type: ignore[attr-defined]
        devfs.attach_ptys()
        return devfs

    def attach_console(self, console: Console) -> None:
        """Add /dev/console and /dev/tty, both leading to ``console``."""
        self.add_device("console", _console_node(console, makedev(5, 1), 0o600))
        self.add_device("tty", _console_node(console, makedev(5, 0), 0o666))

    def attach_ptys(self) -> DevPts:
        """Add /dev/ptmx and the /dev/pts directory; returns their pty set.

        Every mount of this devfs shares the one set, as every devpts
        mount of a Linux system without private instances does.
        """
        # Imported here: _pty builds its nodes on this module's DeviceVnode.
        from ._pty import DevPts, PtmxDevice, PtsDir

        if self.devpts is not None:
            return self.devpts
        devpts = self.devpts = DevPts()

        def pts(mount: Mount, ino: int) -> Vnode:
            # Slave nodes take their inode numbers from the devfs root's.
            return PtsDir(mount, ino, devpts, mount.root.new_ino)

        self.add_device("ptmx", lambda m, i: PtmxDevice(m, i, devpts))
        self.add_device("pts", pts)
        return devpts

    def add_device(self, name: str, factory: DeviceFactory) -> None:
        """Add the node ``name``; ``factory(mount, ino)`` builds its vnode.

        The vnode is built on first lookup in each mount of this devfs.
        """
        if "/" in name or name in ("", ".", ".."):
            raise FsError(errno.EINVAL, f"bad device name {name!r}")
        if name in self.factories:
            raise FsError(errno.EEXIST, f"device {name!r} already exists")
        self.factories[name] = factory
        logger.debug("added device /dev/%s", name)

    def remove_device(self, name: str) -> None:
        """Take the node ``name`` away (open files on it keep working)."""
        if self.factories.pop(name, None) is None:
            raise FsError(errno.ENOENT, f"no device {name!r}")
        for root in self._roots:
            root.forget(name)

    def mount(
        self,
        vfs: Vfs,
        device: str,
        options: str,
        readonly: bool,
        console: Console | None = None,
    ) -> Mount:
        if console is not None and "console" not in self.factories:
            self.attach_console(console)
        mount = DevMount(self, device, options, MS_RDONLY if readonly else 0)
        root = DevDir(mount, self)
        mount.root = root
        self._roots.append(root)
        return mount

    def forget_root(self, root: Vnode) -> None:
        """Stop tracking the root of an unmounted devfs."""
        self._roots = [r for r in self._roots if r is not root]
