"""Sizes as users write them on command lines and in build settings: 512M, 2G, 1024K."""

import re

from ._errors import SizeError

# Binary multiples, as OSv's build scripts and QEMU's -m option read them.
_MULTIPLIERS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

_SIZE = re.compile(r"(?P<number>[0-9]+)(?P<suffix>[kmg]?)", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Return the number of bytes that *text* ("512M", "2g", "1024K", "4096") means."""
    match = _SIZE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise SizeError(
            f"invalid size {text!r}: expected a whole number of bytes, "
            "optionally followed by K, M or G (e.g. 512M)"
        )
    return int(match["number"]) * _MULTIPLIERS[match["suffix"].lower()]
