"""Fixtures for restore-point tests: the local Compute endpoint on the session Azurite, reached by the
unmodified azure-mgmt-compute client, and managed-disk VMs whose disks are page blobs behind it."""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from devhost.compute import LocalCompute
from shared.adapters.restore_points import ComputeRestorePoints
from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.inventory import OS_DISK_LUN
from shared.domain.jobs import Job, job_id_for
from shared.domain.task import SnapshotTask, Trigger
from shared.services.dispatch import handle_snapshot_task
from shared.services.protection import enable_protection
from shared.services.restore_point_backup import track_restore_points
from tests.fakes import RecordingRestoreQueue, RecordingTaskQueue

DISK_BYTES = 64 * 1024
GUEST_DISK_BYTES = 4 * 1024 * 1024     # room for an MBR and a small ext4


@pytest.fixture
def etc_azure(tmp_path: Path, monkeypatch) -> Path:
    """The local VMs' /etc/azure (pre/post script configuration); empty: no scripts."""
    etc = tmp_path / "etc-azure"
    etc.mkdir()
    monkeypatch.setenv("VMSNAP_EXTENSION_ETC", str(etc))
    monkeypatch.delenv("VMSNAP_FREEZE_MOUNTS", raising=False)
    return etc


@pytest.fixture
def compute(storage_connection_string, tmp_path: Path, etc_azure):
    with LocalCompute(storage_connection_string, tmp_path / "vms", extension_timeout=60) as endpoint:
        yield endpoint
    from devhost.processes import stop_processes_under

    stop_processes_under(tmp_path / "vms")


@pytest.fixture
def svc(make_settings, compute, tmp_path: Path):
    clock = FixedClock(datetime.now(timezone.utc).replace(microsecond=0))
    restore_points = ComputeRestorePoints(compute.credential(), retry_backoff_factor=0.2,
                                          **compute.client_options())
    return Services(make_settings(LOCAL_VM_ROOT=str(tmp_path / "vms")), clock=clock,
                    restore_points=restore_points, task_queue=RecordingTaskQueue(),
                    restore_queue=RecordingRestoreQueue())


@pytest.fixture
def md_vm(svc, compute, storage_connection_string, unique_name):
    """A protected local VM with two managed disks (an OS disk and LUN 0) behind the endpoint."""

    def factory(name: str | None = None, *, guest: bool = False):
        name = name or unique_name("md")
        container = BlobServiceClient.from_connection_string(storage_connection_string) \
            .get_container_client(unique_name("mdisks"))
        container.create_container()
        disks = []
        for lun in (OS_DISK_LUN, 0):
            disk = f"{name}-{'os' if lun == OS_DISK_LUN else f'data{lun}'}"
            blob = container.get_blob_client(f"{disk}.vhd")
            size = GUEST_DISK_BYTES if guest else DISK_BYTES
            blob.create_page_blob(size)
            if guest and lun == OS_DISK_LUN:      # an ext4 OS disk (devhost/guest.py)
                from devhost.guest import os_disk_image

                blob.upload_page(os_disk_image(size, disk), offset=0, length=size)
            else:
                blob.upload_page(disk.encode().ljust(512, b"\0"), offset=0, length=512)
            disks.append((lun, disk, blob.url, size))
        local = compute.add_vm(name, disks)
        svc.inventory.put_vm(local.as_inventory_vm())
        enable_protection(svc, name, "DefaultPolicy", initial_backup=False)
        return local

    return factory


def task_for(svc, vm_name: str) -> SnapshotTask:
    now = svc.clock.now()
    return SnapshotTask(job_id=job_id_for(vm_name, now, Trigger.ON_DEMAND.value), attempt=1, vm_name=vm_name,
                        slot=now, trigger=Trigger.ON_DEMAND, policy_name="DefaultPolicy")


def deliver(svc, task: SnapshotTask, delivery_count: int = 1):
    return handle_snapshot_task(svc, task.to_json().encode(), message_id=task.message_id,
                                delivery_count=delivery_count)


def deliver_concurrently(svc, task: SnapshotTask, copies: int) -> list:
    """The same message handled by ``copies`` workers at once (a redelivery racing the first)."""
    outcomes: list = []
    barrier = threading.Barrier(copies)

    def worker(n: int) -> None:
        barrier.wait()
        outcomes.append(deliver(svc, task, delivery_count=n + 1))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def track_until_done(svc, job_id: str, timeout: float = 60) -> Job:
    """Run the restore-point timer until the job is final (the endpoint finishes in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        track_restore_points(svc)
        job = svc.jobs.get(job_id)
        if job.is_terminal or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def write_scripts(etc: Path, *, pre: str = "exit 0", post: str = "exit 0") -> None:
    """Pre/post scripts and the plugin config, owned by root with the modes the extension insists on."""
    paths = {}
    for name, body in (("pre", pre), ("post", post)):
        path = etc / f"{name}.sh"
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o700)
        paths[name] = str(path)
    config = etc / "VMSnapshotScriptPluginConfig.json"
    config.write_text(json.dumps({
        "pluginName": "ScriptRunner", "preScriptLocation": paths["pre"], "postScriptLocation": paths["post"],
        "preScriptParams": [], "postScriptParams": [], "timeoutInSeconds": 10,
        "continueBackupOnFailure": True, "fsFreezeEnabled": True}))
    config.chmod(0o600)
