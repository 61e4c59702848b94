"""Status ingestion: one status blob written by the extension becomes the truth on its job record.

Called by the blob trigger for ``<job_id>/<attempt>.Status.txt`` (through ``ingest_with_retries``,
which rides out a storage outage of minutes inside the invocation) and by the stale-job sweep, which
re-reads the blobs the trigger gave up on. Bad blob content never raises: it is recorded on the job
and the blob is kept. Only unreachable storage or Service Bus raises TransientError, so the platform
retries; everything else settles. Applying one blob twice gives the same record, so either path may
run any number of times.

A retryable failure with attempts left is answered with the next attempt: its task is sent first
(scheduled after a pause, MessageId ``<job>_<attempt>``, so a re-send is dropped), then the job
records the retry. Sent first, a crash between the two repeats the send, never loses the attempt.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Callable, Protocol

from shared.domain.job_reports import needs_disk_check, with_missing_blobs
from shared.domain.job_transitions import (ReportVerdict, apply_report, assess_report, is_retryable_failure,
                                           mark_retrying, record_unreadable, retry_at, untimely_reason)
from shared.domain.jobs import Job
from shared.domain.recovery import SUCCESSFUL
from shared.domain.status import ParseError, StatusReport, parse_status_blob
from shared.domain.task import SnapshotTask, Trigger, parse_blob_name
from shared.errors import ConfigurationError, NotFoundError, PermanentError, TransientError, ValidationError
from shared.services.needs import (HasClock, HasDigestQueue, HasJobs, HasRecoveryPoints, HasSettings, HasSnapshots,
                                   HasStatusBlobs, HasTaskQueue)
from shared.services.outages import ride_out
from shared.services.point_data import request_digests
from shared.services.recovery import missing_blob_positions, record_recovery_point

log = logging.getLogger(__name__)


class UnreadableNeeds(HasClock, HasJobs, Protocol):
    """What _record_unreadable() reads."""


class SendRetryNeeds(HasJobs, HasTaskQueue, Protocol):
    """What _send_retry_if_due() reads."""


class ApplyNeeds(HasClock, HasDigestQueue, HasJobs, HasRecoveryPoints, HasSettings, HasStatusBlobs, HasTaskQueue,
                 Protocol):
    """What _apply() reads."""


class DisksCheckedNeeds(HasJobs, HasSnapshots, Protocol):
    """What _with_disks_checked() reads."""


class IngestNeeds(HasClock, HasDigestQueue, HasJobs, HasRecoveryPoints, HasSettings, HasSnapshots, HasStatusBlobs,
                  HasTaskQueue, Protocol):
    """What ingest_status_blob(), ingest_with_retries() read."""


# How long one invocation keeps retrying while storage is unreachable: well past the minute-long
# outages seen in practice, and inside the host's functionTimeout (host.json: 10 minutes) with room
# for the last try. Past it the trigger fails; the host retries the blob, and the sweep re-reads it.
RETRY_BUDGET = timedelta(minutes=8)



class IngestResult(str, Enum):
    APPLIED = "applied"             # the job record changed
    UNCHANGED = "unchanged"         # the record already said this (same blob again)
    OLDER = "older"                 # an in-progress report older than what the job shows
    STALE = "stale"                 # another attempt's report: noted on the job, nothing else changed
    RETRYING = "retrying"           # a retryable failure: the next attempt is queued
    TERMINAL = "terminal"           # the job was already final
    UNREADABLE = "unreadable"       # not parsed, or its times not believed: recorded on the job, blob kept
    EMPTY = "empty"                 # pre-created, not written yet
    UNKNOWN_JOB = "unknown_job"     # no such job: logged and ignored
    BAD_NAME = "bad_name"           # not a status blob name this service writes


@dataclass(frozen=True)
class IngestOutcome:
    result: IngestResult
    blob_name: str
    job_id: str | None = None
    attempt: int | None = None
    job: Job | None = None
    detail: str = ""

    @property
    def changed(self) -> bool:
        return self.result in (IngestResult.APPLIED, IngestResult.UNREADABLE, IngestResult.STALE,
                               IngestResult.RETRYING)


def ingest_status_blob(svc: IngestNeeds, blob_name: str, data: bytes, etag: str | None) -> IngestOutcome:
    """Apply one status blob to its job; raises TransientError only when storage cannot be reached."""
    parsed_name = parse_blob_name(blob_name)
    if parsed_name is None:
        log.warning("ignoring blob %s: not <job_id>/<attempt>.Status.txt", blob_name)
        return IngestOutcome(IngestResult.BAD_NAME, blob_name, detail="not <job_id>/<attempt>.Status.txt")
    job_id, attempt = parsed_name
    if not data or not bytes(data).strip(b"\0 \t\r\n"):
        log.info("job %s attempt %s: status blob %s is empty (etag %s); nothing to do",
                 job_id, attempt, blob_name, etag)
        return IngestOutcome(IngestResult.EMPTY, blob_name, job_id, attempt)
    try:
        report = parse_status_blob(data)
    except ParseError as exc:
        return _record_unreadable(svc, blob_name, job_id, attempt, exc.reason, etag)
    return _apply(svc, blob_name, job_id, attempt, _with_disks_checked(svc, job_id, report), etag)


def ingest_with_retries(svc: IngestNeeds, blob_name: str, data: bytes, etag: str | None, *,
                        sleep: Callable[[float], None] = time.sleep,
                        budget: timedelta = RETRY_BUDGET) -> IngestOutcome:
    """``ingest_status_blob``, tried again with growing pauses while storage is unreachable
    (``shared.services.outages.ride_out``); TransientError once ``budget`` is spent."""
    return ride_out(svc, lambda: ingest_status_blob(svc, blob_name, data, etag), budget=budget, sleep=sleep,
                    what=f"status blob {blob_name} (etag {etag})")


class _RetryPlanChanged(Exception):
    """The job changed between planning a retry and recording it: plan again."""


_PLANS = 3


def _with_disks_checked(svc: DisksCheckedNeeds, job_id: str, report: StatusReport) -> StatusReport:
    """A snapshot failure that names no disk, with the disks whose blob is gone found by looking:
    the handler reports code 2 and no per-disk results when every disk's blob is missing."""
    if not needs_disk_check(report):
        return report                   # most reports: no extra read
    job = svc.jobs.get(job_id)
    if job is None or job.is_terminal or not job.disks:
        return report
    missing = missing_blob_positions(svc, [disk.blob_url for disk in job.disks])
    if missing:
        log.warning("job %s task %s: code %s with no per-disk results; the blob of %s of %s disk(s) does not "
                    "exist", job_id, report.task_id, report.code, len(missing), len(job.disks))
    return with_missing_blobs(report, job.disks, missing) if missing else report


