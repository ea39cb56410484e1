"""The server as a kernel service: started at boot, stopped with the VM."""

from __future__ import annotations

import logging
import sys
import threading
import time

import osv
from osv_mod_httpserver._config import ServerConfig, boot_options
from osv_mod_httpserver._routes import OsRoutes, route_table
from osv_mod_httpserver._server import RestServer

logger = logging.getLogger(__name__)

# One server per kernel that booted with the module (a test may boot several
# kernels in one process), by the kernel's id.
_servers: dict[int, RestServer] = {}
_routes: dict[int, OsRoutes] = {}


def own_routes(kernel, flavour: str) -> list[tuple]:  # noqa: ANN001
    """OSv's route groups for ``kernel``, as hook entries."""
    routes = _routes.setdefault(id(kernel), OsRoutes(kernel))
    return route_table(routes, flavour)


def start(kernel, flavour: str) -> RestServer:  # noqa: ANN001
    """Start serving the REST API beside the application."""
    started = time.monotonic_ns()
    config = ServerConfig.from_options(boot_options(kernel), flavour)
    server = RestServer(kernel, config, osv.rest_routes(kernel.plugins, kernel))
    server.start()
    _servers[id(kernel)] = server
    routes = _routes.get(id(kernel))
    if routes is not None:
        # /api/stop answers first, then the server stops (from another
        # thread: a request thread cannot wait for its own server to end).
        routes.server_stop = lambda: threading.Thread(target=server.stop).start()
    message = f"Rest API server running on port {server.port}"
    kernel.log(message)
    sys.stdout.write(message + "\n")
    sys.stdout.flush()
    logger.info(
        "REST API (%s) on %s:%d, started in %.1f ms",
        flavour,
        config.ipaddress,
        server.port,
        (time.monotonic_ns() - started) / 1e6,
    )
    return server


def stop(kernel) -> None:  # noqa: ANN001
    """Stop the server of ``kernel``, if it runs."""
    _routes.pop(id(kernel), None)
    server = _servers.pop(id(kernel), None)
    if server is not None:
        server.stop()


def server_of(kernel) -> RestServer | None:  # noqa: ANN001
    """The server serving ``kernel`` (tests and benchmarks use it)."""
    return _servers.get(id(kernel))
