"""The whole loop, end to end: timer -> queue -> worker -> bundled extension -> status blob -> job record."""
import logging
import re
import time

import pytest

from devhost.demo import create_demo_vm, disk_snapshots
from shared.domain.jobs import JobStatus
from shared.ports import JobQuery
from tests.e2e.conftest import run_cycle

pytestmark = pytest.mark.long

SIG = re.compile(r"sig=(?!REDACTED)[^&\s\"']+", re.IGNORECASE)


def test_a_protected_vm_is_backed_up_by_one_cycle(loop, caplog):
    """Protect a VM, fire the timer once: its job completes with one real snapshot per disk."""
    from shared.services.protection import enable_protection

    svc, host = loop
    caplog.set_level(logging.DEBUG)
    vm = create_demo_vm(svc, "e2e-vm")
    enable_protection(svc, vm.name, "DefaultPolicy")

    jobs = run_cycle(svc, host)

    assert len(jobs) == 1
    job = jobs[0]
    assert job.status is JobStatus.COMPLETED, job.errors
    assert job.vm_name == "e2e-vm" and job.operation == "Backup"
    assert job.task_id == f"{job.job_id}_{job.attempt}"
    assert [d.status for d in job.disks] == ["Completed", "Completed"]
    snapshots = disk_snapshots(svc, vm)
    assert all(len(s) == 1 for s in snapshots.values()), snapshots
    for disk, result in zip(vm.disks, job.disks):
        assert result.snapshot_uri.startswith(disk.blob_url + "?snapshot=")
        assert result.snapshot_uri.split("snapshot=")[1] in snapshots[disk.name]

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not SIG.search(logged), "a SAS signature reached the logs"
    assert "blobSASUri" not in logged and "protectedSettings" not in logged.replace("protectedSettings=<redacted>", "")


def test_a_second_timer_fire_for_the_same_slot_adds_no_job(loop):
    """Firing the timer again after the cycle schedules nothing new: one slot, one job."""
    from shared.services.protection import enable_protection

    svc, host = loop
    vm = create_demo_vm(svc, "e2e-vm2")
    enable_protection(svc, vm.name, "DefaultPolicy")
    first = run_cycle(svc, host)
    host.fire_timer("schedule_backups")
    host.drain_queue("dispatch_snapshot", max_wait=0.3)
    assert [j.job_id for j in svc.jobs.query(JobQuery()).jobs] == [j.job_id for j in first]
    assert all(len(s) == 1 for s in disk_snapshots(svc, vm).values())


def test_a_failed_attempt_is_retried_with_a_new_task_scheduled_on_the_queue(loop, local_servicebus, monkeypatch):
    """A freeze that fails on the VM fails attempt 1 (121, may pass): the job waits for attempt 2, whose
    one task sits on the real queue, scheduled 5 minutes on; nothing is dispatched before it is due."""
    from datetime import datetime, timedelta, timezone

    from azure.servicebus import ServiceBusClient

    from shared.domain.job_transitions import RETRY_BACKOFF
    from shared.domain.jobs import JobPhase
    from shared.services.protection import enable_protection

    svc, host = loop
    vm = create_demo_vm(svc, "e2e-vm3")
    enable_protection(svc, vm.name, "DefaultPolicy")
    # The bundled handler freezes the mounts this names; one that does not exist cannot be frozen.
    monkeypatch.setenv("VMSNAP_FREEZE_MOUNTS", "/vmsnap-e2e-no-such-mount")

    host.fire_timer("schedule_backups")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        host.drain_queue("dispatch_snapshot", max_wait=0.2)
        host.scan_blobs("ingest_status")
        (job,) = svc.jobs.query(JobQuery(vm_name=vm.name)).jobs
        if job.attempt == 2:
            break
        time.sleep(0.2)
    failed_at = datetime.now(timezone.utc)
    assert (job.status, job.phase, job.attempt) == (JobStatus.IN_PROGRESS, JobPhase.QUEUED, 2), job
    assert job.errors[0].retryable and job.errors[0].extension_code in (121, 122, 123), job.errors
    assert job.attempts[-1].attempt == 1 and job.attempts[-1].retry_at is not None

    host.drain_queue("dispatch_snapshot", max_wait=0.5)      # the retry is not due yet: nothing runs
    with ServiceBusClient.from_connection_string(local_servicebus.connection_string) as client, \
            client.get_queue_receiver(svc.settings.tasks_queue) as receiver:
        waiting = [m for m in receiver.peek_messages(max_message_count=20) if str(m.message_id).startswith(job.job_id)]
    assert [str(m.message_id) for m in waiting] == [f"{job.job_id}_2"]
    due = waiting[0].scheduled_enqueue_time_utc
    assert abs(due - (failed_at + RETRY_BACKOFF[0])) < timedelta(seconds=30)
    assert svc.jobs.get(job.job_id).phase is JobPhase.QUEUED


def test_a_deleted_disk_is_dispatched_reported_and_retried_naming_it(loop):
    """A disk whose blob was deleted is not refused before dispatch: the VM snapshots the other disk and
    reports the missing one (76/761), and the job waits for attempt 2 (a failover can bring the blob back),
    naming the disk's LUN and blob and what to check."""
    from shared.domain import remediation
    from shared.domain.jobs import JobPhase
    from shared.services.protection import enable_protection
    from tests.polling import eventually

    svc, host = loop
    vm = create_demo_vm(svc, "e2e-vm4")
    enable_protection(svc, vm.name, "DefaultPolicy")
    missing = vm.disks[-1]
    svc.blob_service.get_container_client("vhds").delete_blob(missing.name, delete_snapshots="include")

    host.fire_timer("schedule_backups")

    def retrying():
        host.drain_queue("dispatch_snapshot", max_wait=0.2)
        host.scan_blobs("ingest_status")
        jobs = svc.jobs.query(JobQuery(vm_name=vm.name)).jobs
        return jobs if jobs and jobs[0].attempt == 2 else None

    assert eventually(retrying, timeout=60, interval=0.2), svc.jobs.query(JobQuery(vm_name=vm.name)).jobs
    (job,) = retrying()
    assert (job.status, job.phase) == (JobStatus.IN_PROGRESS, JobPhase.QUEUED)
    error = job.errors[0]
    assert (error.error_code, error.retryable, error.extension_code) == (remediation.DISK_BLOB_MISSING, True, 76)
    assert f"LUN {missing.lun} ({missing.blob_url}): BlobNotFound" in error.error_string
    assert not SIG.search(error.error_string) and any("failover" in r for r in error.recommendations)
    assert job.attempts[-1].error_code == remediation.DISK_BLOB_MISSING and job.attempts[-1].retry_at
    snapshots = disk_snapshots(svc, vm)
    assert [len(snapshots.get(d.name, [])) for d in vm.disks] == [1, 0]     # the other disk was snapshotted