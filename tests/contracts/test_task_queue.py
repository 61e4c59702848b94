"""The TaskQueue contract: the recording fake and ServiceBusTaskQueue on the local Service Bus accept
the same tasks, drop the same duplicates and report the same kind of operation counts."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

import pytest
from azure.servicebus import ServiceBusClient

from shared.adapters.servicebus import ServiceBusTaskQueue
from shared.clock import FixedClock
from shared.domain.task import SnapshotTask
from shared.ports import TaskQueue
from tests.fakes import RecordingTaskQueue

PORTS = (TaskQueue,)

NOW = datetime.now(timezone.utc).replace(microsecond=0)
Accepted = Callable[[], list[str]]


def task(n: int, attempt: int = 1, **changes) -> SnapshotTask:
    return SnapshotTask(job_id=f"job-{n}", attempt=attempt, vm_name=f"vm{n}", slot=NOW, **changes)


@pytest.fixture(params=["fake", pytest.param("servicebus", marks=pytest.mark.integration)])
def task_queue(request, unique_name) -> Iterator[tuple[TaskQueue, Accepted]]:
    """The queue, and the message ids it accepted for delivery (now or scheduled), in order."""
    if request.param == "fake":
        fake = RecordingTaskQueue()
        yield fake, lambda: [t.message_id for t in fake.sent]
        return
    connection = request.getfixturevalue("local_servicebus").connection_string
    name = unique_name("tasks")
    queue = ServiceBusTaskQueue(ServiceBusClient.from_connection_string(connection), name, clock=FixedClock(NOW))

    def accepted() -> list[str]:
        with ServiceBusClient.from_connection_string(connection) as client, \
                client.get_queue_receiver(name) as receiver:
            return [str(m.message_id) for m in receiver.peek_messages(max_message_count=100)]

    yield queue, accepted
    queue.close()


def test_nothing_to_send_costs_nothing(task_queue):
    """An empty send is no operation at all."""
    queue, accepted = task_queue
    assert queue.send([]) == 0


def test_every_task_is_accepted_once_in_few_operations(task_queue):
    """A tick's tasks go out together: each accepted, in far fewer operations than tasks."""
    queue, accepted = task_queue
    tasks = [task(n) for n in range(20)] + [task(99, not_before=NOW + timedelta(minutes=5))]
    operations = queue.send(tasks)
    assert 1 <= operations <= 3
    assert sorted(accepted()) == sorted(t.message_id for t in tasks)


def test_a_repeated_attempt_is_dropped(task_queue):
    """Sending the same attempt twice (a re-fired timer) delivers it once; the next attempt is new."""
    queue, accepted = task_queue
    queue.send([task(1)])
    queue.send([task(1), task(1, attempt=2)])
    assert sorted(accepted()) == ["job-1_1", "job-1_2"]


def test_concurrent_senders_lose_nothing(task_queue):
    """Eight workers sending at once: every task is accepted exactly once."""
    queue, accepted = task_queue
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: queue.send([task(n)]), range(16)))
    assert sorted(accepted()) == sorted(task(n).message_id for n in range(16))
