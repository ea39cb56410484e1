"""``osv manifest``: print the manifest lines for host programs and trees.

What OSv's manifest_from_host does: the lines `osv build --manifest` reads,
for users who keep their image's contents in a manifest file.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``osv manifest``."""
    parser.add_argument(
        "--from-host",
        action="append",
        required=True,
        metavar="PATH",
        help="a program (with its libraries and dynamic linker) or a directory",
    )


def run(args: argparse.Namespace) -> int:
    """Print one `guest: host` line per file, as osv build would place them."""
    from osv.image import manifest_from_paths

    # Every line is found before any is printed, so that a path that fails
    # leaves only the error, not half a manifest.
    lines = ["[manifest]"]
    for entry in manifest_from_paths(args.from_host):
        if entry.kind == "file":
            lines.append(f"{entry.guest}: {entry.host}")
        elif entry.kind == "symlink":
            lines.append(f"{entry.guest}: ->{entry.target}")
        elif entry.kind == "dir" and not any(os.scandir(entry.host)):
            # Only an empty directory needs a line of its own; the others
            # are made by the lines of the files inside them.
            lines.append(f"{entry.guest}: {entry.host}")
    print("\n".join(lines))
    return 0
