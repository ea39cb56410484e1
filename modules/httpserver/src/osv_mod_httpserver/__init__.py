"""OSv's REST API for the osv kernel: the full flavour (module ``httpserver``).

The read-only flavour is the module ``httpserver-monitoring``
(``osv_mod_httpserver.monitoring``).
"""

from osv import hookimpl
from osv_mod_httpserver import _service
from osv_mod_httpserver._config import (
    DEFAULT_ADDRESS,
    DEFAULT_PORT,
    FULL,
    LOADER_OPTIONS,
    MONITORING,
    ConfigError,
    ServerConfig,
)
from osv_mod_httpserver._server import HttpError, RestServer
from osv_mod_httpserver._service import server_of

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_PORT",
    "FULL",
    "LOADER_OPTIONS",
    "MONITORING",
    "ConfigError",
    "HttpError",
    "RestServer",
    "ServerConfig",
    "osv_boot",
    "osv_loader_options",
    "osv_rest_routes",
    "osv_shutdown",
    "server_of",
]


@hookimpl
def osv_loader_options():
    """The server's settings as boot options (--httpserver-port=N, ...)."""
    return list(LOADER_OPTIONS)


@hookimpl
def osv_rest_routes(kernel):
    """OSv's route groups: /os, /env, /file, /fs, /hardware, /network, /app, /api."""
    return _service.own_routes(kernel, FULL)


@hookimpl
def osv_boot(kernel):
    """Start the REST API server beside the application."""
    _service.start(kernel, FULL)


@hookimpl
def osv_shutdown(kernel):
    """Stop the REST API server."""
    _service.stop(kernel)
