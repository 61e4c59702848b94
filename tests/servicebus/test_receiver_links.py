"""Receivers that go away: the local server stops delivering to a connection that ended and gives
back what it held locked, and a routine disconnect is not logged as an error. Local only."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage

from devhost.servicebus import LocalServiceBus, QueueOptions

pytestmark = pytest.mark.timeout(60)

LOCK = timedelta(seconds=30)


@pytest.fixture
def server():
    with LocalServiceBus(default_queue_options=QueueOptions(lock_duration=LOCK)) as bus:
        yield bus


def test_a_closed_connection_gives_its_locked_messages_back_at_once(server):
    """A host that shuts down holding tasks: another host gets them now, not after the 30 s lock."""
    ids = [f"m{i}" for i in range(5)]
    with ServiceBusClient.from_connection_string(server.connection_string) as client, \
            client.get_queue_sender("q") as sender:
        sender.send_messages([ServiceBusMessage(i, message_id=i) for i in ids])
    leaving = ServiceBusClient.from_connection_string(server.connection_string)
    receiver = leaving.get_queue_receiver("q")
    taken = receiver.receive_messages(max_message_count=5, max_wait_time=5)
    assert sorted(m.message_id for m in taken) == ids
    leaving.close()                                   # nothing settled
    started = time.monotonic()
    got = {}
    with ServiceBusClient.from_connection_string(server.connection_string) as client, \
            client.get_queue_receiver("q", max_wait_time=1) as live:
        while len(got) < len(ids) and time.monotonic() - started < LOCK.total_seconds() / 2:
            for message in live.receive_messages(max_message_count=5, max_wait_time=1):
                got[message.message_id] = message.delivery_count
                live.complete_message(message)
    assert got == {i: 1 for i in ids}
    assert server.stats()["locks_released"] == len(ids)


def test_a_client_hanging_up_is_not_logged_as_an_error(server, caplog):
    """A client that disconnects mid-write leaves no ERROR line; other proton errors still show."""
    caplog.set_level(logging.DEBUG)
    proton = logging.getLogger("proton")
    proton.error("Couldn't send: %r", BrokenPipeError(32, "Broken pipe"))
    proton.error("Couldn't recv: %r", ConnectionResetError(104, "Connection reset by peer"))
    proton.error("amqp:connection:framing-error: something else")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["amqp:connection:framing-error: something else"]
    assert any("client disconnected" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
