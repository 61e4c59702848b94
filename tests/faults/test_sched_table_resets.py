"""A tick over 1,000 VMs while Table Storage connections are reset on the wire: no VM is lost or doubled."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusReceiveMode

from shared.adapters.table_protection import TableProtectedItemStore
from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.protection import ProtectedItem
from shared.ports import JobQuery
from shared.services.scheduling import run_scheduling_tick
from shared.settings import Settings

SLOT = datetime(2025, 6, 2, 22, 30, tzinfo=timezone.utc)     # DefaultPolicy: daily at 22:30 UTC
VMS = 1000

pytestmark = pytest.mark.long


def seed(settings: Settings, svc: Services) -> None:
    items = TableProtectedItemStore(svc.table_service, settings.table("items"))
    since = SLOT - timedelta(days=1)
    items.add_many([ProtectedItem(vm_name=f"vm{i:04d}", policy_name="DefaultPolicy", protected_since=since,
                                  policy_assigned_at=since, disk_luns=(-1,), initial_backup_pending=False)
                    for i in range(VMS)])


def drain(settings: Settings) -> Counter:
    """The job ids of every message on the tasks queue (the queue drops a re-sent message id)."""
    seen: Counter = Counter()
    with ServiceBusClient.from_connection_string(settings.service_bus.connection_string) as client, \
            client.get_queue_receiver(settings.tasks_queue, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE,
                                      max_wait_time=2) as receiver:
        while batch := receiver.receive_messages(max_message_count=500, max_wait_time=2):
            seen.update(m.application_properties[b"jobId"].decode() for m in batch)
    return seen


def slot_jobs(svc: Services) -> Counter:
    found: Counter = Counter()
    token = None
    while True:
        page = svc.jobs.query(JobQuery(since=SLOT, until=SLOT + timedelta(seconds=1), page_size=1000,
                                       continuation=token))
        found.update(job.vm_name for job in page.jobs)
        token = page.continuation
        if not token:
            return found


@pytest.mark.parametrize("every", [3, 7])
def test_every_vm_is_planned_exactly_once_by_the_tick_or_the_next_under_table_resets(
        storage_connection_string, local_servicebus, unique_name, table_proxy, through_table_proxy, every):
    """Every n-th Table request reset: each of 1,000 VMs still gets one job and one task for its slot."""
    name = unique_name("rs")
    settings = Settings.from_env({"BackupStorage": storage_connection_string,
                                  "ServiceBusConnection": local_servicebus.connection_string,
                                  "TABLE_PREFIX": name, "SNAPSHOT_TASKS_QUEUE": f"tasks-{name}"})
    seed(settings, Services(settings))
    proxied = through_table_proxy(settings)
    clock = FixedClock(SLOT + timedelta(seconds=5))
    svc = Services(proxied, clock=clock)
    table_proxy.reset_every(every)
    first = run_scheduling_tick(svc, fan_out=False, sleep=lambda seconds: None)
    clock.advance(timedelta(minutes=5))
    second = run_scheduling_tick(svc, fan_out=False, sleep=lambda seconds: None)
    table_proxy.reset_every(0)

    assert table_proxy.resets > 0                       # the faults really happened
    assert first.retries > 0
    assert first.planned + first.failed == first.due == VMS, first
    assert first.jobs_created + second.jobs_created == VMS, (first, second)
    jobs = slot_jobs(Services(settings))
    assert len(jobs) == VMS and set(jobs.values()) == {1}
    messages = drain(settings)
    assert len(messages) == VMS and set(messages.values()) == {1}
