"""The tick on the real parts: Azurite tables, TableJobStore, ServiceBusTaskQueue on the local Service Bus.

Each slot ends with exactly one job record and one message on the queue, however the timer misbehaves.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from azure.servicebus import ServiceBusClient

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.jobs import JobStatus
from shared.domain.shards import shard_of
from shared.ports import JobQuery
from shared.services.protection import enable_protection
from shared.services.scheduling import run_scheduling_tick
from tests.fakes import InMemoryInventory
from tests.scheduling.conftest import HostDied, dies, local_vm

UTC = timezone.utc
VMS = [f"web{i:02d}" for i in range(12)]
SLOT = datetime(2025, 6, 2, 22, 30, tzinfo=UTC)


@pytest.fixture
def stack(make_settings, local_servicebus):
    from shared.adapters.servicebus import ServiceBusTaskQueue
    from shared.adapters.table_jobs import TableJobStore

    settings = make_settings(service_bus=local_servicebus.connection_string)
    clock = FixedClock(datetime(2025, 6, 2, 12, 0, tzinfo=UTC))
    client = ServiceBusClient.from_connection_string(local_servicebus.connection_string)
    svc = Services(settings, clock=clock, inventory=InMemoryInventory(*(local_vm(n) for n in VMS)),
                   task_queue=ServiceBusTaskQueue(client, settings.tasks_queue, clock=clock))
    svc.jobs = TableJobStore(svc.table_service, settings.table("jobs"))
    for name in VMS:
        enable_protection(svc, name, initial_backup=False)
    yield svc
    client.close()


def messages(svc) -> Counter:
    """Message ids on the queue, peeked (the queue's duplicate detection has had its say)."""
    with ServiceBusClient.from_connection_string(svc.settings.service_bus.connection_string) as client:
        with client.get_queue_receiver(svc.settings.tasks_queue) as receiver:
            return Counter(m.message_id for m in receiver.peek_messages(max_message_count=100))


def assert_one_job_and_one_message_per_vm(svc) -> None:
    jobs = [j for name in VMS for j in svc.jobs.query(JobQuery(vm_name=name, page_size=10)).jobs]
    assert sorted(j.vm_name for j in jobs) == VMS
    assert {j.slot for j in jobs} == {SLOT}
    assert {j.status for j in jobs} == {JobStatus.IN_PROGRESS}       # none cancelled by a later tick
    assert messages(svc) == Counter({f"{j.job_id}_1": 1 for j in jobs})


def test_timer_fired_twice_gives_one_job_and_one_message_per_slot(stack):
    """Two timer invocations for the same tick: each VM gets one job and one queue message."""
    stack.clock.current = SLOT + timedelta(seconds=3)
    run_scheduling_tick(stack)
    run_scheduling_tick(stack)
    assert_one_job_and_one_message_per_vm(stack)


def test_crash_between_creating_jobs_and_sending_tasks(stack):
    """The host dies after creating the jobs, before sending: the next tick sends each task once."""
    real = stack.task_queue

    class DiesBeforeSending:
        send = staticmethod(dies)

    stack.task_queue = DiesBeforeSending()
    stack.clock.current = SLOT + timedelta(seconds=3)
    with pytest.raises(HostDied):
        run_scheduling_tick(stack)
    stack.task_queue = real
    orphans = [j for name in VMS for j in stack.jobs.query(JobQuery(vm_name=name)).jobs]
    assert orphans and messages(stack) == Counter()
    stack.clock.advance(timedelta(minutes=5))
    result = run_scheduling_tick(stack)
    assert (result.jobs_created, result.tasks_sent) == (len(VMS) - len(orphans), len(VMS))
    run_scheduling_tick(stack)
    assert_one_job_and_one_message_per_vm(stack)


def test_crash_after_sending_before_watermarks(stack):
    """The host dies after sending, before saving a shard's progress: the re-sent tasks are dropped as duplicates."""
    progress, save = stack.progress, stack.progress.update
    dead = shard_of(VMS[0])
    progress.update = lambda shard, change, **kw: dies() if shard == dead else save(shard, change, **kw)
    stack.clock.current = SLOT + timedelta(seconds=3)
    with pytest.raises(HostDied):
        run_scheduling_tick(stack)
    del progress.update
    sent = messages(stack)
    assert len(sent) == sum(1 for name in VMS if shard_of(name) <= dead)
    stack.clock.advance(timedelta(minutes=5))
    assert run_scheduling_tick(stack).tasks_sent == sum(1 for name in VMS if shard_of(name) >= dead)
    assert_one_job_and_one_message_per_vm(stack)


def test_an_hour_of_downtime(stack):
    """The app was down over the 22:30 slot; the first tick after an hour runs it, once per VM."""
    stack.clock.current = SLOT - timedelta(minutes=20)
    run_scheduling_tick(stack)
    stack.clock.current = SLOT + timedelta(minutes=45)
    result = run_scheduling_tick(stack, past_due=True)
    assert (result.jobs_created, result.slots_skipped) == (len(VMS), 0)
    run_scheduling_tick(stack)
    assert_one_job_and_one_message_per_vm(stack)
