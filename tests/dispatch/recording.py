"""An azure-core transport that records requests and answers with one canned response, and a
static token credential: for Azure APIs that have no local emulator (ARM, user delegation keys)."""
from __future__ import annotations

import http.client
import io
import json
import time

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import RestHttpClientTransportResponse


class _Socket:
    def __init__(self, data: bytes):
        self._data = data

    def makefile(self, *_args, **_kwargs):
        return io.BytesIO(self._data)


class _Response(RestHttpClientTransportResponse):
    def iter_bytes(self, **kwargs):
        yield self.read()

    iter_raw = iter_bytes


def canned_response(request, status: int, data: bytes, headers: dict):
    """An azure-core response to ``request``, as if the service had answered it over HTTP."""
    head = "".join(f"{k}: {v}\r\n" for k, v in {
        "Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items())
    raw = http.client.HTTPResponse(_Socket(f"HTTP/1.1 {status} X\r\n{head}\r\n".encode() + data),
                                   method=request.method)
    raw.begin()
    return _Response(request=request, internal_response=raw)


class RecordingTransport(HttpTransport):
    """Answers every request with one canned response and keeps the requests."""

    def __init__(self, status: int = 201, body: dict | bytes | None = None, headers: dict | None = None):
        self.requests = []
        self.status, self.headers = status, headers or {}
        if isinstance(body, bytes):
            self.body = body
        else:
            self.body = json.dumps(body if body is not None else {
                "name": "VMSnapshotLinux", "location": "westeurope",
                "properties": {"provisioningState": "Creating"}}).encode()

    def send(self, request, **kwargs):
        self.requests.append(request)
        return canned_response(request, self.status, self.body, self.headers)

    def open(self):
        pass

    def close(self):
        pass

    def __exit__(self, *args):
        pass


class StaticCredential:
    def get_token(self, *scopes, **kwargs):
        return AccessToken("token", int(time.time()) + 3600)
