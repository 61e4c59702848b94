"""A disk whose blob is missing is retried like the service does: the extension reports it (76 with the
disk's BlobNotFound, or 2 with no per-disk results when every disk is missing), the retry policy runs, and
the job names the disk (LUN and blob URL) and what to check."""
from __future__ import annotations

import json

import pytest

from shared.domain import remediation
from shared.domain.job_transitions import MAX_ATTEMPTS, RETRY_BACKOFF
from shared.domain.jobs import AttemptOutcome, JobPhase, JobStatus
from shared.services.ingestion import IngestResult, ingest_status_blob
from tests.jobs.helpers import DATA_URL, FINAL_AT, OS_URL, corpus, dispatched_job, fake_services
from tests.jobs.test_ingestion import for_attempt, name, redispatch


def every_disk_missing() -> bytes:
    """What the handler's guest path writes when no disk's blob exists: code 2, no per-disk results."""
    doc = json.loads(corpus("09-failed-generic-2.txt"))
    doc[0]["status"]["snapshotInfo"] = None
    return json.dumps(doc).encode()


@pytest.fixture
def svc():
    services = fake_services()
    services.jobs.create_if_absent(dispatched_job())
    return services


def test_code_2_without_disk_results_names_the_missing_disks_and_retries(svc):
    """Code 2 says nothing about the disks: the service finds both blobs gone, names them, and retries."""
    svc.snapshots.missing.update({OS_URL, DATA_URL})
    outcome = ingest_status_blob(svc, name(), every_disk_missing(), None)
    job = outcome.job
    assert outcome.result is IngestResult.RETRYING and (job.phase, job.attempt) == (JobPhase.QUEUED, 2)
    error = job.errors[0]
    assert (error.error_code, error.retryable, error.extension_code) == (remediation.DISK_BLOB_MISSING, True, 2)
    assert f"LUN -1 (OS disk) ({OS_URL}): BlobNotFound" in error.error_string
    assert f"LUN 0 ({DATA_URL}): BlobNotFound" in error.error_string
    assert any("failover" in r for r in error.recommendations) and any("inventory" in r for r in error.recommendations)
    assert [t.not_before for t in svc.task_queue.sent] == [FINAL_AT + RETRY_BACKOFF[0]]


def test_code_2_with_every_blob_present_is_the_generic_error(svc):
    """When the blobs are there, nothing is said about missing disks: code 2 stays the internal error."""
    outcome = ingest_status_blob(svc, name(), every_disk_missing(), None)
    assert [e.error_code for e in outcome.job.errors] == ["BackUpOperationFailed"]


def test_a_failure_for_another_reason_is_not_blamed_on_the_disks(svc):
    """A command refused as too late (402) names no disk: the disks are not looked at nor blamed."""
    svc.snapshots.missing.update({OS_URL, DATA_URL})
    outcome = ingest_status_blob(svc, name(), corpus("08-failed-too-late-402.txt"), None)
    assert [e.error_code for e in outcome.job.errors] == ["ExtensionCommandTooLate"]


def test_a_disk_missing_on_every_attempt_fails_the_job_naming_it(svc):
    """The retry policy runs its course (3 attempts, 5 then 15 minutes apart), then the job fails with the
    missing disk first, each attempt on the record."""
    blob = corpus("06-failed-partial-76-761.txt")          # the data disk: BlobNotFound
    ingest_status_blob(svc, name(), blob, None)
    for attempt in range(2, MAX_ATTEMPTS + 1):
        redispatch(svc, attempt, minutes=10 * attempt)
        outcome = ingest_status_blob(svc, name(attempt), for_attempt(blob, attempt), None)
    job = outcome.job
    assert (job.status, job.attempt) == (JobStatus.FAILED, MAX_ATTEMPTS)
    assert job.errors[0].error_code == remediation.DISK_BLOB_MISSING
    assert f"LUN 0 ({DATA_URL})" in job.errors[0].error_string and "sig=" not in job.errors[0].error_string
    assert [(r.attempt, r.outcome, r.error_code) for r in job.attempts] == [
        (a, AttemptOutcome.FAILED, remediation.DISK_BLOB_MISSING) for a in range(1, MAX_ATTEMPTS)]
    assert [t.not_before for t in svc.task_queue.sent] == [FINAL_AT + pause for pause in RETRY_BACKOFF]


def test_a_disk_back_after_a_failover_completes_the_retry(svc):
    """Attempt 1 misses the data disk's blob; by attempt 2 it is back: the job completes."""
    ingest_status_blob(svc, name(), corpus("06-failed-partial-76-761.txt"), None)
    redispatch(svc, 2, minutes=6)
    outcome = ingest_status_blob(svc, name(2), for_attempt(corpus("02-completed-fs-two-disks.txt"), 2), None)
    assert (outcome.job.status, outcome.job.errors) == (JobStatus.COMPLETED, [])
    assert outcome.job.attempts[0].error_code == remediation.DISK_BLOB_MISSING
