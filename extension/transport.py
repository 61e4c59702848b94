"""Raw HTTP to SAS URLs, as the real handler does it (no storage SDK on the VM side).

Unlike the real handler, which always opens HTTPS on port 443, the URL's own scheme and port are
honoured so the handler works against Azurite (plain HTTP on a random port).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Protocol
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    import ssl

DEFAULT_STORAGE_VERSION = "2021-08-06"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-cased names
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class HttpTransport(Protocol):
    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float = 10.0,
    ) -> HttpResponse:
        """Send one request; raise ``OSError`` when no response arrives."""


class HttpClientTransport:
    """``http.client`` with one connection per request, like ``HttpUtil`` in the real handler."""

    # http.client and ssl are imported where they are used: they are half of the package's import
    # time, and enable, which the agent waits for, never talks HTTP (only the daemon does). The
    # TLS context (which reads the system's CA store, ~20 ms) is made for the first HTTPS URL only.
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            import ssl

            self._ssl = ssl.create_default_context()
        return self._ssl

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float = 10.0,
    ) -> HttpResponse:
        import http.client

        parts = urlsplit(url)
        if not parts.hostname:
            raise OSError(f"no host in the URL {parts.scheme}://{parts.netloc}")
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout, context=self._tls()
            )
        elif parts.scheme == "http":
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        else:
            raise OSError(f"unsupported URL scheme {parts.scheme!r}")
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        all_headers = {"Content-Length": str(len(body)), **(headers or {})}
        try:
            conn.request(method, target, body=body, headers=all_headers)
            resp = conn.getresponse()
            data = resp.read()
            return HttpResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        except http.client.HTTPException as exc:
            raise OSError(f"HTTP protocol error: {exc}") from exc
        finally:
            conn.close()


def with_query(url: str, extra: str) -> str:
    """Append ``extra`` (``comp=snapshot``) to the URL's query string."""
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def without_query(url: str) -> str:
    """The blob URL without its SAS (what ``blobUri`` and ``snapshotUri`` are built from)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def storage_version(sas_url: str) -> str:
    """The SAS ``sv`` if present (the real handler relies on it), else a version Azurite knows."""
    values = parse_qs(urlsplit(sas_url).query).get("sv")
    return values[0] if values else DEFAULT_STORAGE_VERSION
