"""``osv build``: assemble a disk image from host programs, manifests and modules."""

from __future__ import annotations

import argparse
import io
import logging
import os
import shlex

logger = logging.getLogger(__name__)

FILESYSTEMS = ("ramfs", "rofs", "zfs")
FORMATS = ("raw", "qcow2")

# The directories every image has, as OSv's ramfs skeleton provides them, and
# /etc/mnttab, which OSv keeps as a link to the mount table.
SKELETON_DIRECTORIES = ("/dev", "/proc", "/tmp", "/etc")
SKELETON_LINKS = (("/etc/mnttab", "/proc/mounts"),)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``osv build``."""
    parser.add_argument("-o", "--output", required=True, metavar="IMAGE")
    parser.add_argument("--fs", choices=FILESYSTEMS, default="ramfs")
    parser.add_argument("--format", choices=FORMATS, default="raw")
    parser.add_argument(
        "--from-host",
        action="append",
        default=[],
        metavar="PATH",
        help="put a host file or directory into the image at the same path",
    )
    parser.add_argument(
        "--manifest",
        action="append",
        default=[],
        metavar="FILE",
        help="add the files an OSv-syntax manifest names",
    )
    parser.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="NAME",
        help="include an installed module (osv-mod-NAME)",
    )
    parser.add_argument(
        "--cmdline",
        metavar="COMMAND LINE",
        help="the boot command line (default: the one program given)",
    )
    parser.add_argument(
        "-D",
        dest="defines",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="a %%(VAR)s substitution for manifests",
    )


def run(args: argparse.Namespace) -> int:
    """Assemble the image."""
    import osv
    from osv import _plugins
    from osv.image import (
        ImageDescriptor,
        ImageError,
        ManifestEntry,
        manifest_from_paths,
        read_manifest,
        write_bootfs,
        write_raw_image,
    )

    if args.format != "raw":
        raise ImageError(
            f"--format {args.format}: only raw images can be written so far "
            "(use --format raw; qemu-img convert makes other formats from it)"
        )
    modules = _plugins.load_modules(args.module)
    plugins = modules.plugin_manager
    if args.fs not in ("ramfs",) and args.fs not in _plugins.filesystem_types(plugins):
        raise _plugins.ModuleError(
            f"file system {args.fs!r} is provided by a module that is not installed",
            hint=f"pip install osv-mod-{args.fs}",
        )

    defines = dict(d.split("=", 1) for d in args.defines if "=" in d)
    entries: list[ManifestEntry] = [
        ManifestEntry(guest=path, kind="dir", host=None, target=None, origin="skeleton")
        for path in SKELETON_DIRECTORIES
    ]
    entries += [
        ManifestEntry(
            guest=link, kind="symlink", host=None, target=target, origin="skeleton"
        )
        for link, target in SKELETON_LINKS
    ]
    entries += manifest_from_paths(args.from_host)
    for manifest in args.manifest:
        entries += read_manifest(manifest, defines=defines)
    for guest, host in _plugins.image_files(plugins, args):
        entries.append(
            ManifestEntry(
                guest=guest, kind="file", host=str(host), target=None, origin="module"
            )
        )

    cmdline = args.cmdline
    if cmdline is None:
        programs = [p for p in args.from_host if os.path.isfile(p)]
        if len(programs) != 1:
            raise ImageError(
                "no --cmdline given and not exactly one program among --from-host"
            )
        cmdline = shlex.quote(os.path.abspath(programs[0]))
    cmdline = f"--rootfs={args.fs} {cmdline}"

    blob = io.BytesIO()
    write_bootfs(entries, blob)
    descriptor = ImageDescriptor(
        kernel_version=osv.__version__,
        fs_type=args.fs,
        built_by=f"osv build (osv-core {osv.__version__})",
        modules={m.name: m.version for m in modules.loaded if not m.builtin},
    )
    size = write_raw_image(
        args.output, cmdline=cmdline, descriptor=descriptor, partition=blob.getvalue()
    )
    logger.info("%s: %d files, %d bytes", args.output, len(entries), size)
    return 0
