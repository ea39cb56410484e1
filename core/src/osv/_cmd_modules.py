"""``osv modules``: list the installed modules, their versions and hooks."""

import argparse

from osv._plugins import load_modules


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the subcommand's options (it has none)."""
    parser.epilog = (
        "Exit status 1 when some installed module failed to load; the listing says why."
    )


def run(args: argparse.Namespace) -> int:
    """Load every installed module one at a time and list what happened."""
    modules = load_modules()
    for module in modules.loaded:
        origin = "  (built in)" if module.builtin else ""
        print(f"{module.name}  {module.distribution} {module.version}{origin}")
        print(f"    hooks: {', '.join(module.hooks) or 'none'}")
    for failure in modules.failed:
        print(f"{failure.name}  {failure.distribution} {failure.version}  FAILED")
        print(f"    reason: {failure.reason}")
    return 1 if modules.failed else 0
