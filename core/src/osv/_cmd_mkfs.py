"""``osv mkfs``: write a bare file system (no image around it), as OSv's image
writers do."""

from __future__ import annotations

import argparse
import logging
import os
import stat
import tempfile
from typing import BinaryIO

logger = logging.getLogger(__name__)

# How the core writes a file system it does not know: a file-system type a
# module registers (osv_filesystem_types) may carry a callable attribute
#
#     mkfs(entries, output) -> summary
#
# where entries are osv.image.ManifestEntry in manifest order and output is
# a seekable binary file positioned where the file system starts. It writes
# the whole file system there, and raises its module's typed error for an
# entry it cannot place. What it returns is only shown with -v.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``osv mkfs``."""
    parser.add_argument(
        "--fs",
        default="rofs",
        metavar="TYPE",
        help="the file-system type (default rofs); its module must be installed",
    )
    parser.add_argument("-o", "--output", required=True, metavar="FILE")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--manifest",
        metavar="FILE",
        help="the files an OSv-syntax manifest names, in its order",
    )
    source.add_argument(
        "directory",
        nargs="?",
        metavar="DIR",
        help="everything below DIR, which becomes the file system's root",
    )
    parser.add_argument(
        "-D",
        dest="defines",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="a %%(VAR)s substitution for the manifest",
    )


def run(args: argparse.Namespace) -> int:
    """Write the file system to the output file."""
    from osv import _plugins
    from osv.image import check_output_path, read_manifest

    check_output_path(args.output)
    _refuse_builtin(args.fs)
    modules = _plugins.load_modules([args.fs])
    fs_class = filesystem_class(modules.plugin_manager, args.fs)
    if args.manifest is not None:
        defines = dict(d.split("=", 1) for d in args.defines if "=" in d)
        entries = read_manifest(args.manifest, defines=defines)
    else:
        entries = directory_entries(args.directory)

    directory = os.path.dirname(os.path.abspath(args.output))
    with make_filesystem(fs_class, entries, directory) as blob:
        name = blob.name
        os.chmod(name, 0o644)
        os.replace(name, args.output)
        blob.delete = False
    logger.info("%s: %s file system of %d entries", args.output, args.fs, len(entries))
    return 0


def _refuse_builtin(name: str) -> None:
    """Refuse a file system of the core's own, which has nothing to write.

    ramfs, devfs and procfs live in memory only; there is no module to
    install for them, and no on-disk format to make.
    """
    from osv import _plugins
    from osv.image import ImageError

    if name not in _plugins.filesystem_types(_plugins.plugin_manager()):
        return
    if name == "ramfs":
        raise ImageError(
            "ramfs has no on-disk format to make: it lives in memory; an image "
            "with a ramfs root is written by 'osv build --fs ramfs', which packs "
            "the tree as a bootfs"
        )
    raise ImageError(
        f"{name} has no on-disk format to make: the kernel makes it in memory at boot"
    )


def filesystem_class(plugins, name: str) -> type:  # noqa: ANN001 - a PluginManager
    """The registered file-system type ``name``, which must be able to mkfs."""
    from osv import _plugins
    from osv.image import ImageError

    fs_class = _plugins.filesystem_types(plugins).get(name)
    if fs_class is None:
        raise _plugins.ModuleError(
            f"file system {name!r} is provided by a module that is not installed",
            hint=f"pip install osv-mod-{name}",
        )
    if not callable(getattr(fs_class, "mkfs", None)):
        raise ImageError(f"file system {name!r} cannot be written (it has no mkfs)")
    return fs_class


class _ScratchFile:
    """A file beside the output, removed on exit unless ``delete`` is turned off."""

    def __init__(self, directory: str) -> None:
        handle, self.name = tempfile.mkstemp(prefix=".osv-mkfs-", dir=directory)
        self.file: BinaryIO = os.fdopen(handle, "w+b")
        self.delete = True

    def __enter__(self) -> _ScratchFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.file.close()
        if self.delete and os.path.exists(self.name):
            os.unlink(self.name)

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.file.seek(offset, whence)


def make_filesystem(fs_class: type, entries: list, directory: str) -> _ScratchFile:
    """Write a ``fs_class`` file system of ``entries`` to a scratch file.

    The scratch file lies in ``directory`` (beside the output, so that large
    trees need no memory) and is returned rewound; it reads like a file and
    is removed when its ``with`` block ends.
    """
    from osv.image import ImageError

    try:
        scratch = _ScratchFile(directory)
    except OSError as error:
        raise ImageError(f"cannot write in {directory}: {error.strerror}") from None
    try:
        summary = fs_class.mkfs(entries, scratch.file)
        scratch.file.flush()
        scratch.file.seek(0)
    except BaseException:
        scratch.__exit__()
        raise
    logger.info("%s: %s", fs_class.name, summary)
    return scratch


def directory_entries(root: str) -> list:
    """Manifest entries for everything below ``root``, at the same place below ``/``.

    Directories, files and symlinks keep their kind (symlinks are not
    followed); within a directory, names are taken in sorted order, so the
    same tree always gives the same file system. Other kinds of file are
    skipped with a warning.
    """
    from osv.image import ImageError, ManifestEntry

    origin = root
    if not os.path.isdir(root):
        raise ImageError(f"{root} is not a directory")
    entries = []
    pending = [("", os.path.abspath(root))]
    while pending:
        guest_dir, host_dir = pending.pop()
        try:
            names = sorted(os.listdir(host_dir))
        except OSError as error:
            raise ImageError(f"cannot list {host_dir}: {error.strerror}") from None
        subdirectories = []
        for name in names:
            host = os.path.join(host_dir, name)
            guest = f"{guest_dir}/{name}"
            mode = os.lstat(host).st_mode
            if stat.S_ISLNK(mode):
                entries.append(
                    ManifestEntry(guest, "symlink", None, os.readlink(host), origin)
                )
            elif stat.S_ISDIR(mode):
                entries.append(ManifestEntry(guest, "dir", host, None, origin))
                subdirectories.append((guest, host))
            elif stat.S_ISREG(mode):
                entries.append(ManifestEntry(guest, "file", host, None, origin))
            else:
                logger.warning("skipping %s: not a file, directory or symlink", host)
        # Reversed so that the stack visits subdirectories in name order.
        pending.extend(reversed(subdirectories))
    return entries
