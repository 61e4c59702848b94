"""The ShardQueue, RetentionQueue, DigestQueue and RestoreQueue contracts: the recording fakes and the Service Bus
senders on the local Service Bus accept each request once (a repeat, as a re-fired timer or a
redelivered continuation sends, is dropped), a later restore step as a message of its own, and an
empty send as no operation."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import pytest
from azure.servicebus import ServiceBusClient

from shared.adapters.servicebus import (ServiceBusDigestQueue, ServiceBusRestoreQueue, ServiceBusRetentionQueue,
                                       ServiceBusShardQueue)
from shared.domain.disk_digest import DigestRequest
from shared.domain.progress import PlanRequest
from shared.domain.restore import RestoreTask
from shared.domain.retention_progress import RetentionRequest
from shared.ports import DigestQueue, RestoreQueue, RetentionQueue, ShardQueue
from tests.fakes import RecordingDigestQueue, RecordingRestoreQueue, RecordingRetentionQueue, RecordingShardQueue

PORTS = (ShardQueue, RetentionQueue, DigestQueue, RestoreQueue)
NOW = datetime.now(timezone.utc).replace(microsecond=0)
Accepted = Callable[[], list[str]]

# Each batch queue: its fake, its adapter, and the n-th request it carries.
_BATCH: dict[str, tuple[Callable[[], Any], Callable[[ServiceBusClient, str], Any], Callable[[int], Any]]] = {
    "shards": (RecordingShardQueue, lambda client, name: ServiceBusShardQueue(client, name, "plan-shard"),
               lambda n: PlanRequest(shard=f"{n:02d}", tick=NOW)),
    "retention": (RecordingRetentionQueue, lambda client, name: ServiceBusRetentionQueue(client, name, "retention"),
                  lambda n: RetentionRequest(part=f"{n:02d}", run=NOW, seq=n)),
    "digests": (RecordingDigestQueue, lambda client, name: ServiceBusDigestQueue(client, name, "digest"),
                lambda n: DigestRequest(vm_name=f"vm-{n}", rp_name=f"{n:018d}")),
}


def _peeked(connection: str, name: str) -> Accepted:
    def accepted() -> list[str]:
        with ServiceBusClient.from_connection_string(connection) as client, \
                client.get_queue_receiver(name) as receiver:
            return [str(m.message_id) for m in receiver.peek_messages(max_message_count=100)]
    return accepted


@pytest.fixture(params=[pytest.param((kind, impl), id=f"{kind}-{impl}",
                                     marks=[pytest.mark.integration] if impl == "servicebus" else [])
                        for kind in sorted(_BATCH) for impl in ("fake", "servicebus")])
def batch_queue(request, unique_name) -> Iterator[tuple[Any, Callable[[int], Any], Accepted]]:
    """A batch request queue, the request maker, and the message ids it accepted, in order."""
    kind, impl = request.param
    fake, real, make = _BATCH[kind]
    if impl == "fake":
        queue = fake()
        yield queue, make, lambda: [m.message_id for m in queue.sent]
        return
    connection = request.getfixturevalue("local_servicebus").connection_string
    name = unique_name("req")
    queue = real(ServiceBusClient.from_connection_string(connection), name)
    yield queue, make, _peeked(connection, name)
    queue.close()


@pytest.fixture(params=["fake", pytest.param("servicebus", marks=pytest.mark.integration)])
def restore_queue(request, unique_name) -> Iterator[tuple[RestoreQueue, Accepted]]:
    if request.param == "fake":
        fake = RecordingRestoreQueue()
        yield fake, lambda: [task.message_id for task, _ in fake.sent]
        return
    connection = request.getfixturevalue("local_servicebus").connection_string
    name = unique_name("restore")
    queue = ServiceBusRestoreQueue(ServiceBusClient.from_connection_string(connection), name)
    yield queue, _peeked(connection, name)
    queue.close()


def test_an_empty_batch_costs_nothing(batch_queue):
    queue, make, accepted = batch_queue
    assert queue.send([]) == 0 and accepted() == []


def test_each_request_is_accepted_once_and_a_repeat_dropped(batch_queue):
    """A timer that fires twice, or a continuation sent again by a redelivered invocation, is delivered once."""
    queue, make, accepted = batch_queue
    assert queue.send([make(n) for n in range(5)]) >= 1
    queue.send([make(0), make(5)])
    assert sorted(accepted()) == sorted(make(n).message_id for n in range(6))


def test_concurrent_senders_lose_nothing(batch_queue):
    queue, make, accepted = batch_queue
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: queue.send([make(n), make(n + 4)]), range(4)))
    assert sorted(accepted()) == sorted(make(n).message_id for n in range(8))


def test_a_restore_step_is_accepted_once_now_or_later(restore_queue):
    """A restore's steps are messages of their own; one sent twice is delivered once, a later one too."""
    queue, accepted = restore_queue
    first = RestoreTask(job_id="job-1", vm_name="vm1")
    queue.send(first)
    queue.send(first)
    queue.send(first.next_step(), not_before=NOW + timedelta(minutes=5))
    assert sorted(accepted()) == sorted([first.message_id, first.next_step().message_id])
