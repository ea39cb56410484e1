"""Loader options: the ``--name[=value]`` words that start the boot command line.

Splitting and option rules follow OSv's ``loader_parse_cmdline`` and its
strict option parser, so boot command lines written for OSv mean the same here.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from osv._record import FrozenRecord

from ._errors import LoaderOptionError

logger = logging.getLogger(__name__)

# Loader options end at whitespace of these three kinds only; a backslash
# makes the next character part of the option (so "--env=A=b\ c" is one
# option with a space in it).  There is no quoting.
_DELIMITERS = " \t\n"
_ESCAPE = "\\"

_OPTION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class LoaderOption(FrozenRecord):
    """One loader option the kernel accepts.

    ``takes_value`` distinguishes ``--name=value`` options from ``--name``
    flags.  A ``repeatable`` option collects every value given; any other
    value option uses its first value.  ``value_type`` (str, int or float) is
    checked at parse time.  An option with ``requires`` is only recognised
    when that other option is given too (OSv's ``--strace`` needs ``--trace``).
    """

    __slots__ = (
        "name",
        "takes_value",
        "help",
        "repeatable",
        "value_type",
        "metavar",
        "requires",
    )

    def __init__(
        self,
        name: str,
        takes_value: bool,
        help: str,
        repeatable: bool = False,
        value_type: type = str,
        metavar: str = "VALUE",
        requires: str | None = None,
    ) -> None:
        define = object.__setattr__
        define(self, "name", name)
        define(self, "takes_value", takes_value)
        define(self, "help", help)
        define(self, "repeatable", repeatable)
        define(self, "value_type", value_type)
        define(self, "metavar", metavar)
        define(self, "requires", requires)

        if not _OPTION_NAME.fullmatch(self.name):
            raise LoaderOptionError(f"invalid loader option name {self.name!r}")
        if self.value_type not in (str, int, float):
            raise LoaderOptionError(
                f"loader option --{self.name}: value_type must be str, int or float"
            )
        if not self.takes_value and (self.repeatable or self.value_type is not str):
            raise LoaderOptionError(
                f"loader option --{self.name}: a flag has no value to repeat or convert"
            )

    @property
    def synopsis(self) -> str:
        return f"--{self.name}={self.metavar}" if self.takes_value else f"--{self.name}"


def _flag(name: str, help: str, **more: object) -> LoaderOption:
    return LoaderOption(name, False, help, **more)


def _value(name: str, metavar: str, help: str, **more: object) -> LoaderOption:
    return LoaderOption(name, True, help, metavar=metavar, **more)


# OSv's loader options.  Left out on purpose: --leak (only in OSv builds with
# a memory tracker) and --assign-net (in OSv's help text, but never parsed),
# so both are refused as unrecognised, as OSv does.
BUILTIN_LOADER_OPTIONS: tuple[LoaderOption, ...] = (
    _flag("help", "show these options, then go on booting"),
    _flag("verbose", "print the kernel's debug messages"),
    _flag("bootchart", "print how long each boot stage took"),
    _value("console", "serial|vga|all", "console driver(s) to use (default all)"),
    _value("env", "KEY=VALUE", "set an environment variable", repeatable=True),
    _value("cwd", "DIR", "change to DIR before running the application"),
    _value("redirect", "FILE", "send stdout and stderr to FILE (>>FILE appends)"),
    _value("rootfs", "TYPE", "root file-system type (default: detect it)"),
    _value(
        "mount-fs",
        "TYPE,SOURCE,DIR",
        "mount SOURCE (device or URL) of type TYPE on DIR",
        repeatable=True,
    ),
    _flag("nomount", "stay on the boot ramfs (no root file system)"),
    _flag("nopivot", "mount the root file system but do not make it /"),
    _flag("noinit", "do not run the command files in /init"),
    _flag("norandom", "do not set up the random devices"),
    _flag("noshutdown", "keep running after the application returns"),
    _flag("power-off-on-abort", "power off, not halt, when the kernel aborts"),
    _value(
        "delay", "SECONDS", "wait SECONDS after starting the CPUs", value_type=float
    ),
    _flag("nopci", "do not enumerate PCI devices"),
    _value("maxnic", "N", "use at most N network interfaces", value_type=int),
    _value(
        "ip",
        "IF,ADDR,NETMASK",
        "static IPv4 address of an interface (no DHCP)",
        repeatable=True,
    ),
    _value("defaultgw", "ADDR", "default gateway (with --ip)"),
    _value("nameserver", "ADDR", "DNS server (with --ip)"),
    _flag("disable_rofs_cache", "read ROFS without its cache"),
    _flag("extra-zfs-pools", "import every ZFS pool after mounting a ZFS root"),
    _flag("preload-zfs-library", "load the ZFS library before mounting the root"),
    _value(
        "trace",
        "PATTERNS",
        "enable tracepoints matching PATTERNS (* and ?)",
        repeatable=True,
    ),
    _flag("trace-backtrace", "record a backtrace with each trace record"),
    _flag("trace-list", "list every tracepoint"),
    _flag(
        "strace",
        "print tracepoints as they fire (with --trace)",
        requires="trace",
    ),
    _value("sampler", "HZ", "sample stacks HZ times a second", value_type=int),
)


class Redirect(NamedTuple):
    """Where ``--redirect`` sends the application's stdout and stderr."""

    path: str
    append: bool


class MountRequest(NamedTuple):
    """One valid ``--mount-fs=TYPE,SOURCE,DIR``."""

    fs_type: str
    source: str
    mount_point: str


def split_cmdline(text: str) -> tuple[list[str], str]:
    """Split a boot command line into loader option words and the application part.

    Leading words that start with "-" are loader options (backslash escapes
    the next character).  The first word that does not start with "-" begins
    the application command line, returned verbatim from that word on.
    """
    tokens: list[str] = []
    position, end = 0, len(text)
    while True:
        while position < end and text[position] in _DELIMITERS:
            position += 1
        if position == end:
            return tokens, ""
        if text[position] != "-":
            return tokens, text[position:]

        token: list[str] = []
        while position < end and text[position] not in _DELIMITERS:
            if text[position] == _ESCAPE:
                position += 1
                if position == end:
                    # A backslash with nothing after it escapes nothing.
                    break
            token.append(text[position])
            position += 1
        tokens.append("".join(token))


def parse_loader_options(
    tokens: Sequence[str], extra: Iterable[LoaderOption] = ()
) -> LoaderOptions:
    """Parse loader option words with OSv's strict rules.

    *extra* are the options modules declare beside the built-in ones.  Any
    malformed, misused or unknown option raises ``LoaderOptionError`` with
    the message OSv prints before its usage text.
    """
    definitions = _definitions(extra)

    # First every word's syntax, in order; values of one name accumulate.
    # None marks the flag form "--name".
    given: dict[str, list[str] | None] = {}
    for token in tokens:
        if not token.startswith("--") or token[2:].startswith("="):
            raise LoaderOptionError(f"not an option: {token}")
        name, equals, value = token[2:].partition("=")
        if not name:
            raise LoaderOptionError(f"not an option: {token}")
        if equals:
            if not value:
                raise LoaderOptionError(
                    f"the required argument for option '--{name}' is missing"
                )
            values = given.setdefault(name, [])
            if values is None:
                raise LoaderOptionError(f"duplicate option: --{name}")
            values.append(value)
        elif name in given:
            raise LoaderOptionError(f"duplicate option: --{name}")
        else:
            given[name] = None

    # Then the known options, so their misuse is reported before any
    # unknown option (the order in which OSv reports them).
    unknown = [
        name
        for name in given
        if name not in definitions
        or (definitions[name].requires and definitions[name].requires not in given)
    ]
    flags: set[str] = set()
    values_of: dict[str, list[object]] = {}
    warnings: list[str] = []
    for name, supplied in given.items():
        if name in unknown:
            continue
        option = definitions[name]
        if not option.takes_value:
            if supplied is not None:
                raise LoaderOptionError(
                    f"option '--{name}' does not take any arguments"
                )
            flags.add(name)
            continue
        if supplied is None:
            raise LoaderOptionError(
                f"the required argument for option '--{name}' is missing"
            )
        values_of[name] = [_convert(option, value) for value in supplied]
        if len(supplied) > 1 and not option.repeatable:
            warnings.append(
                f"--{name} given {len(supplied)} times; using the first value "
                f"({supplied[0]})"
            )

    if unknown:
        raise LoaderOptionError(
            "\n".join(f"unrecognized option: {name}" for name in unknown)
        )

    options = LoaderOptions(definitions, flags, values_of, warnings)
    for warning in warnings:
        logger.debug("loader options: %s", warning)
    return options


def usage_text(options: Iterable[LoaderOption]) -> str:
    """The usage text printed after a loader option error (and for --help)."""
    options = list(options)
    # Synopses longer than the column go on a line of their own.
    width = min(max((len(option.synopsis) for option in options), default=0), 26) + 2
    lines = [
        "Usage: [LOADER OPTION]... APPLICATION COMMAND LINE",
        "",
        "Loader options:",
    ]
    for option in options:
        synopsis = option.synopsis
        if len(synopsis) + 2 > width:
            lines.append(f"  {synopsis}")
            lines.append(f"  {'':{width}}{option.help}")
        else:
            lines.append(f"  {synopsis:{width}}{option.help}")
    return "\n".join(lines) + "\n"


class LoaderOptions:
    """The loader options a boot command line gave, checked and converted.

    ``warnings`` lists the lines a boot prints for values it ignores (such as
    an invalid ``--mount-fs``); they do not stop the boot.
    """

    def __init__(
        self,
        definitions: dict[str, LoaderOption],
        flags: set[str],
        values: dict[str, list[object]],
        warnings: list[str],
    ) -> None:
        self._definitions = definitions
        self._flags = flags
        self._values = values
        self.warnings = warnings
        self._mount_fs = self._valid_mounts()
        self._redirect = self._parse_redirect()

    def __contains__(self, name: str) -> bool:
        return name in self._flags or name in self._values

    def __repr__(self) -> str:
        given = sorted(self._flags) + [
            f"{n}={v!r}" for n, v in sorted(self._values.items())
        ]
        return f"LoaderOptions({', '.join(given)})"

    def flag(self, name: str) -> bool:
        """Whether the flag ``--name`` was given."""
        if self._option(name).takes_value:
            raise TypeError(f"--{name} takes a value; use get() or values()")
        return name in self._flags

    def get(self, name: str) -> object | None:
        """The (first) value of ``--name=value``, or None when it was not given."""
        values = self.values(name)
        return values[0] if values else None

    def values(self, name: str) -> list[object]:
        """Every value given for ``--name=value``, in order."""
        if not self._option(name).takes_value:
            raise TypeError(f"--{name} is a flag; use flag()")
        return list(self._values.get(name, ()))

    @property
    def env(self) -> list[str]:
        """``KEY=VALUE`` strings from every ``--env``."""
        return [str(value) for value in self.values("env")]

    @property
    def cwd(self) -> str | None:
        return self.get("cwd")

    @property
    def verbose(self) -> bool:
        return self.flag("verbose")

    @property
    def bootchart(self) -> bool:
        return self.flag("bootchart")

    @property
    def nomount(self) -> bool:
        return self.flag("nomount")

    @property
    def rootfs(self) -> str | None:
        return self.get("rootfs")

    @property
    def redirect(self) -> Redirect | None:
        """Where ``--redirect`` sends output; ``>>FILE`` means append."""
        return self._redirect

    @property
    def mount_fs(self) -> list[MountRequest]:
        """The valid ``--mount-fs`` values; invalid ones are in ``warnings``."""
        return list(self._mount_fs)

    def _option(self, name: str) -> LoaderOption:
        try:
            return self._definitions[name]
        except KeyError:
            raise KeyError(f"no loader option --{name} is defined") from None

    def _valid_mounts(self) -> list[MountRequest]:
        mounts = []
        for value in self.values("mount-fs"):
            fields = str(value).split(",")
            if len(fields) != 3 or not all(fields):
                self.warnings.append(
                    f"Ignoring value: '{value}' for option --mount-fs, expected "
                    "TYPE,SOURCE,DIR (three non-empty comma-separated fields)"
                )
                continue
            mounts.append(MountRequest(*fields))
        return mounts

    def _parse_redirect(self) -> Redirect | None:
        value = self.get("redirect")
        if value is None:
            return None
        value = str(value)
        if value.startswith(">>"):
            if len(value) == 2:
                raise LoaderOptionError(
                    "the argument ('>>') for option '--redirect' is invalid"
                )
            return Redirect(value[2:], append=True)
        return Redirect(value, append=False)


def _definitions(extra: Iterable[LoaderOption]) -> dict[str, LoaderOption]:
    definitions = {option.name: option for option in BUILTIN_LOADER_OPTIONS}
    for option in extra:
        if not isinstance(option, LoaderOption):
            raise LoaderOptionError(f"{option!r} is not a LoaderOption")
        if option.name in definitions:
            raise LoaderOptionError(
                f"loader option --{option.name} is declared twice "
                "(a module may not redefine a built-in or another module's option)"
            )
        definitions[option.name] = option
    return definitions


def _convert(option: LoaderOption, value: str) -> object:
    if option.value_type is str:
        return value
    if option.value_type is int and _INTEGER.fullmatch(value):
        return int(value)
    if option.value_type is float and _DECIMAL.fullmatch(value):
        number = float(value)
        if math.isfinite(number):
            return number
    raise LoaderOptionError(
        f"the argument ('{value}') for option '--{option.name}' is invalid"
    )
