"""The HTTP server: routing, OSv's error bodies, CORS, TLS, batches, OpenAPI."""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import errno
import json
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

from osv.vfs import FsError
from osv_mod_httpserver._config import MONITORING, ServerConfig
from osv_mod_httpserver._guestfs import locked, read_file
from osv_mod_httpserver._routes import NotSupported, RawBody

logger = logging.getLogger(__name__)

# Seconds a stopping server waits for replies being written.
STOP_GRACE = 5.0
# Requests that end the VM (or boot it again): the server takes no other.
ENDING_ROUTES = {
    ("POST", "/os/shutdown"),
    ("POST", "/os/poweroff"),
    ("POST", "/os/reboot"),
}

OPENAPI_VERSION = "3.0.3"
API_VERSION = "0.0.1"
MAX_BODY = 64 << 20
# OSv's /api-doc listing: each group and how it describes itself.
GROUPS = {
    "api": "Advanced API options",
    "app": "app API",
    "env": "Environment variables API",
    "file": "file API",
    "fs": "FS core API",
    "hardware": "Hardware management API",
    "network": "Hardware management API",
    "os": "OS core API",
    "trace": "Trace API",
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["message", "code"],
    "properties": {"message": {"type": "string"}, "code": {"type": "integer"}},
}
# Errors of the guest's VFS that mean "no such thing" rather than "bad request".
NOT_FOUND_ERRNOS = (errno.ENOENT, errno.ENOTDIR)


