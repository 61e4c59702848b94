"""Shared builders for the job tests: the corpus job (the one every corpus blob reports on)."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from shared.domain.inventory import OS_DISK_LUN
from shared.domain.job_transitions import apply_report, mark_dispatched, mark_retrying, retry_at
from shared.domain.jobs import DiskResult, Job
from shared.domain.status import StatusReport, parse_status_blob

CORPUS = Path(__file__).parent / "corpus"
SLOT = datetime(2025, 3, 1, 2, 0, tzinfo=timezone.utc)
STARTED = datetime(2025, 3, 1, 2, 0, 5, tzinfo=timezone.utc)
DISPATCHED = datetime(2025, 3, 1, 2, 0, 9, tzinfo=timezone.utc)
FINAL_AT = datetime(2025, 3, 1, 2, 3, 41, tzinfo=timezone.utc)
RUNNING_AT = datetime(2025, 3, 1, 2, 0, 20, tzinfo=timezone.utc)
OS_URL = "https://acct.blob.core.windows.net/vhds/vm1-os.vhd"
DATA_URL = "https://acct.blob.core.windows.net/vhds/vm1-data0.vhd"


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def queued_job() -> Job:
    job = Job.new_backup(vm_name="vm1", slot=SLOT, now=STARTED, policy_name="DefaultPolicy")
    assert job.job_id == "01954f6e-8d00-87cd-91c5-3d28beef679b"   # the id the corpus blobs carry
    return job


def dispatched_job(disks: bool = True) -> Job:
    job = queued_job()
    return mark_dispatched(
        job, attempt=1, task_id=f"{job.job_id}_1", status_blob=f"{job.job_id}/1.Status.txt",
        log_blob=f"{job.job_id}/1.Logs.txt", now=DISPATCHED,
        disks=[DiskResult(lun=OS_DISK_LUN, blob_url=OS_URL), DiskResult(lun=0, blob_url=DATA_URL)] if disks else None)


def local_disks(vm: str) -> list[DiskResult]:
    """The OS disk and LUN 0 of a local VM, as page blobs in Azurite."""
    return [DiskResult(OS_DISK_LUN, f"http://127.0.0.1:10000/devstoreaccount1/vhds/{vm}-os.vhd"),
            DiskResult(0, f"http://127.0.0.1:10000/devstoreaccount1/vhds/{vm}-data0.vhd")]


def reported(blob: str, job: Job, attempt: int = 1, at: datetime | None = None) -> StatusReport:
    """A corpus blob as ``job``'s attempt wrote it (its taskId), at ``at`` when given (else the blob's time)."""
    data = corpus(blob).replace(b"01954f6e-8d00-87cd-91c5-3d28beef679b_1", f"{job.job_id}_{attempt}".encode())
    data = data.replace(b"01954f6e-8d00-87cd-91c5-3d28beef679b", job.job_id.encode())
    if at is not None:
        data = data.replace(rb"\/Date(1740794621000)\/", rb"\/Date(%d)\/" % int(at.timestamp() * 1000))
    return parse_status_blob(data)


def finished_job(vm: str, blob: str, now: datetime) -> Job:
    """A scheduled backup of ``vm`` whose one attempt reported the corpus ``blob``."""
    job = Job.new_backup(vm_name=vm, slot=SLOT, now=STARTED, policy_name="DefaultPolicy")
    job = mark_dispatched(job, attempt=1, task_id=f"{job.job_id}_1", status_blob=f"{job.job_id}/1.Status.txt",
                          log_blob=f"{job.job_id}/1.Logs.txt", now=DISPATCHED, disks=local_disks(vm))
    return apply_report(job, reported(blob, job), now)


def retried_job(vm: str, blob: str, attempts: list[tuple[datetime, datetime]]) -> Job:
    """A scheduled backup of ``vm`` whose attempts, each (dispatched, reported), all reported the corpus
    ``blob``; a retryable failure queues the next attempt as the service does."""
    job = Job.new_backup(vm_name=vm, slot=SLOT, now=STARTED, policy_name="DefaultPolicy")
    for attempt, (dispatched, at) in enumerate(attempts, start=1):
        job = mark_dispatched(job, attempt=attempt, task_id=f"{job.job_id}_{attempt}",
                              status_blob=f"{job.job_id}/{attempt}.Status.txt",
                              log_blob=f"{job.job_id}/{attempt}.Logs.txt", now=dispatched,
                              disks=local_disks(vm) if attempt == 1 else None)
        report = reported(blob, job, attempt, at)
        again = retry_at(job, report, at)
        job = mark_retrying(job, report, at, again) if again else apply_report(job, report, at)
    return job


def fake_services(jobs=None, now=None):
    """Services with in-memory jobs and task queue, and a fixed clock (no storage touched)."""
    from shared.bootstrap import Services
    from shared.clock import FixedClock
    from shared.settings import Connection, Settings
    from tests.fakes import InMemoryJobStore, RecordingTaskQueue
    from tests.recovery.fakes import FakeSnapshots, InMemoryRecoveryPointStore

    settings = Settings(storage=Connection("BackupStorage", "UseDevelopmentStorage=true"),
                        service_bus=Connection("ServiceBusConnection", "Endpoint=sb://127.0.0.1:1;"))
    return Services(settings, clock=FixedClock(now or FINAL_AT), jobs=jobs if jobs is not None else InMemoryJobStore(),
                    task_queue=RecordingTaskQueue(), recovery_points=InMemoryRecoveryPointStore(),
                    snapshots=FakeSnapshots())
