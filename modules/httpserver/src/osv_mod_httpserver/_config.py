"""The server's settings: boot options, their defaults, and the boot command line."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from osv.boot import LoaderOption, parse_loader_options, split_cmdline

logger = logging.getLogger(__name__)

FULL = "full"
MONITORING = "monitoring"

# OSv's server options, spelt as loader options: OSv's loader accepts only
# options it knows, so each carries the module's name in front.
PREFIX = "httpserver-"
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 8000
# OSv's defaults, paths inside the guest: the TLS material travels in the image.
DEFAULT_CERT = "/etc/pki/server.pem"
DEFAULT_KEY = "/etc/pki/private/server.key"
DEFAULT_CACERT = "/etc/pki/CA/cacert.pem"

# Where OSv stores the boot command line on the disk: offset 512 of vblk0,
# NUL-terminated, ending before the image descriptor at 64 KiB.
CMDLINE_DEVICE = "vblk0"
CMDLINE_OFFSET = 512
CMDLINE_AREA = 64 * 1024 - CMDLINE_OFFSET


class ConfigError(Exception):
    """A server option has a value the server cannot use."""


LOADER_OPTIONS = [
    LoaderOption(
        name=f"{PREFIX}port",
        takes_value=True,
        value_type=int,
        metavar="N",
        help=f"TCP port of the REST API (default {DEFAULT_PORT})",
    ),
    LoaderOption(
        name=f"{PREFIX}ipaddress",
        takes_value=True,
        metavar="ADDR",
        help=f"address the REST API binds on the host (default {DEFAULT_ADDRESS})",
    ),
    LoaderOption(
        name=f"{PREFIX}access-allow",
        takes_value=True,
        metavar="ORIGINS",
        help="CORS: true (any origin), false, or a comma-separated list of origins",
    ),
    LoaderOption(
        name=f"{PREFIX}ssl",
        takes_value=False,
        help="serve HTTPS and require client certificates",
    ),
    LoaderOption(
        name=f"{PREFIX}cert",
        takes_value=True,
        metavar="PATH",
        help=f"server certificate in the guest (default {DEFAULT_CERT})",
    ),
    LoaderOption(
        name=f"{PREFIX}key",
        takes_value=True,
        metavar="PATH",
        help=f"server private key in the guest (default {DEFAULT_KEY})",
    ),
    LoaderOption(
        name=f"{PREFIX}cacert",
        takes_value=True,
        metavar="PATH",
        help=f"CA that client certificates must chain to (default {DEFAULT_CACERT})",
    ),
]


@dataclass(frozen=True)
class ServerConfig:
    """How one server instance listens and whom it answers."""

    flavour: str = FULL
    ipaddress: str = DEFAULT_ADDRESS
    port: int = DEFAULT_PORT
    access_allow: tuple[str, ...] = ()
    ssl: bool = False
    cert: str = DEFAULT_CERT
    key: str = DEFAULT_KEY
    cacert: str = DEFAULT_CACERT

    @classmethod
    def from_options(cls, options, flavour: str) -> ServerConfig:  # noqa: ANN001
        """Settings from parsed loader options (``osv.boot.LoaderOptions``)."""
        port = options.get(f"{PREFIX}port")
        if port is not None and not 0 <= port <= 65535:
            raise ConfigError(f"--{PREFIX}port={port}: not a TCP port (0-65535)")
        return cls(
            flavour=flavour,
            ipaddress=options.get(f"{PREFIX}ipaddress") or DEFAULT_ADDRESS,
            port=DEFAULT_PORT if port is None else port,
            access_allow=parse_access_allow(options.get(f"{PREFIX}access-allow")),
            ssl=options.flag(f"{PREFIX}ssl"),
            cert=options.get(f"{PREFIX}cert") or DEFAULT_CERT,
            key=options.get(f"{PREFIX}key") or DEFAULT_KEY,
            cacert=options.get(f"{PREFIX}cacert") or DEFAULT_CACERT,
        )


def parse_access_allow(value: str | None) -> tuple[str, ...]:
    """OSv's --access-allow: "true" is any origin, "false" or nothing is none."""
    if value is None or value.strip().lower() in ("", "false"):
        return ()
    if value.strip().lower() == "true":
        return ("*",)
    return tuple(origin.strip() for origin in value.split(",") if origin.strip())


def boot_cmdline(kernel) -> str:  # noqa: ANN001
    """The command line this boot was given.

    The kernel's own record when it keeps one; otherwise the line stored in
    the boot disk, which is what a boot without overrides runs.
    """
    recorded = getattr(kernel, "cmdline", None)
    if isinstance(recorded, str):
        return recorded
    # TODO: the kernel does not record the command line it booted with; a
    # line given with `osv run -e` or extra boot options is not seen here,
    # and the stored one is reported instead.
    return stored_cmdline(kernel)


def stored_cmdline(kernel) -> str:  # noqa: ANN001
    """The command line stored on the boot disk (offset 512 of vblk0)."""
    devices = getattr(kernel, "block_devices", None) or {}
    disk = devices.get(CMDLINE_DEVICE)
    if disk is None:
        raise ConfigError("the kernel has no boot disk to read the command line from")
    area = disk.read(CMDLINE_OFFSET, min(CMDLINE_AREA, disk.size - CMDLINE_OFFSET))
    return area.partition(b"\0")[0].decode("utf-8", "replace")


def boot_options(kernel):  # noqa: ANN001, ANN201
    """This boot's loader options, as ``osv.boot.LoaderOptions``."""
    recorded = getattr(kernel, "loader_options", None)
    if recorded is not None:
        return recorded
    import osv

    tokens, _ = split_cmdline(boot_cmdline(kernel))
    return parse_loader_options(tokens, extra=osv.loader_options(kernel.plugins))
