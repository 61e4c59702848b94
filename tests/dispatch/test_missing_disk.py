"""A missing disk through the real bundled handler (on Azurite): the command goes out, the handler reports
the disk (76 with health 761 and the other disk snapshotted, or 2 with no per-disk results when every
disk is missing), the retry policy runs, and the job names the disk and what to check."""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone

import pytest

from shared.adapters.dispatch_local import LocalDispatcher
from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain import remediation
from shared.domain.job_transitions import MAX_ATTEMPTS, RETRY_BACKOFF
from shared.domain.jobs import Job, JobPhase, JobStatus
from shared.domain.task import SnapshotTask
from shared.services.dispatch import Outcome, handle_snapshot_task
from shared.services.ingestion import IngestResult, ingest_status_blob
from tests.fakes import InMemoryInventory, InMemoryJobStore, RecordingTaskQueue
from tests.polling import eventually
from tests.recovery.fakes import InMemoryRecoveryPointStore

JOB_ID = "6a1f0c3e-2b7d-4e58-9c1a-3d9e2f0b8a44"


@pytest.fixture(autouse=True)
def unprivileged_extension(tmp_path, monkeypatch):
    """The handler's /etc/azure moved into the test's directory (no root needed, nothing frozen)."""
    monkeypatch.setenv("VMSNAP_EXTENSION_ETC", str(tmp_path / "etc-azure"))
    monkeypatch.delenv("VMSNAP_FREEZE_MOUNTS", raising=False)


@pytest.fixture
def world(make_settings, make_vm, tmp_path, blob_service):
    vm = make_vm(data_luns=(0,))
    now = datetime.now(timezone.utc)
    svc = Services(make_settings(), clock=FixedClock(now), jobs=InMemoryJobStore(), inventory=InMemoryInventory(vm),
                   dispatcher=LocalDispatcher(tmp_path / "vms"), task_queue=RecordingTaskQueue(),
                   recovery_points=InMemoryRecoveryPointStore())
    task = SnapshotTask(job_id=JOB_ID, attempt=1, vm_name=vm.name, slot=now)
    svc.jobs.create_if_absent(dataclasses.replace(Job.new_backup(vm_name=vm.name, slot=now, now=now), job_id=JOB_ID))
    return svc, vm, task


def _blob(blob_service, disk):
    container, name = disk.blob_url.split("/")[-2:]
    return blob_service.get_container_client(container).get_blob_client(name)


def _run_attempt(svc, task) -> tuple[dict, object]:
    """Deliver the attempt's task, wait for the handler's final status, and ingest it as the trigger does."""
    assert handle_snapshot_task(svc, task.to_json().encode(), message_id=task.message_id,
                                delivery_count=1).outcome is Outcome.DISPATCHED
    name = svc.jobs.get(JOB_ID).status_blob

    def final() -> bytes | None:
        data = svc.status_blobs.read(name)
        text = data.rstrip(b"\0 ")
        return data if text and json.loads(text)[0]["status"]["code"] != "4" else None

    assert eventually(final, timeout=60), f"no final status in {name}"
    data = final()
    return json.loads(data.rstrip(b"\0 "))[0]["status"], ingest_status_blob(svc, name, data, None)


def _next_task(svc):
    """The retry the ingestion queued (the queue holds it until it is due; the service clock stays, as
    the SAS it mints must be valid on Azurite's real clock)."""
    return svc.task_queue.sent[-1]


def test_one_missing_disk_is_reported_by_the_handler_retried_and_completes_once_back(world, blob_service):
    """The data disk's blob is gone: the handler snapshots the OS disk and reports 76/761; the job names
    LUN 0 and its blob, waits 5 minutes, and once the blob is back (a failover) attempt 2 completes."""
    svc, vm, task = world
    data_disk = vm.disks[1]
    _blob(blob_service, data_disk).delete_blob()

    status, outcome = _run_attempt(svc, task)
    assert (status["status"], status["code"], status["vmHealthInfo"]["vmHealthStatusCode"]) == ("error", "76", 761)
    job = outcome.job
    assert outcome.result is IngestResult.RETRYING and (job.phase, job.attempt) == (JobPhase.QUEUED, 2)
    error = job.errors[0]
    assert (error.error_code, error.retryable) == (remediation.DISK_BLOB_MISSING, True)
    assert f"LUN 0 ({data_disk.blob_url}): BlobNotFound" in error.error_string and "sig=" not in error.error_string
    assert [d.status for d in job.disks] == ["Completed", "Failed"]      # the OS disk was snapshotted
    assert svc.task_queue.sent[-1].not_before == svc.clock.now() + RETRY_BACKOFF[0]

    _blob(blob_service, data_disk).create_page_blob(1024)               # back after the failover
    status, outcome = _run_attempt(svc, _next_task(svc))
    assert (status["status"], status["code"]) == ("success", "1")
    assert (outcome.job.status, outcome.job.attempt, outcome.job.errors) == (JobStatus.COMPLETED, 2, [])
    assert [d.status for d in outcome.job.disks] == ["Completed", "Completed"]
    assert outcome.job.attempts[0].error_code == remediation.DISK_BLOB_MISSING
    assert len(svc.recovery_points.points) == 1


def test_every_disk_missing_on_every_attempt_fails_naming_each_disk(world, blob_service):
    """No disk's blob exists: the handler reports code 2 and no per-disk results; the service finds the
    blobs gone and names both disks, retries twice (5 then 15 minutes on), then fails for good."""
    svc, vm, task = world
    for disk in vm.disks:
        _blob(blob_service, disk).delete_blob()

    for attempt in range(1, MAX_ATTEMPTS + 1):
        status, outcome = _run_attempt(svc, task if attempt == 1 else _next_task(svc))
        assert (status["code"], status["snapshotInfo"]) == ("2", None)
        assert outcome.job.errors[0].error_code == remediation.DISK_BLOB_MISSING
    job = outcome.job
    assert (job.status, job.attempt) == (JobStatus.FAILED, MAX_ATTEMPTS)
    for disk in vm.disks:
        assert f"({disk.blob_url}): BlobNotFound" in job.errors[0].error_string
    assert "LUN -1 (OS disk)" in job.errors[0].error_string and "LUN 0 (" in job.errors[0].error_string
    assert [e.error_code for e in job.errors] == [remediation.DISK_BLOB_MISSING, "BackUpOperationFailed"]
    assert [(t.attempt, t.not_before) for t in svc.task_queue.sent] == [
        (2, svc.clock.now() + RETRY_BACKOFF[0]), (3, svc.clock.now() + RETRY_BACKOFF[1])]
    assert [r.error_code for r in job.attempts] == [remediation.DISK_BLOB_MISSING] * (MAX_ATTEMPTS - 1)
