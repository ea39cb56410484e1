"""Running a program in the VM (the `osv` command) and natively, for tests
that compare the two runs' output."""

from __future__ import annotations

import subprocess
import sys
from typing import IO

# What a test may pass as a child's standard input: None for /dev/null, or
# an open file or descriptor.
Stdin = IO[str] | IO[bytes] | int | None


def osv(
    *args: str, stdin: Stdin = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m osv ARGS`` with this interpreter; text output captured.

    The command reads ``stdin`` (/dev/null by default), so that a guest
    never waits on the terminal pytest runs in.
    """
    return subprocess.run(
        [sys.executable, "-m", "osv", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
    )


def program_output(stdout: str) -> str:
    """The program's own output: what follows the kernel's `Cmdline:` line."""
    lines = stdout.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("Cmdline: "):
            return "".join(lines[i + 1 :])
    raise AssertionError(f"no Cmdline line in console output:\n{stdout}")


def native(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    stdin: Stdin = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` on the host as the VM runs it: with only ``env`` (by
    default an empty environment) and ``stdin`` (/dev/null by default)."""
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env or {},
        timeout=timeout,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
    )
