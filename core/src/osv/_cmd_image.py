"""``osv image``: read or set an image's boot command line, describe it, convert it.

``getargs`` and ``setargs`` do what OSv's ``imgedit.py`` does for the command
line (``setargs`` joins its words with spaces and writes them at offset 512
with one NUL after them), on raw and qcow2 images alike.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``osv image`` and its four actions."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    getargs = actions.add_parser("getargs", help="print the boot command line")
    getargs.add_argument("image", metavar="IMAGE")

    setargs = actions.add_parser(
        "setargs", help="replace the boot command line (words joined by spaces)"
    )
    setargs.add_argument("image", metavar="IMAGE")
    # Everything after the image is the command line, options included
    # ("--env=A=1 /prog"), quoted as one word or not.
    setargs.add_argument("words", nargs=argparse.REMAINDER, metavar="CMDLINE")

    info = actions.add_parser(
        "info", help="describe the layout, file system and modules of an image"
    )
    info.add_argument("image", metavar="IMAGE")

    convert = actions.add_parser(
        "convert",
        help="write the image in another format (vmdk and vdi need qemu-img)",
    )
    convert.add_argument("image", metavar="IMAGE")
    convert.add_argument(
        "--to",
        required=True,
        choices=("raw", "qcow2", "vmdk", "vdi"),
        metavar="FORMAT",
        help="raw, qcow2, vmdk or vdi",
    )
    convert.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="the converted image"
    )


def run(args: argparse.Namespace) -> int:
    """Carry out the action."""
    from osv.image import DiskImage, ImageError, convert_image

    if args.action == "getargs":
        with DiskImage.open(args.image) as image:
            print(image.cmdline)
    elif args.action == "setargs":
        if not args.words:
            raise ImageError("setargs needs the new command line after the image")
        with DiskImage.open(args.image, writable=True) as image:
            image.set_cmdline(" ".join(args.words))
    elif args.action == "info":
        with DiskImage.open(args.image) as image:
            print(describe(image))
    else:
        convert_image(args.image, args.output, args.to)
    return 0


def describe(image) -> str:  # noqa: ANN001 - an osv.image.DiskImage
    """What ``osv image info`` prints: layout, command line, file system, modules."""
    from importlib import metadata

    descriptor = image.descriptor
    lines = [
        f"image: {image.path}",
        f"format: {image.format}",
        f"disk size: {image.size} bytes",
        f"file size: {image.file_size} bytes",
        f"command line: {image.cmdline}",
        "partitions:",
    ]
    for partition in image.partitions():
        lines.append(
            f"  vblk0.{partition.index}: {partition.size} bytes at {partition.start}"
        )
    lines += [
        f"file system: {descriptor.fs_type}",
        f"needs osv-core: {descriptor.kernel_version}",
        f"built by: {descriptor.built_by}",
        f"created: {descriptor.created}",
        "modules:" if descriptor.modules else "modules: none",
    ]
    for name, version in sorted(descriptor.modules.items()):
        try:
            installed = metadata.version(f"osv-mod-{name}")
        except metadata.PackageNotFoundError:
            installed = f"not installed (pip install osv-mod-{name})"
        lines.append(f"  {name} {version} (installed: {installed})")
    return "\n".join(lines)
