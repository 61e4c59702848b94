"""Ctrl-C stops `./dev run` even when Python drops the KeyboardInterrupt its handler raised: a handler that runs
while a finalizer does (a generator closed as a query returns its page, a __del__) raises there, and Python
prints that exception as "Exception ignored" and goes on."""
from __future__ import annotations

import gc
import signal
import sys

import pytest

from devhost import run


@pytest.fixture(autouse=True)
def no_interrupt_left():
    run._interrupted.clear()
    yield
    run._interrupted.clear()


def test_an_interrupt_python_dropped_in_a_finalizer_still_stops_the_next_pause(monkeypatch):
    """The handler's exception is lost inside a generator's finally; the stack's next pause raises it again."""
    dropped: list[type[BaseException]] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_type))

    def shard_rows():
        try:
            yield "row"
        finally:
            run._raise_interrupt(signal.SIGINT, None)     # where Ctrl-C's handler happened to run

    rows = shard_rows()
    next(rows)
    del rows            # closed here, as a query's unread shard streams are once its page is full
    gc.collect()
    assert dropped == [KeyboardInterrupt]           # Python reported it as "Exception ignored" and went on
    with pytest.raises(KeyboardInterrupt):
        run._pause(60)


def test_a_pause_with_no_interrupt_waits_and_returns():
    run._pause(0.01)
    assert not run._interrupted.is_set()
