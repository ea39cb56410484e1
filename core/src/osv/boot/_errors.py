"""Exceptions raised while reading what the boot command line asks for."""


class BootError(Exception):
    """The boot cannot go on as asked."""


class LoaderOptionError(BootError):
    """The loader options on the boot command line are malformed or unknown.

    The message is the line OSv prints before the usage text, e.g.
    ``unrecognized option: foo``.
    """


class CommandLineError(BootError):
    """The application command line cannot be parsed or expanded."""
