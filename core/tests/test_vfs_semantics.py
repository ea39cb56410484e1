"""The VFS over ramfs answers like the Linux kernel: same errno, same tree.

Each case runs the same operation twice: with os.* in a host temporary
directory (the real kernel is the oracle) and through osv.vfs on a fresh
ramfs. Both start from the same tree, both must give the same result (ok or
the same errno), and both trees must look the same afterwards.
"""

import ctypes
import errno
import os
import stat

import pytest

from osv.vfs import (
    O_CREAT,
    O_DIRECTORY,
    O_EXCL,
    O_NOFOLLOW,
    O_PATH,
    O_RDONLY,
    O_RDWR,
    O_TRUNC,
    O_WRONLY,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    FsError,
    RamFs,
    Vfs,
)

pytestmark = pytest.mark.skipif(
    os.O_DIRECTORY != O_DIRECTORY or os.uname().machine != "x86_64",
    reason="the host kernel must speak the x86-64 ABI to be the oracle",
)

_libc = ctypes.CDLL(None, use_errno=True)
_AT_SYMLINK_NOFOLLOW = 0x100


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class HostTree:
    """Operations on a host directory, relative to it (the *at calls)."""

    def __init__(self, root) -> None:
        self.root = str(root)
        self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)

    def close(self) -> None:
        os.close(self.fd)

    def run(self, op: str, *args):
        d = self.fd
        if op == "mkdir":
            os.mkdir(args[0], 0o777, dir_fd=d)
        elif op == "rmdir":
            os.rmdir(args[0], dir_fd=d)
        elif op == "unlink":
            os.unlink(args[0], dir_fd=d)
        elif op == "rename":
            os.rename(args[0], args[1], src_dir_fd=d, dst_dir_fd=d)
        elif op == "rename2":
            old, new, flags = args
            if _libc.renameat2(d, old.encode(), d, new.encode(), flags) != 0:
                raise OSError(ctypes.get_errno(), "renameat2")
        elif op == "symlink":
            os.symlink(args[0], args[1], dir_fd=d)
        elif op in ("link", "link_follow"):
            os.link(
                args[0],
                args[1],
                src_dir_fd=d,
                dst_dir_fd=d,
                follow_symlinks=op == "link_follow",
            )
        elif op == "write":
            fd = os.open(
                args[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=d
            )
            os.write(fd, args[1])
            os.close(fd)
        elif op == "open":
            os.close(os.open(args[0], args[1], 0o666, dir_fd=d))
        elif op == "readlink":
            return os.readlink(args[0], dir_fd=d)
        elif op == "truncate":
            fd = os.open(args[0], os.O_PATH, dir_fd=d)
            try:
                os.truncate(f"/proc/self/fd/{fd}", args[1])
            finally:
                os.close(fd)
        elif op == "access":
            if _libc.faccessat(d, args[0].encode(), args[1], 0) != 0:
                raise OSError(ctypes.get_errno(), "faccessat")
        elif op in ("stat", "lstat"):
            os.stat(args[0], dir_fd=d, follow_symlinks=op == "stat")
        elif op == "chmod":
            os.chmod(args[0], args[1], dir_fd=d)
        elif op == "chown":
            os.chown(args[0], args[1], args[2], dir_fd=d)
        elif op == "lchmod":
            if _libc.fchmodat(d, args[0].encode(), args[1], _AT_SYMLINK_NOFOLLOW) != 0:
                raise OSError(ctypes.get_errno(), "fchmodat")
        else:
            raise AssertionError(op)
        return None

    def snapshot(self) -> dict:
        return _snapshot(
            lambda rel: os.lstat(os.path.join(self.root, rel)),
            lambda rel: sorted(os.listdir(os.path.join(self.root, rel))),
            lambda rel: os.readlink(os.path.join(self.root, rel)),
        )


class OurTree:
    """The same operations through osv.vfs, relative to /w on a ramfs root."""

    def __init__(self) -> None:
        self.vfs = Vfs()
        self.vfs.mount(RamFs(), "none", "/")
        self.vfs.mkdir("/w", 0o755)
        self.cwd = self.vfs.resolve("/w")
        self.umask = _umask()

    def run(self, op: str, *args):
        vfs, cwd = self.vfs, self.cwd
        if op == "mkdir":
            vfs.mkdir(args[0], 0o777 & ~self.umask, cwd)
        elif op == "rmdir":
            vfs.rmdir(args[0], cwd)
        elif op == "unlink":
            vfs.unlink(args[0], cwd)
        elif op == "rename":
            vfs.rename(args[0], args[1], cwd)
        elif op == "rename2":
            vfs.rename(args[0], args[1], cwd, flags=args[2])
        elif op == "symlink":
            vfs.symlink(args[0], args[1], cwd)
        elif op in ("link", "link_follow"):
            vfs.link(args[0], args[1], cwd, follow=op == "link_follow")
        elif op == "write":
            f = vfs.open(
                args[0], O_WRONLY | O_CREAT | O_TRUNC, 0o644 & ~self.umask, cwd
            )
            f.write(args[1])
            f.close()
        elif op == "open":
            vfs.open(args[0], args[1], 0o666 & ~self.umask, cwd).close()
        elif op == "readlink":
            return vfs.readlink(args[0], cwd)
        elif op == "truncate":
            vfs.truncate(args[0], args[1], cwd)
        elif op == "access":
            vfs.access(args[0], args[1], cwd)
        elif op in ("stat", "lstat"):
            vfs.stat(args[0], cwd, follow=op == "stat")
        elif op == "chmod":
            vfs.chmod(args[0], args[1], cwd)
        elif op == "chown":
            vfs.chown(args[0], args[1], args[2], cwd)
        elif op == "lchmod":
            vfs.chmod(args[0], args[1], cwd, follow=False)
        else:
            raise AssertionError(op)
        return None

    def snapshot(self) -> dict:
        def entries(rel: str) -> list[str]:
            return sorted(
                name for name, _, _ in self.vfs.resolve(rel or ".", self.cwd).readdir()
            )

        return _snapshot(
            lambda rel: self.vfs.stat(rel or ".", self.cwd, follow=False),
            entries,
            lambda rel: self.vfs.readlink(rel, self.cwd),
        )


def _snapshot(lstat, listdir, readlink) -> dict:
    """Every path under the root: type, permissions, link count, size, target;
    plus which paths share an inode."""
    tree = {}
    inodes: dict[int, list[str]] = {}
    pending = [""]
    while pending:
        rel = pending.pop()
        for name in listdir(rel):
            path = f"{rel}/{name}" if rel else name
            st = lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            entry = [stat.filemode(st.st_mode), st.st_nlink]
            if kind == stat.S_IFDIR:
                pending.append(path)
            else:
                entry.append(st.st_size)
            if kind == stat.S_IFLNK:
                entry.append(readlink(path))
            tree[path] = tuple(entry)
            inodes.setdefault(st.st_ino, []).append(path)
    links = sorted(sorted(paths) for paths in inodes.values() if len(paths) > 1)
    return {"tree": tree, "hard_links": links}


def _outcome(tree, op: str, args: tuple) -> str:
    try:
        result = tree.run(op, *args)
    except FsError as err:
        return errno.errorcode[err.errno]
    except OSError as err:
        return errno.errorcode[err.errno]
    return "ok" if result is None else f"ok {result}"


# The tree every case starts from.
BASE = [
    ("mkdir", "d"),
    ("write", "d/x", b"x"),
    ("mkdir", "d/sub"),
    ("mkdir", "e"),
    ("write", "f", b"hello"),
    ("symlink", "f", "lf"),
    ("symlink", "d", "ld"),
    ("symlink", "nothing", "dangle"),
    ("symlink", "loop2", "loop1"),
    ("symlink", "loop1", "loop2"),
    ("link", "f", "hard"),
]

LONG = "n" * 256

CASES = [
    # rmdir
    ("rmdir", "d"),
    ("rmdir", "f"),
    ("rmdir", "missing"),
    ("rmdir", "."),
    ("rmdir", "d/.."),
    ("rmdir", "d/sub/."),
    ("rmdir", "ld"),
    ("rmdir", "e/"),
    ("rmdir", "ld/sub"),
    ("rmdir", "f/x"),
    ("rmdir", "lf/"),
    ("rmdir", "loop1/x"),
    # unlink
    ("unlink", "d"),
    ("unlink", "f/"),
    ("unlink", "missing"),
    ("unlink", "."),
    ("unlink", "d/x/y"),
    ("unlink", "lf"),
    ("unlink", "ld"),
    ("unlink", "ld/"),
    ("unlink", "dangle"),
    ("unlink", "dangle/"),
    ("unlink", "hard"),
    ("unlink", "e/"),
    # mkdir
    ("mkdir", "d"),
    ("mkdir", "f"),
    ("mkdir", "f/x"),
    ("mkdir", "a/b"),
    ("mkdir", "new/"),
    ("mkdir", "dangle"),
    ("mkdir", "."),
    ("mkdir", ".."),
    ("mkdir", "lf/x"),
    ("mkdir", "ld/new"),
    ("mkdir", "n" * 255),
    ("mkdir", LONG),
    ("mkdir", "loop1/x"),
    # rename
    ("rename", "d", "e"),
    ("rename", "e", "d"),
    ("rename", "f", "d"),
    ("rename", "d", "f"),
    ("rename", "d", "d/sub/z"),
    ("rename", "d", "d/z"),
    ("rename", "d/sub", "d"),
    ("rename", "missing", "z"),
    ("rename", ".", "z"),
    ("rename", "f", "d/.."),
    ("rename", "f/", "z"),
    ("rename", "ld/", "z"),
    ("rename", "d/", "z/"),
    ("rename", "f", "z/"),
    ("rename", "e", "z/"),
    ("rename", "f", "hard"),
    ("rename", "f", "lf"),
    ("rename", "lf", "z"),
    ("rename", "d/x", "e/x"),
    ("rename", "d/sub", "e/sub"),
    ("rename", "e", "d/sub"),
    ("rename", "f", "missing/z"),
    ("rename", "f", "f/z"),
    ("rename", "ld", "e"),
    ("rename", "d", "ld"),
    ("rename2", "f", "e", RENAME_NOREPLACE),
    ("rename2", "f", "z", RENAME_NOREPLACE),
    ("rename2", "f", "d", RENAME_EXCHANGE),
    ("rename2", "f", "z", RENAME_EXCHANGE),
    ("rename2", "d/sub", "e", RENAME_EXCHANGE),
    ("rename2", "d/x", "e", RENAME_EXCHANGE),
    ("rename2", "e", "d/x", RENAME_EXCHANGE),
    ("rename2", "lf", "ld", RENAME_EXCHANGE),
    ("rename2", "d", "d/sub", RENAME_EXCHANGE),
    ("rename2", "d/sub", "d", RENAME_EXCHANGE),
    ("rename2", "f", "e", RENAME_EXCHANGE | RENAME_NOREPLACE),
    # link
    ("link", "d", "z"),
    ("link", "f", "hard"),
    ("link", "f", "z"),
    ("link", "lf", "z"),
    ("link", "f", "missing/z"),
    ("link", "f", "z/"),
    ("link", "missing", "z"),
    ("link", "dangle", "z"),
    ("link_follow", "dangle", "z"),
    ("link_follow", "lf", "z"),
    ("link", "d", "hard"),
    # symlink
    ("symlink", "x", "f"),
    ("symlink", "", "z"),
    ("symlink", "x", "z/"),
    ("symlink", "x", "missing/z"),
    ("symlink", "x", "d/"),
    ("symlink", "x", "e/z"),
    # open
    ("open", "f", O_CREAT | O_EXCL | O_WRONLY),
    ("open", "f", O_DIRECTORY),
    ("open", "d", O_WRONLY),
    ("open", "d", O_RDWR),
    ("open", "d", O_CREAT | O_RDONLY),
    ("open", "d", O_CREAT | O_EXCL | O_RDONLY),
    ("open", "f/", O_RDONLY),
    ("open", "new/", O_CREAT | O_WRONLY),
    ("open", "f/", O_CREAT | O_WRONLY),
    ("open", "f/", O_CREAT | O_EXCL | O_WRONLY),
    ("open", "d/", O_CREAT | O_RDONLY),
    ("open", "dangle/", O_CREAT | O_WRONLY),
    ("open", "d/.", O_CREAT | O_RDONLY),
    ("open", "d/.", O_CREAT | O_EXCL | O_RDONLY),
    ("open", "lf", O_NOFOLLOW),
    ("open", "lf", O_NOFOLLOW | O_CREAT | O_WRONLY),
    ("open", "dangle", O_CREAT | O_EXCL | O_WRONLY),
    ("open", "dangle", O_CREAT | O_WRONLY),
    ("open", "new", O_CREAT | O_DIRECTORY),
    ("open", "lf", O_PATH | O_NOFOLLOW),
    ("open", "loop1", O_PATH | O_NOFOLLOW),
    ("open", "d", O_TRUNC | O_RDONLY),
    ("open", "missing", O_RDONLY),
    ("open", "f/x", O_RDONLY),
    ("open", "ld/", O_RDONLY),
    ("open", "dangle", O_RDONLY),
    ("open", "loop1", O_RDONLY),
    ("open", "loop1", O_CREAT | O_WRONLY),
    ("open", "f", O_RDONLY | O_TRUNC),
    ("open", "lf", O_WRONLY | O_TRUNC),
    ("open", "d/sub/../x", O_RDONLY),
    ("open", "ld/../f", O_RDONLY),
    ("open", "lf/..", O_RDONLY),
    ("open", LONG, O_CREAT | O_WRONLY),
    ("open", "d/" * 2100 + "x", O_RDONLY),
    ("open", ".", O_RDONLY | O_DIRECTORY),
    ("open", "", O_RDONLY),
    ("open", "e/new", O_CREAT | O_RDWR | O_EXCL),
    ("open", "e/new", O_CREAT | O_RDWR | O_EXCL | O_NOFOLLOW),
    # readlink
    ("readlink", "f"),
    ("readlink", "missing"),
    ("readlink", "lf"),
    ("readlink", "lf/"),
    ("readlink", "ld/"),
    ("readlink", "loop1"),
    # truncate
    ("truncate", "d", 0),
    ("truncate", "f", 100000),
    ("truncate", "lf", 2),
    ("truncate", "missing", 0),
    # access
    ("access", "f", os.X_OK),
    ("access", "d", os.X_OK),
    ("access", "f", os.R_OK | os.W_OK),
    ("access", "missing", os.F_OK),
    ("access", "dangle", os.F_OK),
    ("access", "f", 8),
    # stat
    ("stat", "dangle"),
    ("lstat", "dangle"),
    ("stat", "loop1"),
    ("lstat", "loop1"),
    ("stat", "f/"),
    ("stat", "ld/"),
    ("stat", "ld/sub/../../f"),
    ("stat", "d/sub/../../f"),
    # chmod
    ("chmod", "f", 0o755),
    ("chmod", "lf", 0o600),
    ("chmod", "d", 0o1700),
    ("lchmod", "lf", 0o600),
    ("lchmod", "f", 0o600),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: " ".join(map(str, case))[:60])
def test_operation_matches_linux(tmp_path, case):
    host = HostTree(tmp_path)
    ours = OurTree()
    try:
        for step in BASE:
            assert _outcome(host, step[0], step[1:]) == "ok"
            assert _outcome(ours, step[0], step[1:]) == "ok"
        op, *args = case

        expected = _outcome(host, op, tuple(args))
        actual = _outcome(ours, op, tuple(args))

        assert actual == expected
        assert ours.snapshot() == host.snapshot()
    finally:
        host.close()


@pytest.mark.parametrize("length", [39, 40, 41])
def test_symlink_chain_limit_matches_linux(tmp_path, length):
    host = HostTree(tmp_path)
    ours = OurTree()
    try:
        setup = [("write", "f", b"x"), ("symlink", "f", "c0")]
        setup += [("symlink", f"c{i - 1}", f"c{i}") for i in range(1, length + 1)]
        for step in setup:
            assert _outcome(host, step[0], step[1:]) == "ok"
            assert _outcome(ours, step[0], step[1:]) == "ok"
        last = f"c{length}"

        expected = _outcome(host, "open", (last, O_RDONLY))
        actual = _outcome(ours, "open", (last, O_RDONLY))

        assert actual == expected
        # The links followed are c{length} .. c0: length + 1 of them.
        assert actual == ("ok" if length + 1 <= 40 else "ELOOP")
    finally:
        host.close()


def test_symlink_chain_through_directories_matches_linux(tmp_path):
    host = HostTree(tmp_path)
    ours = OurTree()
    try:
        setup = [("mkdir", "t"), ("write", "t/f", b"x"), ("symlink", "t", "s0")]
        setup += [("symlink", f"s{i - 1}", f"s{i}") for i in range(1, 45)]
        for step in setup:
            assert _outcome(host, step[0], step[1:]) == "ok"
            assert _outcome(ours, step[0], step[1:]) == "ok"
        for n in (30, 39, 40, 44):
            path = f"s{n}/f"
            assert _outcome(ours, "open", (path, O_RDONLY)) == _outcome(
                host, "open", (path, O_RDONLY)
            )
    finally:
        host.close()


@pytest.mark.parametrize(
    ("mode", "uid", "gid"),
    [(0o6755, 0, 0), (0o6745, 0, -1), (0o6755, -1, -1), (0o2775, -1, 0)],
)
@pytest.mark.parametrize("target", ["f", "d"])
def test_chown_drops_set_id_bits_like_linux(tmp_path, mode, uid, gid, target):
    host = HostTree(tmp_path)
    ours = OurTree()
    try:
        for step in [*BASE, ("chmod", target, mode), ("chown", target, uid, gid)]:
            assert _outcome(host, step[0], step[1:]) == "ok"
            assert _outcome(ours, step[0], step[1:]) == "ok"

        assert ours.snapshot() == host.snapshot()
    finally:
        host.close()
