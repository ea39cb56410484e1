"""The read-only flavour of the REST API (module ``httpserver-monitoring``).

GET routes and /api/batch only, as OSv's httpserver-monitoring-api.
"""

from osv import hookimpl
from osv_mod_httpserver import _service
from osv_mod_httpserver._config import LOADER_OPTIONS, MONITORING


@hookimpl
def osv_loader_options():
    """The server's settings as boot options (--httpserver-port=N, ...)."""
    return list(LOADER_OPTIONS)


@hookimpl
def osv_rest_routes(kernel):
    """OSv's read-only routes."""
    return _service.own_routes(kernel, MONITORING)


@hookimpl
def osv_boot(kernel):
    """Start the read-only REST API server beside the application."""
    _service.start(kernel, MONITORING)


@hookimpl
def osv_shutdown(kernel):
    """Stop the REST API server."""
    _service.stop(kernel)
