"""The stale-job sweep: no result is lost, and a job whose extension never reported fails with advice.

The real extension has runs that never reach a terminal state (a crash, the 556 bug, a VM that
never got the command); without a sweep such a job would say InProgress forever. Before it fails a
job, the sweep looks for a result the blob trigger missed or gave up on (a poisoned blob, a lost
event): it reads the job's status blob and, for jobs dispatched through the Compute API, the
extension's instance view, and applies what it finds exactly as ingestion does. It reads the status
blob of every dispatched job on every run, and of earlier attempts the VM may have run unseen.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from shared.domain import remediation
from shared.domain.job_transitions import mark_timed_out, timeout_deadline, unreported_attempts
from shared.domain.jobs import Job, JobPhase, JobStatus
from shared.domain.restore import is_restore, last_progress, mark_stalled
from shared.domain.task import JOB_HORIZON
from shared.errors import NotFoundError, PermanentError, TransientError
from shared.ports import ExtensionStatusReader, JobQuery
from shared.services.ingestion import IngestNeeds, IngestOutcome, IngestResult, ingest_status_blob
from shared.services.needs import (HasClock, HasDigestQueue, HasDispatcher, HasInventory, HasJobs, HasRecoveryPoints,
                                   HasSettings, HasSnapshots, HasStatusBlobs, HasTaskQueue)

log = logging.getLogger(__name__)


class InstanceViewNeeds(HasClock, HasDigestQueue, HasDispatcher, HasInventory, HasJobs, HasRecoveryPoints, HasSettings,
                        HasSnapshots, HasStatusBlobs, HasTaskQueue, Protocol):
    """What _sweep_job(), _from_instance_view() read, with ingestion.ingest_status_blob's (the seam)."""

class SweepNeeds(HasClock, HasDigestQueue, HasDispatcher, HasInventory, HasJobs, HasRecoveryPoints, HasSettings,
                 HasSnapshots, HasStatusBlobs, HasTaskQueue, Protocol):
    """What sweep_stale_jobs() reads."""


# Jobs are looked up by slot time; nothing InProgress can be older than this and still matter (the
# worker makes no job older than this from a message: shared/domain/task.py).
LOOKBACK = JOB_HORIZON
# While the control plane cannot be reached, a job waits for the instance view this long past its
# deadline before it fails without it.
INSTANCE_VIEW_GRACE = timedelta(hours=1)
# Each job costs a blob read and maybe a table write (tens of ms); jobs are independent, so a page is
# swept in parallel to keep thousands of in-progress jobs well inside one timer run.
WORKERS = 8
# Outcomes that put a result on the job (a stale or repeated blob only adds a note, if anything).
_TAKEN = (IngestResult.APPLIED, IngestResult.RETRYING)


@dataclass
class SweepResult:
    examined: int = 0
    reingested: list[str] = field(default_factory=list)     # a status blob the trigger had not applied
    recovered: list[str] = field(default_factory=list)      # a result read from the instance view
    timed_out: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)       # storage or ARM unreachable: next sweep


def sweep_stale_jobs(svc: SweepNeeds, *, page_size: int = 200, workers: int = WORKERS) -> SweepResult:
    """Apply results the trigger missed, then fail every InProgress job past its deadline."""
    now = svc.clock.now()
    result = SweepResult()
    query = JobQuery(status=JobStatus.IN_PROGRESS, since=now - LOOKBACK - svc.settings.catch_up,
                     page_size=page_size)

    def sweep_one(job: Job) -> None:
        try:
            _sweep_job(svc, job, now, result)
        except TransientError as exc:
            log.warning("job %s (VM %s): left for the next sweep: %s", job.job_id, job.vm_name, exc)
            result.deferred.append(job.job_id)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sweep") as pool:
        while True:
            page = svc.jobs.query(query)
            result.examined += len(page.jobs)
            list(pool.map(sweep_one, page.jobs))
            if not page.continuation:
                return result
            query = JobQuery(status=query.status, since=query.since, page_size=page_size,
                             continuation=page.continuation)