def _apply(svc: ApplyNeeds, blob_name: str, job_id: str, attempt: int, report: StatusReport,
           etag: str | None) -> IngestOutcome:
    now = svc.clock.now()
    blobs = svc.status_blobs.attempt_blob_names(job_id, attempt)
    for _ in range(_PLANS):
        verdicts: list[ReportVerdict | IngestResult] = []
        untimely: list[str] = []
        try:
            planned = _send_retry_if_due(svc, job_id, attempt, report, now)
        except NotFoundError:
            return _unknown_job(blob_name, job_id, attempt, report, etag)

        def change(job: Job) -> Job | None:
            untimely.clear()                # the last try is the one written
            at = retry_at(job, report, now, attempt=attempt)
            if at is None and planned is None:
                verdict = assess_report(job, report, now=now, attempt=attempt)
                changed = apply_report(job, report, now, attempt=attempt, blobs=blobs)
                if verdict is ReportVerdict.UNTIMELY:
                    untimely.append(untimely_reason(job, report, now) or "")
                    verdicts.append(IngestResult.UNREADABLE)
                    return changed
                verdicts.append(ReportVerdict.UNCHANGED if verdict is ReportVerdict.APPLY and changed is None
                                else verdict)
                return changed
            if at is None or planned is None or planned.attempt != job.attempt + 1:
                raise _RetryPlanChanged()
            verdicts.append(IngestResult.RETRYING)
            return mark_retrying(job, report, now, planned.not_before or at, attempt=attempt)

        try:
            job = svc.jobs.update(job_id, change)
            break
        except _RetryPlanChanged:
            continue
        except NotFoundError:
            return _unknown_job(blob_name, job_id, attempt, report, etag)
        except ConfigurationError:
            # Storage refused this identity: nothing about the blob is wrong. Failing keeps the result
            # where it is, so the host retries it and the sweep applies it once the access is fixed.
            raise
        except (ValidationError, PermanentError) as exc:
            log.error("job %s: status blob %s could not be recorded: %s", job_id, blob_name, exc)
            return IngestOutcome(IngestResult.UNREADABLE, blob_name, job_id, attempt, detail=str(exc))
    else:
        raise TransientError(f"job {job_id} kept changing while its status blob {blob_name} was applied")
    # --- recovery points hook (issue 9): a successful job records its one point (idempotent) ---
    if job.status in SUCCESSFUL:
        point = record_recovery_point(svc, job)
        if point is not None:
            request_digests(svc, point)         # at every success applied: a repeat is dropped by the queue
    # --- end of hook ---
    result = IngestResult(verdicts[-1].value)
    if untimely:
        log.warning("job %s attempt %s: status blob %s (etag %s) unreadable: %s", job_id, attempt, blob_name, etag,
                    untimely[0])
        return IngestOutcome(result, blob_name, job_id, attempt, job, detail=untimely[0])
    log.info("job %s task %s: status blob %s (etag %s) code %s -> %s; job %s/%s",
             job_id, report.task_id, blob_name, etag, report.code, result.value, job.status.value, job.phase.value)
    return IngestOutcome(result, blob_name, job_id, attempt, job,
                         detail=f"code {report.code}, {report.status}")


