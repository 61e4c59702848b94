"""Request counting for the benchmarks: the figures they print are taken at the HTTP level."""
from __future__ import annotations

import threading

from azure.core.pipeline.transport import RequestsTransport


class CountingTransport(RequestsTransport):
    """Counts HTTP requests to Table Storage (a transaction is one request)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.requests = 0
        self._lock = threading.Lock()

    def send(self, request, **kwargs):
        with self._lock:
            self.requests += 1
        return super().send(request, **kwargs)
