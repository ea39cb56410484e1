"""The ``osv`` command line: global options, and one subcommand per module.

Each subcommand lives in its own module, imported only when that subcommand
runs, and provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple

import osv

logger = logging.getLogger(__name__)

PROG = "osv"


class Command(NamedTuple):
    """A subcommand: where it is implemented and its one-line help."""

    module: str
    help: str


# Every subcommand, by name. Adding one means adding a line here and a module
# with add_arguments() and run().
COMMANDS: dict[str, Command] = {
    "build": Command(
        "osv._cmd_build",
        "assemble a disk image from host programs, manifests and modules",
    ),
    "run": Command("osv._cmd_run", "boot an image in a KVM virtual machine"),
    "image": Command(
        "osv._cmd_image",
        "show or change an image's command line, describe it, convert it",
    ),
    "mkfs": Command("osv._cmd_mkfs", "write a bare file system (rofs) from a tree"),
    "manifest": Command(
        "osv._cmd_manifest",
        "print the manifest lines for host programs (with their libraries) and trees",
    ),
    "serve": Command(
        "osv._cmd_serve",
        "keep a warm process that runs `osv run` for clients, starting them faster",
    ),
    "modules": Command(
        "osv._cmd_modules",
        "list the installed modules, their versions and the hooks they implement",
    ),
}


# The exit status of a command whose output nobody reads any more, as a shell
# reports a program killed by SIGPIPE: 128 + 13.
EXIT_BROKEN_PIPE = 128 + 13


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``osv`` command; return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    requested = _requested_command(argv)
    parser = build_parser(requested)
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    if args.command is None and not args.version:
        parser.error("a command is required")

    try:
        if args.version:
            print(version_report())
            status = 0
        else:
            status = importlib.import_module(COMMANDS[args.command].module).run(args)
        # What is still buffered is written now, so that a reader that went
        # away is noticed here rather than at the interpreter's exit.
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError as exc:
        if not _stdout_is_broken():
            return _report(exc)
        return _quiet_broken_pipe()
    except Exception as exc:
        return _report(exc)


def _stdout_is_broken() -> bool:
    """Whether standard output is a pipe (or socket) whose reader has gone."""
    # Imported here: only a broken pipe needs it.
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (AttributeError, ValueError, OSError):
        return False
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in events)


def _quiet_broken_pipe() -> int:
    """End quietly when the reader of standard output has gone.

    ``osv image info IMAGE | head -3`` is not an error of ours, and tools
    killed by SIGPIPE print nothing. Python ignores SIGPIPE and raises
    BrokenPipeError instead; as its documentation advises, standard output is
    pointed at /dev/null so that the interpreter's last flush does not fail
    again, and the status is the one a shell shows for SIGPIPE.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, ValueError, OSError):
        logger.debug("standard output could not be pointed at /dev/null")
    return EXIT_BROKEN_PIPE


def build_parser(requested: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the requested subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build disk images of Linux programs and boot them in a KVM "
        "virtual machine served by a kernel written in Python.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="store_true",
        help="print the versions of the core and of every installed module",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="say more: once for progress, twice for debugging detail",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        subparser = subparsers.add_parser(
            name,
            help=command.help,
            description=command.help,
            formatter_class=_HelpFormatter,
        )
        if name == requested:
            importlib.import_module(command.module).add_arguments(subparser)
    return parser


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help layout, as wide as the terminal, found without shutil.

    argparse makes a formatter even when only parsing (to check each option's
    metavar), and its own one imports shutil, and with it the bz2 and lzma
    modules, just to ask for the terminal's width: a cost on every start of
    every command. The width is found as shutil finds it: $COLUMNS, else the
    terminal on standard output, else 80 columns.
    """

    def __init__(self, prog: str, **kwargs: int) -> None:
        kwargs.setdefault("width", _terminal_columns() - 2)
        super().__init__(prog, **kwargs)


def _terminal_columns() -> int:
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


def version_report() -> str:
    """Describe the core's version and build, and every installed module."""
    # Imported here: only --version needs to look at the build and at the
    # installed distributions.
    from osv import _cext, _plugins

    if _cext.is_compiled():
        build = "compiled"
    elif _cext.disabled() and _cext.compiled_modules():
        build = f"pure Python: {_cext.DISABLE_VARIABLE}=1"
    else:
        build = "pure Python"
    lines = [f"osv-core {osv.__version__} ({build})"]
    for _, distribution, version in _plugins.module_distributions():
        lines.append(f"{distribution} {version}")
    return "\n".join(lines)


def _requested_command(argv: Sequence[str]) -> str | None:
    # A subcommand's options must be on the parser before parsing, yet only
    # the requested subcommand's module should be imported. The global
    # options take no values, so the first word naming a command is the one.
    return next((word for word in argv if word in COMMANDS), None)


def _configure_logging(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format=f"{PROG}: %(levelname)s: %(message)s")


def _report(exc: Exception) -> int:
    """Turn an exception into one line on stderr and exit status 1."""
    # Errors raised on purpose by the kernel and its modules are typed per
    # layer (ModuleError, ImageError, ...); they and OS errors are the user's
    # to fix, so their message is the whole story.
    if _is_typed(exc) or isinstance(exc, OSError):
        logger.debug("error details", exc_info=exc)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    logger.debug("internal error", exc_info=exc)
    print(
        f"{PROG}: internal error: {type(exc).__name__}: {exc} "
        "(run with -vv to see where)",
        file=sys.stderr,
    )
    return 1


def _is_typed(exc: Exception) -> bool:
    module = type(exc).__module__
    return module == "osv" or module.startswith(("osv.", "osv_mod_"))
