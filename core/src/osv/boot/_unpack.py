"""Unpacking an image's bootfs into the root ramfs, as OSv's unpack_bootfs does."""

from __future__ import annotations

import logging

from osv.vfs import FsError

logger = logging.getLogger(__name__)

FILE_MODE = 0o755
DIRECTORY_MODE = 0o755


def unpack_bootfs(vfs, blob: bytes | memoryview, records, times=None) -> int:  # noqa: ANN001
    """Create every record's file, directory or symlink under ``vfs``'s root.

    Returns the number of bytes of file content. Parents are created as
    needed, as OSv's unpacker does; a name that already exists as a directory
    is kept. File systems that can (ramfs) share the blob's bytes instead of
    copying them, so ``blob`` must stay alive and unchanged.

    ``times``, when given, holds each record's modification time in
    nanoseconds (the image's table, in record order); each object gets it as
    its atime and mtime. Without it everything is dated now.
    """
    # Rationale: an image of a Python installation holds thousands of files.
    # Resolving each path from the root through the VFS would walk every
    # component again and try to create every parent; instead the directory
    # vnodes made so far are kept by path, and files are created straight in
    # their parent vnode.
    directories = {"": vfs.root}
    written = 0
    # Directories made only as parents of a record; with times, they are
    # dated as the root record is (the image's build time), as ROFS does.
    made = []
    root_time = None

    def directory(path: str):  # noqa: ANN202 - a directory Vnode
        found = directories.get(path)
        if found is not None:
            return found
        parent_path, _, name = path.rpartition("/")
        parent = directory(parent_path)
        try:
            found = parent.lookup(name)
        except FsError:
            found = parent.mkdir(name, DIRECTORY_MODE)
            made.append(found)
        if not found.is_dir:
            raise FsError(20, f"/{path} is both a file and a directory in the image")
        directories[path] = found
        return found

    # A directory's time is set once everything is in it: each name added
    # to a directory moves its mtime to now.
    dated = []
    for index, record in enumerate(records):
        path = record.name.strip("/")
        if not path:
            if times is not None:
                root_time = times[index]
                dated.append((vfs.root, root_time))
            continue
        if record.is_directory:
            node = directory(path)
            if times is not None:
                dated.append((node, times[index]))
            continue
        parent_path, _, name = path.rpartition("/")
        parent = directory(parent_path)
        if record.is_symlink:
            target = bytes(record.content(blob)).rstrip(b"\0").decode()
            node = parent.symlink(name, target)
            if times is not None:
                node.atime = node.mtime = times[index]
            continue
        node = parent.create(name, FILE_MODE)
        content = record.content(blob)
        if len(content):
            share = getattr(node, "share", None)
            if share is not None:
                share(content)
                written += len(content)
            else:
                written += node.write(0, content)
        if times is not None:
            node.atime = node.mtime = times[index]
    if root_time is not None:
        for node in made:
            node.atime = node.mtime = root_time
    for node, mtime in dated:
        node.atime = node.mtime = mtime
    logger.debug("unpacked %d bytes of bootfs", written)
    return written
