"""``osv build``: assemble a disk image from host programs, manifests and modules."""

from __future__ import annotations

import argparse
import io
import logging
import os

logger = logging.getLogger(__name__)

# rofs is the default file system, as OSv makes its fastest-booting images,
# and qcow2 the default container, as OSv's usr.img is one.
FILESYSTEMS = ("rofs", "ramfs", "zfs")
DEFAULT_FILESYSTEM = "rofs"
FORMATS = ("qcow2", "raw")
DEFAULT_FORMAT = "qcow2"

# The directories every image has, as OSv's skeleton manifests provide them
# (/dev, /proc and /tmp are also where the boot mounts devfs, procfs and, on
# a read-only root, a ramfs), and /etc/mnttab, which OSv keeps as a link to
# the mount table.
# "/" first: its record dates the root and the directories made only as
# parents (the build time), as ROFS dates them.
SKELETON_DIRECTORIES = ("/", "/dev", "/proc", "/tmp", "/etc")
SKELETON_LINKS = (("/etc/mnttab", "/proc/mounts"),)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``osv build``."""
    parser.add_argument("-o", "--output", required=True, metavar="IMAGE")
    parser.add_argument(
        "--fs",
        choices=FILESYSTEMS,
        default=DEFAULT_FILESYSTEM,
        help="the root file system (default rofs, from osv-mod-rofs; ramfs is "
        "built in)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=DEFAULT_FORMAT,
        help="the image container (default qcow2)",
    )
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


def _is_program(path: str) -> bool:
    """An executable ELF file (what --cmdline defaults to)."""
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        return False
    with open(path, "rb") as stream:
        return stream.read(4) == b"\x7fELF"


def run(args: argparse.Namespace) -> int:
    """Assemble the image."""
    import osv
    from osv import _plugins
    from osv._cmd_mkfs import filesystem_class, make_filesystem
    from osv.boot import CommandLineError, quote_word
    from osv.image import (
        ImageDescriptor,
        ImageError,
        ManifestEntry,
        build_time_ns,
        check_output_path,
        check_tree,
        encode_time_runs,
        host_time_ns,
        manifest_from_paths,
        read_manifest,
        write_bootfs,
        write_image,
    )

    # Refused before any work: a directory, say, would otherwise fail only
    # once the whole tree had been written.
    check_output_path(args.output)

    # A file system the core does not have comes from the module of the
    # same name, which the image then lists so that a boot loads it.
    wanted = list(args.module)
    if args.fs != "ramfs":
        wanted.append(args.fs)
    modules = _plugins.load_modules(wanted)
    plugins = modules.plugin_manager
    fs_class = filesystem_class(plugins, args.fs) if args.fs != "ramfs" else None

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
    check_tree(entries)

    cmdline = args.cmdline
    if cmdline is None:
        # The one executable program among the host files is the command
        # line; data files brought beside it do not count.
        programs = list(
            dict.fromkeys(os.path.abspath(p) for p in args.from_host if _is_program(p))
        )
        if len(programs) != 1:
            raise ImageError(
                "no --cmdline given and not exactly one executable program among "
                "--from-host (give the command line with --cmdline)"
            )
        try:
            cmdline = quote_word(os.path.abspath(programs[0]))
        except CommandLineError as error:
            raise ImageError(
                f"{error} (give the command line with --cmdline)"
            ) from None
    cmdline = f"--rootfs={args.fs} {cmdline}"

    extra = {
        # The package of each module, so that a machine without one is told
        # what to install (a package may hold several modules).
        "distributions": {
            m.name: m.distribution for m in modules.loaded if not m.builtin
        },
        # Where each module's hooks are, so that a boot imports them
        # without scanning every installed distribution.
        "entry_points": {m.name: m.target for m in modules.loaded if not m.builtin},
    }
    if fs_class is None:
        # A bootfs record has no time field: the files' host times travel
        # here, one per record, for the boot's unpack to apply.
        built = build_time_ns()
        extra["bootfs_mtimes"] = encode_time_runs(
            host_time_ns(entry.host, built) for entry in entries
        )
    descriptor = ImageDescriptor(
        kernel_version=osv.__version__,
        fs_type=args.fs,
        built_by=f"osv build (osv-core {osv.__version__})",
        modules={m.name: m.version for m in modules.loaded if not m.builtin},
        extra=extra,
    )
    directory = os.path.dirname(os.path.abspath(args.output))
    if fs_class is None:
        blob = io.BytesIO()
        write_bootfs(entries, blob)
        partition = blob
    else:
        # Large trees are written to a scratch file beside the image, not
        # kept in memory.
        partition = make_filesystem(fs_class, entries, directory)
    with partition:
        size = write_image(
            args.output,
            cmdline=cmdline,
            descriptor=descriptor,
            partition=partition,
            format=args.format,
        )
    logger.info(
        "%s: %s image, %s root, %d entries, %d bytes",
        args.output,
        args.format,
        args.fs,
        len(entries),
        size,
    )
    return 0
