"""What the boot command line asks for: loader options and the application's commands."""

from ._cmdline import Command, parse_command_line, quote_word
from ._errors import BootError, CommandLineError, LoaderOptionError
from ._options import (
    BUILTIN_LOADER_OPTIONS,
    LoaderOption,
    LoaderOptions,
    MountRequest,
    Redirect,
    parse_loader_options,
    split_cmdline,
    usage_text,
)

__all__ = [
    "BUILTIN_LOADER_OPTIONS",
    "BootError",
    "Command",
    "CommandLineError",
    "LoaderOption",
    "LoaderOptionError",
    "LoaderOptions",
    "MountRequest",
    "Redirect",
    "parse_command_line",
    "parse_loader_options",
    "quote_word",
    "split_cmdline",
    "usage_text",
]
