"""ServiceBusTaskQueue: the product's adapter on the real client, against the local Service Bus."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from azure.servicebus import ServiceBusClient

from devhost.servicebus import LocalServiceBus
from shared.adapters.servicebus import ServiceBusTaskQueue
from shared.clock import FixedClock
from shared.domain.task import SnapshotTask
from shared.errors import TransientError

NOW = datetime.now(timezone.utc)


def _task(n: int, **changes) -> SnapshotTask:
    return SnapshotTask(job_id=f"job-{n}", attempt=1, vm_name=f"vm{n}", slot=NOW, **changes)


def _peek(connection_string: str, queue: str) -> list:
    with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_receiver(queue) as receiver:
        return receiver.peek_messages(max_message_count=50)


def test_sends_share_one_sender_and_schedule_what_lies_ahead(local_servicebus, unique_name):
    """Many sends go out on one open sender; a task for later is scheduled for its time."""
    queue = unique_name("tasks")
    tasks = ServiceBusTaskQueue(ServiceBusClient.from_connection_string(local_servicebus.connection_string),
                                queue, clock=FixedClock(NOW))
    try:
        for n in range(10):
            tasks.send([_task(n)])
        tasks.send([_task(10, not_before=NOW + timedelta(minutes=5))])
        first_sender = tasks._queue._sender
        tasks.send([_task(11)])
        assert tasks._queue._sender is first_sender
    finally:
        tasks.close()
    peeked = {str(m.message_id): m for m in _peek(local_servicebus.connection_string, queue)}
    assert sorted(peeked) == sorted(f"job-{n}_1" for n in range(12))
    assert peeked["job-10_1"].scheduled_enqueue_time_utc is not None


def test_a_lost_broker_is_a_transient_error_and_the_next_send_reconnects(unique_name):
    """Service Bus going away fails the send with TransientError; once it is back, sends work again."""
    server = LocalServiceBus().start()
    port, queue = server.port, unique_name("tasks")
    client = ServiceBusClient.from_connection_string(server.connection_string, retry_total=0)
    tasks = ServiceBusTaskQueue(client, queue, clock=FixedClock(NOW))
    try:
        tasks.send([_task(1)])
        server.stop()
        with pytest.raises(TransientError, match="could not send 1 task"):
            tasks.send([_task(2)])
        server = LocalServiceBus(port=port).start()
        tasks.send([_task(3)])
        assert [str(m.message_id) for m in _peek(server.connection_string, queue)] == ["job-3_1"]
    finally:
        tasks.close()
        server.stop()
