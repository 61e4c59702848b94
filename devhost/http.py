"""The local host's HTTP triggers: a small threaded HTTP server on 127.0.0.1 that maps each request to the
app's HTTP function by its route template (under ``extensions.http.routePrefix``, default ``api``) and
calls it with a real ``azure.functions.HttpRequest``, answering with the ``HttpResponse`` it returns.

As the Functions host does: route values are percent-decoded, a query parameter given twice reaches the
function once with its values joined by commas, a literal route segment wins over a parameter, an address
no function takes (or a method a function does not list) is a 404, and an exception is a bare 500.
What it leaves out: function keys and ``authLevel`` (every request is let in, as ``func start`` does),
App Service authentication, route constraints (``{id:int}``: the value is passed as text), HTTP output
bindings other than ``$return``, streaming, HTTPS and HTTP/2.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func

from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from devhost.host import FunctionSpec

log = logging.getLogger(__name__)

MAX_BODY = 4 * 2**20


@dataclass(frozen=True)
class Route:
    spec: FunctionSpec
    pattern: re.Pattern
    methods: frozenset[str]
    literals: int                   # literal segments: the more, the earlier it is tried

    @classmethod
    def of(cls, spec: FunctionSpec, prefix: str) -> "Route":
        template = "/".join(part for part in (prefix.strip("/"), spec.trigger.get("route") or spec.name) if part)
        regex, literals = [], 0
        for segment in template.split("/"):
            match = re.fullmatch(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}?]*)?(\??)\}", segment)
            if match is None:
                regex.append(re.escape(segment))
                literals += 1
            elif match.group(1):
                regex.append(f"(?P<{match.group(2)}>.*)")
            else:
                regex.append(f"(?P<{match.group(2)}>[^/]+){'?' if match.group(3) else ''}")
        methods = frozenset(m.upper() for m in spec.trigger.get("methods") or ("GET", "POST", "PUT", "DELETE",
                                                                                   "PATCH", "HEAD", "OPTIONS"))
        return cls(spec, re.compile("/".join(regex), re.IGNORECASE), methods, literals)


class LocalHttpServer:
    """Serves the given HTTP functions on 127.0.0.1 in a background thread; ``url`` is its base address."""

    def __init__(self, specs: Sequence[FunctionSpec], *, route_prefix: str = "api", port: int = 0):
        self.routes = sorted((Route.of(spec, route_prefix) for spec in specs),
                             key=lambda route: -route.literals)
        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        except OSError as exc:
            raise ConfigurationError(f"port {port} for the HTTP functions is in use ({exc.strerror}); stop what "
                                     f"holds it or choose another port (0 picks a free one)") from exc
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LocalHttpServer":
        self._thread = threading.Thread(target=self._server.serve_forever, name="host-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            found = route.pattern.fullmatch(path.strip("/"))
            if found is not None and method in route.methods:
                return route, {k: unquote(v) for k, v in found.groupdict().items() if v is not None}
        return None

    def call(self, method: str, target: str, headers: dict[str, str], body: bytes) -> func.HttpResponse | None:
        """The function's answer to one request, or None when no function takes it."""
        parts = urlsplit(target)
        matched = self.match(method, parts.path)
        if matched is None:
            return None
        route, values = matched
        params: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            params[name] = f"{params[name]},{value}" if name in params else value
        request = func.HttpRequest(method, f"{self.url}{target}", headers=headers, params=params,
                                   route_params=values, body=body)
        return route.spec.call(**{route.spec.trigger["name"]: request})


def _handler_for(server: LocalHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, {}, b"")
                return
            body = self.rfile.read(length) if length else b""
            try:
                response = server.call(self.command, self.path, dict(self.headers.items()), body)
            except Exception:   # noqa: BLE001 - as the host: the function's failure is a bare 500
                log.exception("HTTP function failed: %s %s", self.command, self.path.split("?", 1)[0])
                self._answer(500, {}, b"")
                return
            if response is None:
                self._answer(404, {}, b"")
                return
            headers = dict(response.headers)
            if response.mimetype:
                headers["Content-Type"] = (f"{response.mimetype}; charset={response.charset}"
                                           if response.charset else response.mimetype)
            self._answer(response.status_code, headers, response.get_body() if self.command != "HEAD" else b"")

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in ("content-length", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:     # noqa: A002 - the base class's name
            log.debug("http: " + format, *args)

    return Handler
