"""The storage clients' HTTP transport: the environment's proxy settings still apply, and are looked up
once per endpoint, not on every request (a status blob's ingestion makes five)."""
from __future__ import annotations

import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.bootstrap import Services

PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy",
                   "ALL_PROXY", "all_proxy")


@pytest.fixture
def no_proxy_settings(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_a_run_of_requests_reads_the_proxy_settings_once(make_settings, no_proxy_settings, monkeypatch):
    """Fifty table reads look the proxy variables up once for the endpoint, not fifty times."""
    lookups = []
    original = urllib.request.getproxies_environment

    def counted():
        lookups.append(1)
        return original()

    monkeypatch.setattr(urllib.request, "getproxies_environment", counted)
    svc = Services(make_settings())
    for _ in range(50):
        svc.jobs.get("01954f6e-8d00-87cd-91c5-3d28beef679b")
    # requests looks twice per request (getproxies, proxy_bypass): at most the first request's pair
    assert len(lookups) <= 2, f"{len(lookups)} lookups of the proxy variables for 50 requests"


class _RecordingProxy(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:        # noqa: N802 (http.server's name)
        self.seen.append(self.path)     # a proxied request names the whole URL
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recording_proxy():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingProxy)
    _RecordingProxy.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, _RecordingProxy.seen
    server.shutdown()
    server.server_close()


def test_the_environments_proxy_still_carries_storage_requests(make_settings, no_proxy_settings, monkeypatch,
                                                                recording_proxy):
    """HTTP_PROXY set when the process starts sends storage requests through the proxy, NO_PROXY exempts."""
    server, seen = recording_proxy
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_port}")
    settings = make_settings()
    assert not Services(settings).blob_service.get_container_client("absent").exists()     # the proxy's 404
    assert seen and all(path.startswith("http://127.0.0.1:") for path in seen), seen

    seen.clear()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert not Services(settings).blob_service.get_container_client("absent").exists()     # Azurite's 404
    assert seen == []