def _sweep_job(svc: InstanceViewNeeds, job: Job, now: datetime, result: SweepResult) -> None:
    if is_restore(job):
        _sweep_restore(svc, job, now, result)
        return
    for blob in _blobs_to_read(svc, job):
        outcome = _reingest(svc, job, blob)
        if outcome is not None and outcome.result in _TAKEN:
            # Often the trigger is only seconds behind (the blob was just written): worth a warning
            # only when it is a result, which a missed trigger would have left unapplied.
            log.log(logging.WARNING if _has_result(outcome) else logging.INFO,
                    "job %s task %s: status blob %s applied by the sweep (%s) before the blob trigger",
                    job.job_id, job.expected_task_id, blob, outcome.result.value)
            result.reingested.append(job.job_id)
        if _has_result(outcome):
            return
        job = outcome.job if outcome is not None and outcome.job is not None else job
    if timeout_deadline(job) > now:
        return
    if job.phase is not JobPhase.QUEUED and job.status_blob:
        outcome = _from_instance_view(svc, job, now)
        if outcome is not None and outcome.result in _TAKEN:
            log.warning("job %s task %s: result taken from the extension's instance view (%s)",
                        job.job_id, job.expected_task_id, outcome.result.value)
            result.recovered.append(job.job_id)
        if _has_result(outcome):
            return
    try:
        updated = svc.jobs.update(job.job_id, lambda current: mark_timed_out(current, now))
    except NotFoundError:
        return
    if updated.status is JobStatus.FAILED and job.job_id not in result.timed_out:
        log.warning("job %s (VM %s, task %s) timed out: no result from the extension",
                    job.job_id, job.vm_name, job.task_id)
        result.timed_out.append(job.job_id)


def _sweep_restore(svc: HasJobs, job: Job, now: datetime, result: SweepResult) -> None:
    """A restore has no extension and no window: it fails only once its worker stopped making progress
    (shared/domain/restore.py, NO_PROGRESS_WINDOW), with the restore's own error."""
    try:
        updated = svc.jobs.update(job.job_id, lambda current: mark_stalled(current, now))
    except NotFoundError:
        return
    if updated.status is JobStatus.FAILED and updated.errors and \
            updated.errors[0].error_code == remediation.RESTORE_STALLED and job.job_id not in result.timed_out:
        log.warning("job %s (%s of VM %s): no progress since %s", job.job_id, job.operation, job.vm_name,
                    last_progress(job).isoformat(timespec="seconds"))
        result.timed_out.append(job.job_id)


def _has_result(outcome: IngestOutcome | None) -> bool:
    """Whether the job got its result (or its next attempt is queued), so it must not time out now."""
    return outcome is not None and outcome.job is not None and (
        outcome.job.is_terminal or outcome.result is IngestResult.RETRYING)


def _blobs_to_read(svc: HasStatusBlobs, job: Job) -> list[str]:
    """The status blobs that may hold a result the job lacks: those of earlier attempts the VM may
    have run unseen (their success ends the job), then the current attempt's once it is dispatched.

    Every one is read, however recent: the trigger applies a blob within seconds, so a re-read almost
    always changes nothing and costs one blob read, where an age gate would leave a result the trigger
    missed (a stalled host, a lost event, a run ending) unapplied for that long."""
    names = [svc.status_blobs.attempt_blob_names(job.job_id, record.attempt)[0]
             for record in unreported_attempts(job)]
    if job.phase in (JobPhase.DISPATCHED, JobPhase.RUNNING) and job.status_blob:
        names.append(job.status_blob)
    return names


def _reingest(svc: IngestNeeds, job: Job, blob: str) -> IngestOutcome | None:
    """Apply one status blob of the job, as the blob trigger would have; None if there is none."""
    try:
        data = svc.status_blobs.read(blob)
    except NotFoundError:
        log.info("job %s: status blob %s does not exist", job.job_id, blob)
        return None
    return ingest_status_blob(svc, blob, data, None)


def _from_instance_view(svc: InstanceViewNeeds, job: Job, now: datetime) -> IngestOutcome | None:
    """The handler's result from the instance view, when the dispatcher can read one (Compute API).

    The handler reports its result to the VM agent as well as to its blob; when the blob upload
    failed (an expired SAS, code 402) that report is the only one left.
    """
    reader = svc.dispatcher
    if not isinstance(reader, ExtensionStatusReader):
        return None
    try:
        vm = svc.inventory.get_vm(job.vm_name)
        payload = reader.extension_status(vm)
    except (NotFoundError, PermanentError) as exc:
        log.warning("job %s: no instance view for VM %s: %s", job.job_id, job.vm_name, exc)
        return None
    except TransientError:
        if now < timeout_deadline(job) + INSTANCE_VIEW_GRACE:
            raise
        log.warning("job %s: instance view of VM %s still unreachable %s past the deadline; failing "
                    "without it", job.job_id, job.vm_name, INSTANCE_VIEW_GRACE)
        return None
    if payload is None:
        return None
    name = job.status_blob or svc.status_blobs.attempt_blob_names(job.job_id, job.attempt)[0]
    return ingest_status_blob(svc, name, payload, None)
