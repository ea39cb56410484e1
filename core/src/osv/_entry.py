"""The ``osv`` command's entry point: ``osv run`` through a server when one
listens, every command in-process otherwise."""

import os
import sys


def main() -> int:
    """Run ``osv`` with the process's arguments; return its exit status."""
    _standard_streams_open()
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


def _standard_streams_open() -> None:
    """Put /dev/null on whichever of descriptors 0, 1 and 2 is closed.

    Started with one of them closed (`osv run ... <&-`), the command would
    otherwise hand the next file it opens (the image, a socket) to the guest
    as its standard input or output. The guest reads end-of-file or writes
    into nothing instead, as a container does.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            stream = open(fd, "r" if fd == 0 else "w", closefd=False)  # noqa: SIM115
            setattr(sys, ("stdin", "stdout", "stderr")[fd], stream)
