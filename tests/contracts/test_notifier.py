"""The AlertNotifier contract, on the fake the alerting unit tests use and on the webhook adapter posting to
the local receiver (devhost/webhook.py): a document arrives as sent, once; a receiver that is busy, down or
unreachable is a TransientError, one that refuses (any other 4xx) a PermanentError; no failure shows the
secret a webhook URL may carry (a Logic App's ``sig``)."""
from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import pytest

from devhost.webhook import WebhookReceiver
from shared.adapters.webhook import WebhookNotifier
from shared.errors import PermanentError, TransientError
from shared.ports import AlertNotifier
from tests.contracts.conftest import REAL
from tests.monitoring.fakes import RecordingNotifier

PORTS = (AlertNotifier,)

SECRET = "sig=S3CRET-SIGNATURE"
DOCUMENT = {"schemaId": "azureMonitorCommonAlertSchema",
            "data": {"essentials": {"monitorCondition": "Fired", "originAlertId": "vm-1|BackupFailed|1",
                                    "description": "Backup of vm-1 failed: disque plein (ENOSPC) ✗",
                                    "configurationItems": ["vm-1"]}}}


class Rig:
    """A notifier and its receiver: what arrived, what the receiver answers, whether it is reachable."""

    def __init__(self, notifier: AlertNotifier, received: Callable[[], list[dict[str, Any]]],
                 answer: Callable[[int | None], None], unreachable: Callable[[], AlertNotifier]):
        self.notifier, self.received, self.answer, self.unreachable = notifier, received, answer, unreachable


def _fake() -> Rig:
    fake = RecordingNotifier(url=f"http://127.0.0.1:9/alerts?{SECRET}")

    def answer(status: int | None) -> None:
        fake.answer = status

    def unreachable() -> AlertNotifier:
        fake.down = True
        return fake

    return Rig(fake, lambda: fake.sent, answer, unreachable)


@pytest.fixture(params=["fake", REAL("webhook")])
def notifier_rig(request) -> Iterator[Rig]:
    if request.param == "fake":
        yield _fake()
        return
    with WebhookReceiver(printer=None) as receiver:
        def answer(status: int | None) -> None:
            receiver.answer = status

        def unreachable() -> AlertNotifier:
            with socket.socket() as closed:        # a port nobody listens on any more
                closed.bind(("127.0.0.1", 0))
                port = closed.getsockname()[1]
            return WebhookNotifier(f"http://127.0.0.1:{port}/alerts?{SECRET}", timeout=5)

        yield Rig(WebhookNotifier(f"{receiver.url}?{SECRET}", timeout=10), lambda: receiver.received, answer,
                  unreachable)


def test_a_notification_arrives_as_sent_once(notifier_rig):
    notifier_rig.notifier.send(DOCUMENT)
    assert notifier_rig.received() == [DOCUMENT]


@pytest.mark.parametrize("status", [500, 503, 408, 429])
def test_a_busy_or_failing_receiver_is_transient_and_keeps_nothing(notifier_rig, status):
    """A 5xx, 408 or 429: the receiver did not take it; the alert is tried again later."""
    notifier_rig.answer(status)
    with pytest.raises(TransientError) as failed:
        notifier_rig.notifier.send(DOCUMENT)
    assert str(status) in str(failed.value) and notifier_rig.received() == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_a_refusal_is_permanent(notifier_rig, status):
    """Any other 4xx: the receiver refused it (a wrong URL, an expired signature); no retry cures that by itself."""
    notifier_rig.answer(status)
    with pytest.raises(PermanentError) as refused:
        notifier_rig.notifier.send(DOCUMENT)
    assert not isinstance(refused.value, TransientError) and str(status) in str(refused.value)


def test_an_unreachable_receiver_is_transient(notifier_rig):
    with pytest.raises(TransientError):
        notifier_rig.unreachable().send(DOCUMENT)


@pytest.mark.parametrize("status", [None, 503, 403])
def test_no_failure_shows_the_secret_of_the_webhook_url(notifier_rig, status):
    """The URL's query (a Logic App's ``sig``) is a credential: no message, cause or context carries it."""
    notifier = notifier_rig.unreachable() if status is None else notifier_rig.notifier
    notifier_rig.answer(status)
    with pytest.raises((TransientError, PermanentError)) as failed:
        notifier.send(DOCUMENT)
    chain = [failed.value, failed.value.__cause__, failed.value.__context__]
    assert not any("S3CRET" in repr(e) or "S3CRET" in str(e) for e in chain if e is not None)


def test_concurrent_notifications_each_arrive_once(notifier_rig):
    """Eight evaluators sending at once: every document arrives, none twice."""
    barrier = threading.Barrier(8)

    def send(n: int) -> None:
        barrier.wait(timeout=60)
        notifier_rig.notifier.send({**DOCUMENT, "n": n})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(8)))
    assert sorted(d["n"] for d in notifier_rig.received()) == list(range(8))
