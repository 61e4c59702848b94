"""Request counting for the benchmarks (and the tests that pin read costs): the figures they print are
taken at the HTTP level, below the product's own code."""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any
from urllib.parse import unquote, urlsplit

from azure.core.pipeline.transport import HttpRequest, HttpResponse, RequestsTransport


class CountingTransport(RequestsTransport):
    """Counts HTTP requests (a transaction is one request) and, per table, the entities the answers to
    reads carry (rows transferred: each entity of Table Storage's JSON has one ``odata.etag``)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.requests = 0
        self.rows: Counter[str] = Counter()
        self._lock = threading.Lock()

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        with self._lock:
            self.requests += 1
        response = super().send(request, **kwargs)
        if request.method == "GET" and response.status_code == 200 and not kwargs.get("stream"):
            rows = response.body().count(b'"odata.etag"')
            if rows:
                with self._lock:
                    self.rows[_table_of(request.url)] += rows
        return response


def _table_of(url: str) -> str:
    """``http://host/account/<table>(...)?...`` -> the table's name."""
    last = unquote(urlsplit(url).path).rstrip("/").rsplit("/", 1)[-1]
    return last.split("(", 1)[0]
