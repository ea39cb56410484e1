"""``osv serve``: keep a warm process that runs ``osv run`` for clients."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``osv serve``."""
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="listen here (default: $OSV_SOCKET, else osv.sock in "
        "$XDG_RUNTIME_DIR, else /tmp/osv-UID/osv.sock)",
    )


def run(args: argparse.Namespace) -> int:
    """Import the kernel once, then serve until SIGTERM or SIGINT."""
    import osv
    from osv._server import ServerError, serve, socket_path, warm_up

    if args.socket == "":
        print("osv: error: --socket needs a path", file=sys.stderr)
        return 1
    path = args.socket or socket_path()
    warm_up()

    def ready() -> None:
        print(f"osv: serving osv run on {path}", file=sys.stderr, flush=True)

    try:
        serve(path, osv.__version__, ready)
    except ServerError as error:
        print(f"osv: error: {error}", file=sys.stderr)
        return 1
    return 0
