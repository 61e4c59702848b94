"""The local host's Service Bus listener keeps maxConcurrentCalls invocations in flight: a slot that
frees takes the next message at once, whatever the other slots are still doing. One long invocation
(a VM whose handler is slow) never holds back the rest of the worker. Real local Service Bus, real
threads: the invocations meet at barriers that only pass when they truly run side by side."""
from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage

from devhost.host import HostConfig, LocalFunctionsHost
from devhost.servicebus import LocalServiceBus, QueueOptions
from tests.devhost.conftest import queue_app
from tests.polling import eventually

pytestmark = [pytest.mark.timeout(120), pytest.mark.long]

# Long enough for a host that waits for the slowest to show it, short enough for a failing run.
WAIT = 20


@pytest.fixture
def env(local_servicebus, unique_name):
    return {"SB": local_servicebus.connection_string, "Q_IN": unique_name("in")}


def _send(env, *bodies: str) -> None:
    with ServiceBusClient.from_connection_string(env["SB"]) as client, client.get_queue_sender(env["Q_IN"]) as sender:
        sender.send_messages([ServiceBusMessage(body) for body in bodies])


class _Crowd:
    """Messages that each wait for ``size - 1`` others to be running at the same time."""

    def __init__(self, size: int, count: int) -> None:
        self.barrier = threading.Barrier(size, timeout=WAIT)
        self.count = count
        self.passed: list[str] = []
        self.broken: list[str] = []
        self.done = threading.Event()
        self._lock = threading.Lock()

    def join(self, body: str) -> None:
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            with self._lock:
                self.broken.append(body)
            raise
        with self._lock:
            self.passed.append(body)
            if len(self.passed) == self.count:
                self.done.set()


def test_the_free_slots_keep_running_together_while_one_invocation_is_long(env, unique_name):
    """With four slots and one message that runs long, the other three slots run three messages at
    once, round after round: the worker does not wait for its slowest invocation."""
    crowd = _Crowd(size=3, count=9)
    slow_ended = []

    def handle(body: str) -> None:
        if body == "slow":
            slow_ended.append(crowd.done.wait(WAIT * 2))
            return
        crowd.join(body)

    _send(env, "slow", *(f"quick{i}" for i in range(9)))
    config = HostConfig(max_concurrent_calls=4)
    with LocalFunctionsHost(queue_app(handle), env, config, host_id=unique_name("host")) as host:
        processed = host.drain_queue("work")
    assert crowd.broken == [], "quick messages waited alone: their slots were not refilled"
    assert sorted(crowd.passed) == [f"quick{i}" for i in range(9)]
    assert slow_ended == [True], "the long invocation ended before the quick ones were all done"
    assert processed == 10


def test_a_message_sent_while_an_invocation_runs_long_starts_at_once(env, unique_name):
    """The background listener (``./dev run``) takes a new message into a free slot while an earlier
    one is still running, and runs two such messages side by side."""
    slow_started, release = threading.Event(), threading.Event()
    crowd = _Crowd(size=2, count=2)

    def handle(body: str) -> None:
        if body == "slow":
            slow_started.set()
            release.wait(WAIT * 2)
            return
        crowd.join(body)

    config = HostConfig(max_concurrent_calls=3)
    with LocalFunctionsHost(queue_app(handle), env, config, host_id=unique_name("host")) as host:
        host.start()
        _send(env, "slow")
        assert slow_started.wait(WAIT)
        _send(env, "late0", "late1")
        try:
            finished = crowd.done.wait(WAIT)
        finally:
            release.set()
    assert finished, f"the late messages waited for the running one (ran together: {crowd.passed})"
    assert crowd.broken == []


@pytest.mark.integration
def test_messages_held_past_many_locks_while_others_flow_are_delivered_once(unique_name):
    """Eight invocations outlast their lock (five seconds, Service Bus's shortest) while forty more
    messages are received and settled beside them: the host renews every lock, so none is delivered
    twice and none is dead-lettered."""
    slow = [f"slow{i}" for i in range(8)]
    quick = [f"quick{i}" for i in range(40)]
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    options = QueueOptions(lock_duration=timedelta(seconds=5), max_delivery_count=2)
    with LocalServiceBus(default_queue_options=options) as bus:
        env = {"SB": bus.connection_string, "Q_IN": unique_name("in")}

        def handle(body: str) -> None:
            with lock:
                seen[body] += 1
            if body in slow:
                # Held until each lock was renewed three times (past its length), and the quick ones are done.
                eventually(lambda: bus.stats()["lock_renewals"] >= 3 * len(slow) and seen.keys() >= set(quick),
                           timeout=WAIT * 4)

        _send(env, *slow)
        config = HostConfig(max_concurrent_calls=len(slow) + 2)
        with LocalFunctionsHost(queue_app(handle), env, config, host_id=unique_name("host")) as host:
            host.start()
            assert eventually(lambda: seen.keys() >= set(slow), timeout=WAIT)
            _send(env, *quick)
            assert eventually(lambda: bus.queue_depth(env["Q_IN"]) == 0, timeout=WAIT * 6)
        stats = bus.stats()
        assert seen == Counter({body: 1 for body in slow + quick}), "a lock was lost: a message ran again"
        assert bus.dead_letter_depth(env["Q_IN"]) == 0
        assert stats["lock_expirations"] == 0 and stats["lock_renewals"] >= 3 * len(slow)


@pytest.mark.integration
def test_stop_gives_up_an_invocation_that_outlives_its_grace(env, unique_name):
    """stop(grace) ends the listener once its grace is spent, although an invocation still runs: the
    listener no longer touches the receiver the host then closes, and the message, never settled, is
    delivered again to the next host."""
    started, release = threading.Event(), threading.Event()
    runs: list[str] = []

    def handle(body: str) -> None:
        runs.append(body)
        started.set()
        release.wait(WAIT * 3)

    _send(env, "long")
    host = LocalFunctionsHost(queue_app(handle), env, HostConfig(max_concurrent_calls=2), host_id=unique_name("host"))
    try:
        host.start()
        assert started.wait(WAIT)
        host.stop(grace=1.0)
        listeners = [t for t in threading.enumerate() if t.name == "host-work"]
        assert eventually(lambda: not any(t.is_alive() for t in listeners), timeout=WAIT), \
            "the listener still serves after the grace"
    finally:
        release.set()
    with LocalFunctionsHost(queue_app(runs.append), env, host_id=unique_name("host")) as again:
        assert eventually(lambda: again.drain_queue("work", max_wait=1.0) == 1, timeout=WAIT * 2)
    assert runs == ["long", "long"]
