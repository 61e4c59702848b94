"""A job's transitions: pure functions from (job, event) to the next job, or None when nothing changes.

Transitions never go backwards: a terminal job is final, an older report never overwrites a newer
one, a report of another attempt is noted as stale and changes nothing (except an earlier attempt's
success, which is never discarded: it ends the job), and applying the same report twice gives the
same record.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Sequence

from shared.clock import utc
from shared.domain import remediation
from shared.domain.bloburl import base_of
from shared.domain.command import EXTENSION_WINDOW
from shared.domain.inventory import BackupMethod
from shared.domain.job_reports import interpret, shorten
from shared.domain.jobs import AttemptOutcome, AttemptRecord, DiskResult, Job, JobError, JobPhase, JobStatus
from shared.domain.status import StatusReport, report_time_error
from shared.domain.task import SnapshotTask

TIMEOUT_MARGIN = timedelta(minutes=10)      # slack for the agent picking the command up and the upload
# Service-driven retries, as Azure Backup does for the extension's retryable failures: a failed
# attempt whose cause can pass (no network, freeze timeout, throttling, a late command...) is tried
# again with a new taskId, up to MAX_ATTEMPTS in all, after these pauses.
MAX_ATTEMPTS = 3
RETRY_BACKOFF = (timedelta(minutes=5), timedelta(minutes=15))
MAX_NOTES = 20
MAX_ATTEMPT_RECORDS = 20
MAX_NOTE_CHARS = 300
MAX_ERRORS = 8


class ReportVerdict(str, Enum):
    APPLY = "applied"
    UNCHANGED = "unchanged"     # the record already says what the report says
    OLDER = "older"             # an in-progress report older than one already applied
    STALE = "stale"             # the report belongs to another attempt (taskId or blob attempt differ)
    TERMINAL = "terminal"       # the job is already final
    UNTIMELY = "untimely"       # its times lie outside the job's window: recorded as unreadable


def assess_report(job: Job, report: StatusReport, *, now: datetime, attempt: int | None = None) -> ReportVerdict:
    """Whether a report may change the job (UNCHANGED is decided by ``apply_report``)."""
    if job.is_terminal:
        return ReportVerdict.TERMINAL
    if (attempt is not None and attempt != job.attempt) or report.task_id != job.expected_task_id:
        if _succeeded_earlier(job, report, attempt) is None:
            return ReportVerdict.STALE
        # An earlier attempt's success: it ends the job (``apply_report``), once its times are believable.
        return ReportVerdict.UNTIMELY if untimely_reason(job, report, now) is not None else ReportVerdict.APPLY
    if untimely_reason(job, report, now) is not None:
        return ReportVerdict.UNTIMELY
    if report.in_progress and job.last_report_at is not None and (
            report.timestamp is None or report.timestamp < job.last_report_at or job.phase is JobPhase.DONE):
        return ReportVerdict.OLDER
    # A final report wins over any in-progress one whatever the clocks say: the extension writes
    # "running" before it writes the result, so the result is never the older of the two.
    return ReportVerdict.APPLY


def untimely_reason(job: Job, report: StatusReport, now: datetime) -> str | None:
    """Why the report's times cannot be this job's (before it started, or after now, beyond clock
    skew), or None."""
    return report_time_error(report, not_before=job.start_time, now=utc(now))


def apply_report(job: Job, report: StatusReport, now: datetime, *, attempt: int | None = None,
                 blobs: tuple[str, str] | None = None) -> Job | None:
    """The job after one status report of its current attempt, or None when nothing changes.

    ``attempt`` is the attempt named by the status blob's name, when known, and ``blobs`` that
    attempt's status and log blob names. A stale report only adds a note saying it was ignored; an
    untimely one is recorded as unreadable, and the job keeps waiting; an earlier attempt's success
    ends the job with that attempt's result (``_back_to``).
    """
    verdict = assess_report(job, report, now=now, attempt=attempt)
    if verdict is ReportVerdict.UNTIMELY:
        return record_unreadable(job, job.status_blob or f"{job.job_id}/{job.attempt}.Status.txt",
                                 untimely_reason(job, report, now) or "", now)
    if verdict is ReportVerdict.STALE and _failure_recorded(job, report.task_id):
        return None     # a retried attempt's blob again: its failure is already on the record
    if verdict is ReportVerdict.STALE:
        return _with_note(job, f"ignored a status report of task {report.task_id or '(none)'}"
                               f"{'' if attempt is None else f' (attempt {attempt})'}: the current task is "
                               f"{job.expected_task_id}")
    if verdict is not ReportVerdict.APPLY:
        return None
    earlier = _succeeded_earlier(job, report, attempt)
    if earlier is not None:
        job = _back_to(job, earlier, now, blobs)
    outcome = interpret(report, job.disks)
    changed = replace(
        job,
        status=outcome.status,
        phase=outcome.phase,
        consistency=outcome.consistency,
        disks=outcome.disks,
        errors=outcome.errors[:MAX_ERRORS],
        extension_code=report.code,
        health_code=report.health_code,
        last_report_at=report.timestamp or job.last_report_at,
    )
    if outcome.status.is_terminal:
        finished = report.timestamp or utc(now)
        changed.end_time = max(finished, job.start_time)
        changed.backup_size_bytes = outcome.backup_size_bytes
    for note in report.notes:       # what parsing changed to keep the report (numbers out of range)
        changed = _with_note(changed, note) or changed
    return None if changed == job else changed


def retry_at(job: Job, report: StatusReport, now: datetime, *, attempt: int | None = None) -> datetime | None:
    """When the service tries this job again after ``report``, or None when the report's outcome stands.

    Only a final, failed report of the current attempt, whose first error is retryable, while
    attempts remain.
    """
    if not is_retryable_failure(report) or \
            assess_report(job, report, now=now, attempt=attempt) is not ReportVerdict.APPLY:
        return None
    return next_attempt_at(job, now)


def next_attempt_at(job: Job, now: datetime) -> datetime | None:
    """When the retry policy starts the job's next attempt after the current one failed, or None when
    the job has used its MAX_ATTEMPTS. The one retry policy: extension failures and dispatch failures."""
    if job.attempt >= MAX_ATTEMPTS:
        return None
    return utc(now) + RETRY_BACKOFF[min(job.attempt, len(RETRY_BACKOFF)) - 1]


def is_retryable_failure(report: StatusReport) -> bool:
    """Whether the report is a final failure whose cause may pass (whatever the job's state)."""
    if report.in_progress:
        return False
    outcome = interpret(report)
    return outcome.status is JobStatus.FAILED and outcome.errors[0].retryable


def mark_retrying(job: Job, report: StatusReport, now: datetime, at: datetime, *,
                  attempt: int | None = None) -> Job | None:
    """The job once a retryable failure of its attempt is answered with the next attempt at ``at``.

    It stays InProgress, Queued for attempt + 1 (a new taskId, new status and log blobs); the
    failure and its per-disk results stay on the record until the next attempt is dispatched or
    reports, and in its notes for good.
    """
    failed = apply_report(job, report, now, attempt=attempt)
    if failed is None or failed.status is not JobStatus.FAILED:
        return None
    first = failed.errors[0]
    retrying = replace(
        failed,
        status=JobStatus.IN_PROGRESS,
        phase=JobPhase.QUEUED,
        attempt=job.attempt + 1,
        task_id=None,
        end_time=None,
        backup_size_bytes=None,
        last_report_at=None,
        status_blob=None,
        log_blob=None,
        # The next attempt's window opens when it is due: the sweep must not time out a retry that
        # is waiting for its turn because the failed attempt was dispatched long ago.
        dispatched_at=utc(at),
    )
    retrying.attempts = _with_attempt(job, AttemptRecord(
        attempt=job.attempt, task_id=job.expected_task_id, outcome=AttemptOutcome.FAILED,
        error_code=first.error_code, extension_code=report.code, dispatched_at=job.dispatched_at,
        ended_at=failed.end_time, retry_at=utc(at)))
    note = (f"attempt {job.attempt} (task {job.expected_task_id}) failed with code {report.code} "
            f"({first.error_code}); retrying as attempt {job.attempt + 1} at {utc(at).isoformat(timespec='seconds')}")
    return _with_note(retrying, note) or retrying


def mark_not_dispatched(job: Job, *, attempt: int, error: JobError, now: datetime,
                        retry_at: datetime | None) -> Job | None:
    """The job once ``attempt``'s command could not be handed to the VM for a reason that may pass.

    With ``retry_at`` the job waits, Queued, for attempt + 1 (a new taskId: the VM may have got the
    command after all, and then its report is another attempt's); without, it fails with ``error``.
    Either way the attempt is on the record. None when the job has moved past ``attempt``.
    """
    return _end_attempt(job, attempt=attempt, error=error, now=now, retry_at=retry_at,
                        outcome=AttemptOutcome.NOT_DISPATCHED, how="could not be handed to the VM")


def mark_attempt_failed(job: Job, *, attempt: int, error: JobError, now: datetime,
                        retry_at: datetime | None) -> Job | None:
    """The job once the service itself found ``attempt`` failed (e.g. its restore point failed):
    retried at ``retry_at`` as attempt + 1, or failed for good without it."""
    return _end_attempt(job, attempt=attempt, error=error, now=now, retry_at=retry_at,
                        outcome=AttemptOutcome.FAILED, how="failed")


def _end_attempt(job: Job, *, attempt: int, error: JobError, now: datetime, retry_at: datetime | None,
                 outcome: AttemptOutcome, how: str) -> Job | None:
    if job.is_terminal or attempt != job.attempt:
        return None
    record = AttemptRecord(attempt=attempt, task_id=job.expected_task_id, outcome=outcome,
                           error_code=error.error_code, detail=shorten(error.error_string),
                           dispatched_at=job.dispatched_at, ended_at=utc(now),
                           retry_at=utc(retry_at) if retry_at else None)
    if retry_at is None:
        failed = mark_failed(job, error, now)
        if failed is not None:
            failed.attempts = _with_attempt(job, record)
        return failed
    waiting = replace(job, phase=JobPhase.QUEUED, attempt=attempt + 1, task_id=None, status_blob=None, log_blob=None,
                      errors=([error] + [e for e in job.errors if e.error_code != error.error_code])
                      [:MAX_ERRORS], attempts=_with_attempt(job, record),
                      # The next attempt's window opens when it is due, not at the failed one's dispatch.
                      dispatched_at=utc(retry_at))
    note = (f"attempt {attempt} (task {job.expected_task_id}) {how} ({error.error_code}); "
            f"retrying as attempt {attempt + 1} at {utc(retry_at).isoformat(timespec='seconds')}")
    return _with_note(waiting, note) or waiting


def pending_retry(job: Job) -> AttemptRecord | None:
    """The earlier attempt whose retry the job is waiting for (Queued, the next attempt not yet run)."""
    if job.is_terminal or job.phase is not JobPhase.QUEUED or not job.attempts:
        return None
    last = job.attempts[-1]
    return last if last.attempt == job.attempt - 1 and last.retry_at is not None else None


def unreported_attempts(job: Job) -> list[AttemptRecord]:
    """Earlier attempts of an unfinished job whose command the VM may have run without the job hearing
    its result: taken for not handed over (the answer lost after the VM got it), or superseded."""
    if job.is_terminal:
        return []
    return [r for r in job.attempts if r.outcome in (AttemptOutcome.NOT_DISPATCHED, AttemptOutcome.SUPERSEDED)]


def _succeeded_earlier(job: Job, report: "StatusReport", attempt: int | None) -> AttemptRecord | None:
    """The unreported earlier attempt whose final success ``report`` is: a whole backup, never discarded."""
    if report.in_progress or not report.task_id:
        return None
    record = next((r for r in unreported_attempts(job) if r.task_id == report.task_id), None)
    if record is None or (attempt is not None and attempt != record.attempt):
        return None
    return record if interpret(report).status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS) else None