class HttpError(Exception):
    """An answer other than 200, with OSv's {"message", "code"} body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RestServer:
    """OSv's REST API for one kernel, served by a host thread."""

    def __init__(self, kernel, config: ServerConfig, routes: list) -> None:  # noqa: ANN001
        self.kernel = kernel
        self.config = config
        self.routes = [
            r for r in routes if config.flavour != MONITORING or r.method == "GET"
        ]
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Requests being answered: stopping waits for them (a shutdown
        # request ends the program before its own reply is sent).
        self._in_flight = 0
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Count a request as in flight until its reply has been written."""
        with self._idle:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    # ---- life cycle -----------------------------------------------------------

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"server_app": self})
        httpd = ThreadingHTTPServer((self.config.ipaddress, self.config.port), handler)
        httpd.daemon_threads = True
        if self.config.ssl:
            context = self._tls_context()
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="httpserver", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    def stop_accepting(self) -> None:
        """Take no new connection: the VM is going away (shutdown, reboot).

        Called before the reply to the request that ends the VM is sent, so
        a client that got that reply cannot reach this server again: after
        a reboot it finds the next boot's server, not this one.
        """
        httpd = self._httpd
        if httpd is not None:
            httpd.shutdown()

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        # No new request is taken from here on (a client polling across a
        # reboot must not reach the server that is going away), while the
        # replies being written are let through.
        httpd.shutdown()
        with self._idle:
            if not self._idle.wait_for(lambda: self._in_flight == 0, STOP_GRACE):
                logger.warning("stopping with %d replies unsent", self._in_flight)
        httpd.server_close()

    def _tls_context(self) -> ssl.SSLContext:
        """TLS as OSv's server sets it up: 1.2 or later, client certificates required.

        The certificate, key and CA are files of the guest, read through its
        VFS. The ssl module loads a certificate chain only from a file, so
        the chain is written to a private host file that is removed at once.
        """
        vfs = self.kernel.vfs
        try:
            with locked():
                cert = read_file(vfs, self.config.cert)
                key = read_file(vfs, self.config.key)
                cacert = read_file(vfs, self.config.cacert)
        except FsError as error:
            raise HttpError(500, f"cannot read TLS material: {error}") from None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=cacert.decode())
        fd, name = tempfile.mkstemp(prefix="osv-httpserver-")
        try:
            os.write(fd, cert + b"\n" + key)
            os.close(fd)
            context.load_cert_chain(name)
        finally:
            os.unlink(name)
        return context

    # ---- dispatch -------------------------------------------------------------

    def dispatch(
        self, method: str, target: str, form: dict[str, str], files: dict[str, bytes]
    ) -> tuple[int, object]:
        """Answer one request: (status, value) where value is JSON-able or RawBody."""
        try:
            return 200, self._dispatch(method, target, form, files)
        except HttpError as error:
            return error.status, {"message": error.message, "code": error.status}

    def _dispatch(
        self, method: str, target: str, form: dict[str, str], files: dict[str, bytes]
    ) -> object:
        split = urlsplit(target)
        path = unquote(split.path)
        if not path.startswith("/") or ".." in path.split("/"):
            raise HttpError(400, f"Bad path {path!r}: must be absolute, without '..'")
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        params.update(form)

        builtin = self._builtin(method, path, params)
        if builtin is not None:
            return builtin[0]
        matched = [(route, value) for route, value in self._matches(path)]
        for route, value in matched:
            if route.method == method:
                if value is not None:
                    name = route.path.rsplit("{", 1)[1].rstrip("}/")
                    params[name] = value
                return self._call(route, params, files)
        if matched:
            allowed = sorted({route.method for route, _ in matched})
            why = (
                " (this is the read-only monitoring API)"
                if self.config.flavour == MONITORING
                else ""
            )
            raise HttpError(
                405,
                f"Method {method} not allowed on {path}; use {', '.join(allowed)}{why}",
            )
        raise HttpError(404, "Not found")

    def _matches(self, path: str):  # noqa: ANN202
        """Routes whose path fits, with the value of their parameter (or None)."""
        trimmed = path.rstrip("/") or "/"
        for route in self.routes:
            head, brace, _ = route.path.partition("{")
            if not brace:
                if trimmed == (route.path.rstrip("/") or "/"):
                    yield route, None
                continue
            # The parameter takes the rest of the URL; for /file/{path} OSv
            # keeps the leading slash (a guest path), as here.
            prefix = head.rstrip("/")
            if path.startswith(prefix + "/") and len(path) > len(prefix) + 1:
                rest = path[len(prefix) :]
                yield route, rest if route.path.startswith("/file/") else rest[1:]

    def _call(self, route, params: dict[str, str], files: dict[str, bytes]) -> object:  # noqa: ANN001
        try:
            if route.path == "/file/{path}" and route.method == "POST":
                return route.handler(params, files)
            return route.handler(params)
        except HttpError:
            raise
        except NotSupported as error:
            raise HttpError(501, str(error)) from None
        except FsError as error:
            status = 404 if error.errno in NOT_FOUND_ERRNOS else 400
            raise HttpError(status, error.message or os.strerror(error.errno)) from None
        except KeyError as error:
            raise HttpError(400, f"Missing mandatory parameter {error}") from None
        except LookupError as error:
            raise HttpError(404, str(error)) from None
        except ValueError as error:
            raise HttpError(400, str(error)) from None
        except Exception as error:
            logger.exception("%s %s failed", route.method, route.path)
            raise HttpError(500, f"{type(error).__name__}: {error}") from None

    def _builtin(self, method: str, path: str, params: dict[str, str]):  # noqa: ANN202
        """The server's own routes: OpenAPI, swagger listings, batches."""
        trimmed = path.rstrip("/")
        if method == "GET" and trimmed == "/openapi.json":
            return (self.openapi(),)
        if method == "GET" and trimmed == "/api-doc":
            return (self.api_doc(),)
        if method == "GET" and trimmed.startswith("/api-doc/"):
            return (self.api_doc_group(trimmed.removeprefix("/api-doc/")),)
        if trimmed == "/api/batch":
            if method != "POST":
                raise HttpError(405, f"Method {method} not allowed on /api/batch")
            return (self.batch(params),)
        return None

    def batch(self, params: dict[str, str]) -> list[dict]:
        """Run several requests in order; all are checked before any runs."""
        text = params.get("batch", "")
        if not text:
            raise HttpError(400, "Missing mandatory parameter 'batch'")
        try:
            requests = json.loads(text.replace("'", '"'))
        except json.JSONDecodeError as error:
            raise HttpError(400, f"Parameter 'batch' is not JSON: {error}") from None
        if not isinstance(requests, list):
            raise HttpError(400, "Parameter 'batch' must be a list of requests")
        for request in requests:
            valid = (
                isinstance(request, dict)
                and request.get("method") in ("GET", "POST", "PUT", "DELETE")
                and isinstance(request.get("relative_url"), str)
                and request["relative_url"].startswith("/")
                and not request["relative_url"].startswith("/api/batch")
            )
            if not valid:
                raise HttpError(
                    400,
                    f"Bad batch request {request!r}: needs a method and a "
                    "relative_url starting with '/' (and no nested batch)",
                )
        answers = []
        for request in requests:
            status, value = self.dispatch(
                request["method"], request["relative_url"], {}, {}
            )
            if isinstance(value, RawBody):
                body = value.data.decode("utf-8", "replace")
            else:
                body = json.dumps(value)
            answers.append({"code": status, "body": body})
        return answers

    # ---- documentation ----------------------------------------------------------

    def openapi(self) -> dict:
        """An OpenAPI 3 document describing every route this server answers."""
        paths: dict[str, dict] = {}
        error = {"application/json": {"schema": ERROR_SCHEMA}}
        for route in self.routes:
            spec = dict(route.operation)
            spec.setdefault("summary", f"{route.method} {route.path} ({route.module})")
            spec.setdefault("parameters", _path_parameters(route.path))
            spec.setdefault(
                "responses",
                {
                    "200": {
                        "description": "success",
                        "content": {"application/json": {"schema": {}}},
                    }
                },  # fmt: skip
            )
            spec["responses"] = {
                **spec["responses"],
                "default": {"description": "error", "content": error},
            }
            spec["operationId"] = f"{route.method.lower()}{route.path}"
            paths.setdefault(route.path, {})[route.method.lower()] = spec
        batch_body = {
            "type": "object",
            "required": ["batch"],
            "properties": {"batch": {"type": "string"}},
        }
        answer = {
            "type": "object",
            "required": ["code", "body"],
            "properties": {"code": {"type": "integer"}, "body": {"type": "string"}},
        }
        paths["/api/batch"] = {
            "post": {
                "operationId": "post/api/batch",
                "summary": "Run several requests in one",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {"schema": batch_body}
                    },  # fmt: skip
                },
                "responses": {
                    "200": {
                        "description": "one answer per request",
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": answer}
                            }
                        },  # fmt: skip
                    },
                    "default": {"description": "error", "content": error},
                },
            }
        }
        for path, summary in (("/openapi.json", "This document"), ("/api-doc", "Swagger 1.2 listing")):  # fmt: skip
            paths[path] = {
                "get": {
                    "operationId": f"get{path}",
                    "summary": summary,
                    "responses": {
                        "200": {
                            "description": summary,
                            "content": {
                                "application/json": {"schema": {"type": "object"}}
                            },
                        },  # fmt: skip
                        "default": {"description": "error", "content": error},
                    },
                }
            }
        title = "OSv REST API"
        if self.config.flavour == MONITORING:
            title += " (monitoring, read-only)"
        return {
            "openapi": OPENAPI_VERSION,
            "info": {"title": title, "version": self.kernel.version or API_VERSION},
            "paths": dict(sorted(paths.items())),
        }

    def _groups(self) -> dict[str, list]:
        groups: dict[str, list] = {}
        for route in self.routes:
            group = route.path.strip("/").split("/")[0]
            groups.setdefault(group, []).append(route)
        return groups

    def api_doc(self) -> dict:
        return {
            "apiVersion": API_VERSION,
            "swaggerVersion": "1.2",
            "apis": [
                {"path": f"/{group}", "description": GROUPS.get(group, f"{group} API")}
                for group in sorted(self._groups())
            ],
        }

    def api_doc_group(self, group: str) -> dict:
        routes = self._groups().get(group)
        if routes is None:
            raise HttpError(404, f"No API group {group!r}")
        return {
            "apiVersion": API_VERSION,
            "swaggerVersion": "1.2",
            "resourcePath": f"/{group}",
            "apis": [
                {
                    "path": route.path,
                    "operations": [
                        {
                            "method": route.method,
                            "summary": route.operation.get("summary", ""),
                            "nickname": f"{route.method.lower()}{route.path}",
                        }
                    ],
                }
                for route in routes
            ],
        }


