"""Ctrl-C stops `./dev run` even when Python drops the KeyboardInterrupt its handler raised: a handler that runs
while a finalizer does (a generator closed as a query returns its page, a __del__) raises there, and Python
prints that exception as "Exception ignored" and goes on."""
from __future__ import annotations

import gc
import signal
import sys
from types import SimpleNamespace

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


def test_an_interrupt_stops_the_digest_requests_being_served():
    """`./dev run --once` serves its points' digest requests for up to 60 s; Ctrl-C stops that loop at once."""
    drains: list[str] = []

    class Host:
        def drain_queue(self, function: str, max_wait: float) -> int:
            drains.append(function)
            if len(drains) == 1:
                try:
                    run._raise_interrupt(signal.SIGINT, None)
                except KeyboardInterrupt:
                    pass            # lost, as in a finalizer (the test above)
            return 0                # nothing came: without the check the loop would go on for its 60 s

    stack = run._Stack(SimpleNamespace())
    stack.host = Host()
    point = SimpleNamespace(job_id="job-1", blob_snapshots=("https://a/b?snapshot=1",))
    stack.svc = SimpleNamespace(settings=SimpleNamespace(digest_after_backup=True),
                                recovery_points=SimpleNamespace(list_for_vm=lambda vm: [point]))
    with pytest.raises(KeyboardInterrupt):
        stack._record_digests([SimpleNamespace(job_id="job-1", vm_name="vm-1")])
    assert drains == [run.DIGESTS]