def _back_to(job: Job, earlier: AttemptRecord, now: datetime, blobs: tuple[str, str] | None) -> Job:
    """The job as ``earlier`` left it, about to take its success: the current attempt is recorded as
    overtaken (its queued task then dispatches nothing; a command already on the VM may snapshot
    again, and retention deletes those snapshots: they carry the job's id but no recovery point)."""
    overtaken = AttemptRecord(attempt=job.attempt, task_id=job.expected_task_id, outcome=AttemptOutcome.OVERTAKEN,
                              dispatched_at=None if job.phase is JobPhase.QUEUED else job.dispatched_at,
                              ended_at=utc(now))
    others = [r for r in job.attempts if r.task_id != earlier.task_id]
    back = replace(job, attempt=earlier.attempt, task_id=earlier.task_id, dispatched_at=earlier.dispatched_at,
                   status_blob=blobs[0] if blobs else None, log_blob=blobs[1] if blobs else None,
                   last_report_at=None, attempts=(others + [overtaken])[-MAX_ATTEMPT_RECORDS:],
                   disks=[DiskResult(lun=d.lun, blob_url=d.blob_url) for d in job.disks])
    note = (f"attempt {earlier.attempt} (task {earlier.task_id}, taken for {earlier.outcome.value}) reported "
            f"success after all; it ends the job, attempt {job.attempt} (task {job.expected_task_id}) is not needed")
    return _with_note(back, note) or back