def _path_parameters(path: str) -> list[dict]:
    if "{" not in path:
        return []
    name = path.rsplit("{", 1)[1].rstrip("}/")
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
    ]


class _Handler(BaseHTTPRequestHandler):
    """One connection's requests, handed to the RestServer."""

    # Replies go out as headers then body, in two writes: with Nagle's
    # algorithm the second waits for the client's delayed ACK (about 40 ms
    # a request on Linux), so it is turned off for every connection.
    disable_nagle_algorithm = True

    server_app: RestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def do_OPTIONS(self) -> None:  # noqa: N802
        # CORS preflight only, as OSv: OPTIONS requests are not routed.
        self._read_body()
        self._send(200, b"", "text/plain")

    def _serve(self, method: str) -> None:
        with self.server_app.answering():
            self._answer(method)

    def _answer(self, method: str) -> None:
        try:
            form, files = self._form()
        except HttpError as error:
            status, value = error.status, {"message": error.message, "code": error.status}  # fmt: skip
        else:
            status, value = self.server_app.dispatch(method, self.path, form, files)
            if status == 200 and (method, urlsplit(self.path).path) in ENDING_ROUTES:
                self.server_app.stop_accepting()
        if isinstance(value, RawBody):
            self._send(status, value.data, value.content_type)
        else:
            self._send(status, json.dumps(value).encode(), "application/json")

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise HttpError(400, "Bad Content-Length") from None
        if length < 0 or length > MAX_BODY:
            raise HttpError(413, f"Request body over {MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def _form(self) -> tuple[dict[str, str], dict[str, bytes]]:
        """Form fields of the body: urlencoded, or multipart (file uploads)."""
        body = self._read_body()
        kind = self.headers.get("Content-Type", "")
        if not body:
            return {}, {}
        if kind.startswith("application/x-www-form-urlencoded"):
            try:
                text = body.decode()
            except UnicodeDecodeError:
                raise HttpError(400, "Form body is not UTF-8") from None
            return dict(parse_qsl(text, keep_blank_values=True)), {}
        if kind.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + kind.encode() + b"\r\n\r\n" + body
            )
            if not message.is_multipart():
                raise HttpError(400, "Malformed multipart body")
            form, files = {}, {}
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if not name:
                    continue
                data = part.get_payload(decode=True) or b""
                if part.get_filename() is not None or name == "file":
                    files[name] = data
                else:
                    form[name] = data.decode("utf-8", "replace")
            return form, files
        return {}, {}

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self._cors()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _cors(self) -> None:
        allowed = self.server_app.config.access_allow
        if not allowed:
            return
        origin = self.headers.get("Origin")
        if "*" in allowed:
            self.send_header("Access-Control-Allow-Origin", "*")
        elif origin in allowed:
            self.send_header("Access-Control-Allow-Origin", origin)
        else:
            return
        if self.headers.get("Access-Control-Request-Method"):
            self.send_header(
                "Access-Control-Allow-Methods", "GET, POST, PUT, OPTIONS, DELETE"
            )
        requested = self.headers.get("Access-Control-Request-Headers")
        if requested:
            self.send_header("Access-Control-Allow-Headers", requested)
        self.send_header("Access-Control-Max-Age", "1000")
