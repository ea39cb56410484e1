"""The /file group's work on the guest's VFS: status records, wildcards, copies."""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
from collections.abc import Iterator

from osv.sched import KERNEL_LOCK
from osv.vfs import FsError

logger = logging.getLogger(__name__)

# How much of a file one read takes; files are read whole for op=GET.
CHUNK = 1 << 20
WILDCARDS = "*?["


class GuestPathError(ValueError):
    """A path that is not an absolute guest path without '..' components."""


def check_path(path: str) -> str:
    """An absolute guest path, or GuestPathError saying what is wrong with it.

    Every path is resolved by the guest's VFS, which holds no host
    directories, so a symbolic link can only lead to other guest files. The
    '..' refusal is OSv's own rule for REST paths, kept so that clients see
    the same answers.
    """
    if not path.startswith("/"):
        raise GuestPathError(f"path {path!r} is not absolute")
    if "\0" in path:
        raise GuestPathError("path contains a NUL byte")
    if ".." in path.split("/"):
        raise GuestPathError(f"path {path!r} contains '..'")
    return path


class locked:  # noqa: N801 - reads as a state, like a lock's name
    """Hold the kernel lock: the VFS is shared with the guest's system calls."""

    def __enter__(self) -> None:
        KERNEL_LOCK.acquire()

    def __exit__(self, *exc_info: object) -> None:
        KERNEL_LOCK.release()


def file_status(vfs, path: str, name: str | None = None) -> dict:  # noqa: ANN001
    """OSv's FileStatusProperties (WebHDFS's FileStatus) of one guest file."""
    st = vfs.stat(path, follow=False)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        kind = "DIRECTORY"
    elif stat.S_ISLNK(mode):
        kind = "SYMLINK"
    else:
        kind = "FILE"
    return {
        "accessTime": st.st_atime_ns // 1_000_000_000,
        "modificationTime": st.st_mtime_ns // 1_000_000_000,
        "blockSize": st.st_blksize,
        # The guest has no user database: ids are its only names.
        "owner": str(st.st_uid),
        "group": str(st.st_gid),
        "length": st.st_size,
        "pathSuffix": name if name is not None else os.path.basename(path),
        "permission": f"{mode & 0o777:o}",
        "replication": st.st_nlink,
        "symlink": vfs.readlink(path) if kind == "SYMLINK" else "",
        "type": kind,
    }


def list_status(vfs, pattern: str) -> list[dict]:  # noqa: ANN001
    """LISTSTATUS: a directory's entries, or every path the wildcards match."""
    if not any(c in pattern for c in WILDCARDS):
        if not vfs.resolve(pattern).is_dir:
            return [file_status(vfs, pattern)]
        return [
            file_status(vfs, os.path.join(pattern, name), name)
            for name in sorted(_names(vfs, pattern))
        ]
    return [file_status(vfs, path) for path in sorted(expand(vfs, pattern))]


def expand(vfs, pattern: str) -> Iterator[str]:  # noqa: ANN001
    """Guest paths matching a pattern with * ? [..] in any component."""
    paths = ["/"]
    for component in pattern.strip("/").split("/"):
        if not component:
            continue
        found = []
        for directory in paths:
            if any(c in component for c in WILDCARDS):
                try:
                    names = _names(vfs, directory)
                except FsError:
                    continue
                found += [
                    os.path.join(directory, name)
                    for name in sorted(names)
                    if fnmatch.fnmatchcase(name, component)
                ]
            else:
                candidate = os.path.join(directory, component)
                try:
                    vfs.stat(candidate, follow=False)
                except FsError:
                    continue
                found.append(candidate)
        paths = found
    yield from paths


def _names(vfs, directory: str) -> list[str]:  # noqa: ANN001
    return [
        name
        for name, _ino, _type in vfs.resolve(directory).readdir()
        if name not in (".", "..")
    ]


def read_file(vfs, path: str) -> bytes:  # noqa: ANN001
    """The whole content of a regular guest file."""
    opened = vfs.open(path, os.O_RDONLY)
    try:
        if not opened.vnode.is_reg:
            raise FsError(21, f"{path} is not a regular file")
        chunks, offset = [], 0
        while chunk := opened.pread(CHUNK, offset):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)
    finally:
        opened.close()


def write_file(vfs, path: str, data: bytes, *, append: bool, mode: int) -> None:  # noqa: ANN001
    """Create or extend a guest file with ``data``."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    opened = vfs.open(path, flags, mode)
    try:
        opened.write(data)
    finally:
        opened.close()


def make_dirs(vfs, path: str, mode: int) -> None:  # noqa: ANN001
    """mkdir -p inside the guest."""
    current = ""
    for component in path.strip("/").split("/"):
        current += "/" + component
        try:
            vfs.mkdir(current, mode)
        except FsError as error:
            if error.errno != 17 or not vfs.resolve(current).is_dir:  # EEXIST
                raise


def remove(vfs, path: str, recursive: bool) -> None:  # noqa: ANN001
    """Remove a file, or a directory (with its content when recursive)."""
    vnode = vfs.resolve(path, follow=False)
    if not vnode.is_dir:
        vfs.unlink(path)
        return
    if recursive:
        for name in _names(vfs, path):
            remove(vfs, os.path.join(path, name), recursive=True)
    vfs.rmdir(path)


def copy(vfs, source: str, destination: str) -> None:  # noqa: ANN001
    """Copy one file or a directory tree inside the guest."""
    vnode = vfs.resolve(source)
    if vnode.is_dir:
        vfs.mkdir(destination, vnode.mode & 0o7777)
        for name in _names(vfs, source):
            copy(vfs, os.path.join(source, name), os.path.join(destination, name))
        return
    data = read_file(vfs, source)
    write_file(vfs, destination, data, append=False, mode=vnode.mode & 0o7777)
