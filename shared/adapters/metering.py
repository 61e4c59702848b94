"""Requests counted on the wire: every Table and Blob request the SDK clients send (each retry too)
is counted into the meter of the work that sent it, so the figures a tick reports are HTTP requests,
not calls of our own code. The meter follows the work through a context variable; thread pools
that do part of the work run it in a copy of the submitter's context (``in_context``)."""
from __future__ import annotations

import contextvars
import threading
from collections import Counter
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")


class Meter:
    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, service: str) -> None:
        with self._lock:
            self._counts[service] += 1

    def requests(self, service: str) -> int:
        with self._lock:
            return self._counts[service]


_current: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("vmsnap_meter", default=None)


@contextmanager
def metered() -> Iterator[Meter]:
    """Count the requests made inside the block (by this thread, and pools that pass the context on)."""
    meter = Meter()
    token = _current.set(meter)
    try:
        yield meter
    finally:
        _current.reset(token)


def request_hook(service: str) -> Callable[[Any], None]:
    """An azure-core ``raw_request_hook`` that counts each request into the current meter."""
    def hook(_request: Any) -> None:
        meter = _current.get()
        if meter is not None:
            meter.count(service)

    return hook


def in_context(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` bound to a copy of the caller's context, for a pool thread (call this in the caller)."""
    context = contextvars.copy_context()
    return lambda *args, **kwargs: context.run(fn, *args, **kwargs)
