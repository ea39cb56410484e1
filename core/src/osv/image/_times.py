"""Modification times of an image's files: taken from the host at assembly,
kept as a run-length table, handed to the file system at boot."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable

from ._errors import ImageError

logger = logging.getLogger(__name__)

# Why images carry times at all: neither of OSv's formats has a field for
# them (a bootfs record is size, offset, type and name; a ROFS inode is mode,
# number, offset and count), so every file would be dated at boot. Programs
# notice. CPython compares the time recorded in each cached .pyc with its
# source's st_mtime, finds every one stale, and recompiles (and tries to
# rewrite) each module it imports on every run. make(1) and rsync-like tools
# make the same comparison.
#
# The table lists one time per object in the file system's own order (bootfs
# record order, ROFS inode order). Files installed together share a time, so
# it is stored as runs: [[mtime_ns, count], ...]. A Python tree of 5,000
# files takes a few hundred runs instead of 5,000 numbers.


# Times are signed 64-bit nanoseconds, as ROFS stores them: files dated
# before 1970 keep their date.
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def build_time_ns() -> int:
    """The time given to objects with no host file: SOURCE_DATE_EPOCH, or now.

    SOURCE_DATE_EPOCH keeps images reproducible, as the descriptor's
    creation time does.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None and epoch.isdigit():
        return int(epoch) * 1_000_000_000
    return time.time_ns()


def host_time_ns(host: str | None, default: int | None) -> int | None:
    """The host object's modification time (symlinks followed), or ``default``.

    A host file that cannot be examined is reported where its contents are
    read; here it only falls back to ``default``.
    """
    if host is None:
        return default
    try:
        return os.stat(host).st_mtime_ns
    except (OSError, ValueError):
        return default


def encode_time_runs(times: Iterable[int]) -> list[list[int]]:
    """Run-length encode ``times``: consecutive equal values become one run."""
    runs: list[list[int]] = []
    for value in times:
        if runs and runs[-1][0] == value:
            runs[-1][1] += 1
        else:
            runs.append([value, 1])
    return runs


def decode_time_runs(runs: object, count: int, what: str) -> list[int]:
    """Expand ``runs`` into ``count`` times, refusing a malformed table.

    ``what`` names the table in the error message.
    """
    if not isinstance(runs, list):
        raise ImageError(f"image descriptor: {what} is not a list of runs")
    times: list[int] = []
    for run in runs:
        if (
            not isinstance(run, list)
            or len(run) != 2
            or not all(type(number) is int for number in run)
            or not _I64_MIN <= run[0] <= _I64_MAX
            or run[1] < 1
            or len(times) + run[1] > count
        ):
            raise ImageError(
                f"image descriptor: {what} has a malformed run {_shown(run)} "
                f"for {count} objects"
            )
        times.extend([run[0]] * run[1])
    if len(times) != count:
        raise ImageError(
            f"image descriptor: {what} gives {len(times)} times for {count} objects"
        )
    return times


def _shown(run: object) -> str:
    text = repr(run)
    return text if len(text) <= 64 else text[:64] + "..."
