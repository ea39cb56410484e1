"""``osv run``: boot an image in a KVM virtual machine and run its program."""

from __future__ import annotations

import argparse

# Below this a dynamically linked program cannot even load its libraries.
MIN_MEMORY = 16 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``osv run``."""
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument(
        "-e",
        "--execute",
        metavar="COMMAND LINE",
        help="boot with this command line instead of the image's",
    )
    parser.add_argument(
        "-m",
        "--memory",
        default="2G",
        metavar="SIZE",
        help="guest memory, backed lazily by the host (default 2G)",
    )
    parser.add_argument(
        "-c",
        "--vcpus",
        type=int,
        default=1,
        metavar="VCPUS",
        help="virtual CPUs (default 1)",
    )
    parser.add_argument(
        "--bootchart", action="store_true", help="print the boot-time chart"
    )
    parser.add_argument(
        "--verbose",
        dest="boot_verbose",
        action="store_true",
        help="boot with the kernel's --verbose option",
    )


def run(args: argparse.Namespace) -> int:
    """Boot the image; the program's exit status becomes ours."""
    from osv.boot import BootError
    from osv.boot._sequence import BootConfig, boot
    from osv.hv._machine import MAX_VCPUS
    from osv.image import parse_size

    memory = parse_size(args.memory)
    if memory < MIN_MEMORY or memory % 4096:
        raise BootError(
            f"-m {args.memory}: guest memory must be a whole number of 4 KiB pages, "
            f"at least {MIN_MEMORY >> 20}M"
        )
    if not 1 <= args.vcpus <= MAX_VCPUS:
        raise BootError(
            f"-c {args.vcpus}: the number of vCPUs must be 1 to {MAX_VCPUS}"
        )
    extra = []
    if args.bootchart:
        extra.append("--bootchart")
    if args.boot_verbose:
        extra.append("--verbose")
    config = BootConfig(
        image=args.image,
        cmdline=args.execute,
        memory=memory,
        vcpus=args.vcpus,
        extra_options=extra,
    )
    # A reboot asked for by the program's management (REST POST
    # /os/reboot) boots the same image again, as a VM reboot would.
    while True:
        result = boot(config)
        if not result.reboot:
            return result.status