def _failure_recorded(job: Job, task_id: str | None) -> bool:
    """Whether a retry already recorded the failure of ``task_id`` (its later reports add nothing)."""
    return task_id is not None and any(record.task_id == task_id and record.outcome is AttemptOutcome.FAILED
                                       for record in job.attempts)


def _with_attempt(job: Job, record: AttemptRecord) -> list[AttemptRecord]:
    kept = [r for r in job.attempts if r.task_id != record.task_id]
    return (kept + [record])[-MAX_ATTEMPT_RECORDS:]


def record_unreadable(job: Job, blob_name: str, reason: str, now: datetime) -> Job | None:
    """Mark an in-progress job with a status blob that could not be read (the blob itself is kept)."""
    if job.is_terminal:
        return None
    error = JobError.from_remediation(remediation.for_service_error(remediation.STATUS_UNREADABLE),
                                      detail=f"{blob_name}: {reason}")
    changed = _with_note(job, f"status blob {blob_name} unreadable: {reason}") or replace(job)
    changed.errors = [error] + [e for e in job.errors if e.error_code != error.error_code][: MAX_ERRORS - 1]
    return None if changed == job else changed


def mark_dispatched(job: Job, *, attempt: int, task_id: str, status_blob: str, log_blob: str, now: datetime,
                    disks: Sequence[DiskResult] | None = None,
                    backup_method: BackupMethod = BackupMethod.EXTENSION_COMMAND) -> Job | None:
    """The job once an attempt's command is handed to the VM; a newer attempt supersedes older ones.

    ``disks`` (lun and blob URL, in the order of the command's SAS list) are the disks this attempt
    snapshots: status reports are matched to them by position.
    """
    if job.is_terminal or attempt < job.attempt:
        return None
    same_attempt = attempt == job.attempt and job.task_id in (None, task_id)
    changed = replace(job, attempt=attempt, task_id=task_id, status_blob=_no_query(status_blob) or None,
                      log_blob=_no_query(log_blob) or None, backup_method=backup_method)
    if disks is not None:
        changed.disks = [DiskResult(lun=d.lun, blob_url=_no_query(d.blob_url) or "") for d in disks]
    if same_attempt:
        if job.phase is JobPhase.QUEUED:
            changed.phase = JobPhase.DISPATCHED
            changed.dispatched_at = utc(now)
        if disks is not None and job.last_report_at is not None:
            changed.disks = job.disks       # results already arrived for this attempt: keep them
        return None if changed == job else changed
    changed.phase = JobPhase.DISPATCHED
    changed.dispatched_at = utc(now)
    changed.last_report_at = None
    changed.extension_code = changed.health_code = None
    changed.consistency = None
    changed.backup_size_bytes = None
    changed.errors = []
    if disks is None:
        changed.disks = [DiskResult(lun=d.lun, blob_url=d.blob_url) for d in job.disks]
    if job.phase is not JobPhase.QUEUED:
        changed.attempts = _with_attempt(job, AttemptRecord(
            attempt=job.attempt, task_id=job.expected_task_id, outcome=AttemptOutcome.SUPERSEDED,
            extension_code=job.extension_code, dispatched_at=job.dispatched_at, ended_at=utc(now)))
        changed = _with_note(changed, f"attempt {job.attempt} (task {job.task_id}) superseded by attempt "
                                      f"{attempt} (task {task_id})") or changed
    return changed


