"""vmsnap job stop: a job is cancelled until its command reaches the VM, and refused after, with why."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from shared.bootstrap import Services, reset_services
from shared.cli import main
from shared.clock import FixedClock
from shared.domain.inventory import OS_DISK_LUN, Disk, Vm, VmKind
from shared.domain.job_transitions import mark_dispatched
from shared.domain.jobs import JobPhase, JobStatus
from shared.domain.task import SnapshotTask
from shared.services.dispatch import Outcome, handle_snapshot_task
from tests.fakes import InMemoryInventory, RecordingDispatcher
from tests.jobs.helpers import DISPATCHED, OS_URL, SLOT, dispatched_job, queued_job

NOW = DISPATCHED + timedelta(minutes=1)


@pytest.fixture
def svc(make_settings):
    """Services on Azurite's tables, with one local VM and a dispatcher that records what it gets."""
    vm = Vm(name="vm1", kind=VmKind.LOCAL, disks=(Disk(lun=OS_DISK_LUN, blob_url=OS_URL),))
    services = Services(make_settings(), clock=FixedClock(NOW), inventory=InMemoryInventory(vm),
                        dispatcher=RecordingDispatcher())
    reset_services(services)
    yield services
    reset_services(None)


def test_a_queued_job_is_cancelled_and_its_task_then_reaches_no_vm(svc, capsys):
    """Stopped before dispatch: Cancelled with the reason, and the queued task later dispatches nothing."""
    job = queued_job()
    svc.jobs.create_if_absent(job)

    assert main(["job", "stop", job.job_id]) == 0
    assert capsys.readouterr().out.split()[:3] == [job.job_id, "Cancelled", "vm1"]
    stopped = svc.jobs.get(job.job_id)
    assert stopped.status is JobStatus.CANCELLED and stopped.end_time == NOW
    assert any("stopped by the operator" in note for note in stopped.notes)

    task = SnapshotTask(job_id=job.job_id, attempt=1, vm_name="vm1", slot=SLOT)
    outcome = handle_snapshot_task(svc, task.to_json().encode(), message_id=task.message_id, delivery_count=1)
    assert outcome.outcome is Outcome.DUPLICATE and svc.dispatcher.sent == []


def test_a_dispatched_job_is_refused_with_when_it_will_end(svc, capsys):
    """The extension already has the command: exit 4, the job untouched, the deadline and a way to wait."""
    job = dispatched_job()
    svc.jobs.create_if_absent(job)

    assert main(["job", "stop", "--name", job.job_id]) == 4
    err = capsys.readouterr().err
    assert "cannot be stopped" in err and "vm1" in err and "2025-03-01T04:30:09" in err
    assert f"vmsnap job wait --name {job.job_id}" in err
    assert svc.jobs.get(job.job_id) == job


def test_a_finished_job_and_an_unknown_one_are_refused(svc, capsys):
    """Nothing to stop on a terminal job (exit 4); an unknown id is not found (exit 3)."""
    job = queued_job()
    svc.jobs.create_if_absent(job)
    assert main(["job", "stop", job.job_id]) == 0
    assert main(["job", "stop", job.job_id]) == 4
    assert "already Cancelled" in capsys.readouterr().err
    assert main(["job", "stop", "00000000-0000-0000-0000-000000000000"]) == 3


def test_stopping_races_with_the_worker_and_loses_cleanly(svc, capsys):
    """If the worker dispatches between the read and the write, the stop is refused, not applied."""
    job = queued_job()
    svc.jobs.create_if_absent(job)
    real_update = svc.jobs.update

    def dispatch_first(job_id, change):
        real_update(job_id, lambda current: mark_dispatched(
            current, attempt=1, task_id=f"{job_id}_1", status_blob=f"{job_id}/1.Status.txt",
            log_blob=f"{job_id}/1.Logs.txt", now=NOW))
        return real_update(job_id, change)

    svc.jobs.update = dispatch_first
    assert main(["job", "stop", job.job_id, "-o", "json"]) == 4
    assert svc.jobs.get(job.job_id).phase is JobPhase.DISPATCHED
    assert capsys.readouterr().out == ""


def test_stop_prints_the_cancelled_job_as_json(svc, capsys):
    """-o json gives the same document as job show."""
    job = queued_job()
    svc.jobs.create_if_absent(job)
    assert main(["job", "stop", job.job_id, "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["name"] == job.job_id and document["properties"]["status"] == "Cancelled"


def test_a_retry_waiting_for_its_pause_can_be_stopped(svc, capsys):
    """After a retryable failure the job waits Queued for attempt 2: stopping it ends the retries."""
    from shared.services.ingestion import IngestResult, ingest_status_blob
    from tests.fakes import RecordingTaskQueue
    from tests.jobs.helpers import corpus

    job = dispatched_job()
    svc.jobs.create_if_absent(job)
    svc.task_queue = RecordingTaskQueue()
    failed = ingest_status_blob(svc, f"{job.job_id}/1.Status.txt", corpus("09-failed-generic-2.txt"), None)
    assert failed.result is IngestResult.RETRYING

    assert main(["job", "stop", job.job_id]) == 0
    stopped = svc.jobs.get(job.job_id)
    assert (stopped.status, stopped.attempt) == (JobStatus.CANCELLED, 2)
    retry = svc.task_queue.sent[0]
    outcome = handle_snapshot_task(svc, retry.to_json().encode(), message_id=retry.message_id, delivery_count=1)
    assert outcome.outcome is Outcome.DUPLICATE and svc.dispatcher.sent == []


def test_a_missing_id_is_a_usage_error_before_any_setting_is_read(monkeypatch, capsys):
    """Without an id, stop (like show and wait) says how to call it, exit 2, even unconfigured."""
    monkeypatch.delenv("BackupStorage", raising=False)
    reset_services(None)
    for command in ("stop", "show", "wait"):
        assert main(["job", command]) == 2
        assert f"vmsnap job {command} --name <id>" in capsys.readouterr().err