def _send_retry_if_due(svc: SendRetryNeeds, job_id: str, attempt: int, report: StatusReport,
                       now: datetime) -> SnapshotTask | None:
    """Send the next attempt's task when ``report`` is a retryable failure with attempts left."""
    if not is_retryable_failure(report):
        return None                     # most reports: no extra read
    job = svc.jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} not found")
    at = retry_at(job, report, now, attempt=attempt)
    if at is None:
        return None
    task = SnapshotTask(job_id=job.job_id, attempt=job.attempt + 1, vm_name=job.vm_name, slot=job.slot,
                        trigger=job.trigger, policy_name=job.policy_name,
                        retain_until=job.retain_until, not_before=at)
    svc.task_queue.send([task])
    log.warning("job %s: task %s failed with code %s, which may pass; attempt %s (task %s) queued for %s",
                job.job_id, job.expected_task_id, report.code, task.attempt, task.task_id, at.isoformat())
    return task


def _unknown_job(blob_name: str, job_id: str, attempt: int, report: StatusReport, etag: str | None) -> IngestOutcome:
    log.warning("job %s: status blob %s (etag %s, task %s) has no job record; ignored",
                job_id, blob_name, etag, report.task_id)
    return IngestOutcome(IngestResult.UNKNOWN_JOB, blob_name, job_id, attempt, detail="no such job")


def _record_unreadable(svc: UnreadableNeeds, blob_name: str, job_id: str, attempt: int, reason: str,
                       etag: str | None) -> IngestOutcome:
    log.warning("job %s attempt %s: status blob %s (etag %s) unreadable: %s", job_id, attempt, blob_name, etag, reason)
    try:
        job = svc.jobs.update(job_id, lambda j: record_unreadable(j, blob_name, reason, svc.clock.now()))
    except NotFoundError:
        return IngestOutcome(IngestResult.UNKNOWN_JOB, blob_name, job_id, attempt, detail=reason)
    except ConfigurationError:
        raise       # as in _apply: access to fix, not a property of the blob
    except (ValidationError, PermanentError) as exc:
        log.error("job %s: could not record the unreadable blob %s: %s", job_id, blob_name, exc)
        return IngestOutcome(IngestResult.UNREADABLE, blob_name, job_id, attempt, detail=reason)
    return IngestOutcome(IngestResult.UNREADABLE, blob_name, job_id, attempt, job, detail=reason)