def mark_failed(job: Job, error: JobError, now: datetime) -> Job | None:
    """Fail a job for a reason the service found itself (unknown VM, refused SAS, dispatch refused)."""
    if job.is_terminal:
        return None
    others = [e for e in job.errors if e.error_code != error.error_code]
    return replace(job, status=JobStatus.FAILED, phase=JobPhase.DONE, end_time=max(utc(now), job.start_time),
                   errors=([error] + others)[:MAX_ERRORS])


def mark_cancelled(job: Job, reason: str, now: datetime) -> Job | None:
    """Cancel a job whose command has not been handed to the VM yet; a dispatched one cannot be:
    the extension runs its command to the end whatever the service decides."""
    if job.is_terminal or job.phase is not JobPhase.QUEUED:
        return None
    cancelled = replace(job, status=JobStatus.CANCELLED, end_time=max(utc(now), job.start_time))
    return _with_note(cancelled, reason) or cancelled


def timeout_deadline(job: Job) -> datetime:
    """When an unfinished job counts as timed out: the extension's 140-minute window plus a margin."""
    return (job.dispatched_at or job.start_time) + EXTENSION_WINDOW + TIMEOUT_MARGIN


def mark_timed_out(job: Job, now: datetime) -> Job | None:
    """Fail an InProgress job whose extension never reported a result within its window."""
    if job.is_terminal or utc(now) < timeout_deadline(job):
        return None
    if job.phase is JobPhase.QUEUED:
        detail = "the snapshot command was never handed to the VM"
    elif job.phase is JobPhase.DISPATCHED:
        detail = f"no status came back for task {job.expected_task_id}"
    else:
        detail = f"the extension reported it was running (last at {job.last_report_at}) but never finished"
    error = JobError.from_remediation(remediation.for_service_error(remediation.TIMED_OUT), detail=detail)
    failed = mark_failed(job, error, now)
    if failed is None:
        return None
    failed.disks = [replace(d, status="Failed", error=d.error or "no result before the timeout")
                    if d.status == "Pending" else d for d in failed.disks]
    return failed


def _with_note(job: Job, note: str) -> Job | None:
    note = note if len(note) <= MAX_NOTE_CHARS else note[: MAX_NOTE_CHARS - 3] + "..."
    if note in job.notes:
        return None
    return replace(job, notes=(job.notes + [note])[-MAX_NOTES:])


def _no_query(url: str | None) -> str | None:
    return base_of(url) if url else url


def dispatch_interrupted(job: Job, task: SnapshotTask, delivery_count: int, retried: bool) -> bool:
    """Whether this delivery finds its attempt claimed by one that died before the command surely
    reached the VM: a redelivery (the first delivery never settled the message), or a try after an
    outage cut this delivery's own earlier try short (its claim may have been stored although the answer
    was lost), of the job's current attempt, Dispatched and with no report yet. Handing the same
    command over again is safe: the extension runs a taskId once, and a status blob already written
    stops it here."""
    return ((delivery_count > 1 or retried) and job.phase is JobPhase.DISPATCHED and job.last_report_at is None
            and task.attempt == job.attempt and job.task_id == f"{job.job_id}_{job.attempt}")
