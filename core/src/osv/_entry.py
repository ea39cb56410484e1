"""The ``osv`` command's entry point: ``osv run`` through a server when one
listens, every command in-process otherwise."""

import sys


def main() -> int:
    """Run ``osv`` with the process's arguments; return its exit status."""
    argv = sys.argv[1:]
    # The global options before the command take no values: -v, -vv, ...
    first = 0
    while first < len(argv) and (
        argv[first] == "--verbose" or argv[first].strip("v") == "-"
    ):
        first += 1
    if argv[first : first + 1] == ["run"]:
        # Only what the client needs: the command line's parser and the
        # kernel are imported by the server, or below when there is none.
        from osv import __version__
        from osv._server import run_via_server

        status = run_via_server(argv, __version__)
        if status is not None:
            return status
    from osv.cli import main as run_in_process

    return run_in_process(argv)
