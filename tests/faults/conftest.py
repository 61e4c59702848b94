"""Fixtures for the fault scenarios: the local stack (Azurite tables and blobs, the local Service Bus,
the real Function App under the local host, local VMs whose disks are page blobs) and the session's
Azurite behind a switchable TCP proxy."""
from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest

from devhost.processes import stop_processes_under
from shared.bootstrap import Services, reset_services
from shared.clock import FixedClock
from shared.domain.inventory import OS_DISK_LUN, Disk, Vm, VmKind
from shared.domain.jobs import Job
from shared.settings import Connection, Settings
from tests.faults.proxy import TcpProxy

DISK_BYTES = 4096


@pytest.fixture
def stack_env(storage_connection_string, local_servicebus, unique_name, tmp_path) -> dict[str, str]:
    """App settings of one isolated stack (own tables, status container, queue and VM root)."""
    name = unique_name("f")
    return {
        "AzureWebJobsStorage": storage_connection_string,
        "BackupStorage": storage_connection_string,
        "ServiceBusConnection": local_servicebus.connection_string,
        "TABLE_PREFIX": name,
        "STATUS_CONTAINER": f"status-{name}",
        "SNAPSHOT_TASKS_QUEUE": f"tasks-{name}",
        "LOCAL_VM_ROOT": str(tmp_path / "vms"),
    }


@pytest.fixture
def stack(stack_env):
    """Services on the real parts at a fixed (current) time, installed as the app's composition root,
    and the app under the local host. Yields (services, host)."""
    import function_app
    from devhost.host import LocalFunctionsHost

    settings = Settings.from_env(stack_env)
    svc = Services(settings, clock=FixedClock(datetime.now(timezone.utc).replace(microsecond=0)))
    reset_services(svc)
    host = LocalFunctionsHost(function_app.app, {**stack_env, **settings.binding_values()},
                              host_id=f"host-{settings.table_prefix}")
    yield svc, host
    host.stop()
    stop_processes_under(settings.local_vm_root)
    reset_services()


def make_vms(svc, prefix: str, count: int, *, data_disks: int = 1) -> list[Vm]:
    """``count`` local VMs with an OS disk and data disks as small page blobs, in the inventory."""
    container = svc.blob_service.get_container_client(f"disks-{svc.settings.table_prefix}")
    if not container.exists():
        container.create_container()
    vms = []
    for index in range(count):
        name = f"{prefix}{index:02d}"
        disks = []
        for lun in (OS_DISK_LUN, *range(data_disks)):
            blob = container.get_blob_client(f"{name}-{'os' if lun == OS_DISK_LUN else lun}.vhd")
            blob.create_page_blob(DISK_BYTES)
            blob.upload_page(f"{name} lun {lun}".encode().ljust(512, b"\0"), offset=0, length=512)
            disks.append(Disk(lun=lun, blob_url=blob.url, name=blob.blob_name, size_bytes=DISK_BYTES))
        vm = Vm(name=name, kind=VmKind.LOCAL, disks=tuple(disks))
        svc.inventory.put_vm(vm)
        vms.append(vm)
    return vms


def snapshots_per_disk(svc, vms: list[Vm]) -> dict[str, int]:
    """How many blob snapshots each disk of ``vms`` has in Azurite, by disk blob name."""
    container = svc.blob_service.get_container_client(f"disks-{svc.settings.table_prefix}")
    counts = {d.name: 0 for vm in vms for d in vm.disks}
    for item in container.list_blobs(include=["snapshots"]):
        if item.snapshot and item.name in counts:
            counts[item.name] += 1
    return counts


def peek_tasks(svc, sub_queue=None) -> list:
    """The messages on the stack's task queue (active and scheduled alike), or on one of its sub-queues."""
    from azure.servicebus import ServiceBusClient

    with ServiceBusClient.from_connection_string(svc.settings.service_bus.connection_string) as client, \
            client.get_queue_receiver(svc.settings.tasks_queue, sub_queue=sub_queue) as receiver:
        return list(receiver.peek_messages(max_message_count=50))


def commands_handed_to(svc, vm: Vm) -> int:
    """How many extension commands the local VM was given (its agent's ``config/<seq>.settings`` files)."""
    from shared.adapters.dispatch_local import next_sequence_number

    return next_sequence_number(svc.dispatcher.extension_root(vm))


def work_queue(svc, *, max_wait: float = 0.3, workers: int = 4) -> int:
    """The worker: take what the queue holds now and hand each message to the dispatch use case, a few
    at a time. Received and deleted at once: the local Service Bus's lock renewal cannot keep up with
    a slow machine, and an error here fails the test anyway. Returns messages handled."""
    from azure.servicebus import ServiceBusClient, ServiceBusReceiveMode

    from shared.services.dispatch import handle_snapshot_task

    handled = 0
    with ServiceBusClient.from_connection_string(svc.settings.service_bus.connection_string) as client, \
            client.get_queue_receiver(svc.settings.tasks_queue, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE,
                                      max_wait_time=max_wait) as receiver, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        while True:
            messages = receiver.receive_messages(max_message_count=workers, max_wait_time=max_wait)
            if not messages:
                return handled
            list(pool.map(lambda m: handle_snapshot_task(svc, b"".join(m.body), message_id=str(m.message_id),
                                                         delivery_count=m.delivery_count or 1), messages))
            handled += len(messages)


def run_worker_and_ingestion(svc, host, job_ids: list[str], *, timeout: float = 300.0) -> list[Job]:
    """Drive the worker and the real status-blob trigger until every job is final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        work_queue(svc)
        host.scan_blobs("ingest_status")
        jobs = [svc.jobs.get(job_id) for job_id in job_ids]
        if all(j is not None and j.is_terminal for j in jobs):
            return jobs
        time.sleep(0.3)
    unfinished = [(j.job_id, j.status.value, j.phase.value) for j in (svc.jobs.get(i) for i in job_ids)
                  if j is not None and not j.is_terminal]
    pytest.fail(f"{len(unfinished)} job(s) unfinished after {timeout} s: {unfinished[:5]}")


@pytest.fixture
def table_proxy(azurite):
    """A proxy in front of Azurite's table port (one per test, so faults never leak between tests)."""
    with TcpProxy(azurite.table_port) as proxy:
        yield proxy


@pytest.fixture
def through_table_proxy(azurite, table_proxy):
    """``settings`` with table traffic sent through ``table_proxy`` (blobs go straight to Azurite)."""

    def proxied(settings: Settings) -> Settings:
        conn = azurite.connection_string.replace(f":{azurite.table_port}/", f":{table_proxy.port}/")
        return dataclasses.replace(settings, storage=Connection(settings.storage.name, conn))

    return proxied
