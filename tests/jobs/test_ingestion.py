"""ingest_status_blob: what the blob trigger does with each status blob it sees."""
from __future__ import annotations

import pytest

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.jobs import JobStatus
from shared.errors import TransientError
from shared.services.ingestion import IngestResult, ingest_status_blob
from tests.jobs.helpers import FINAL_AT, corpus, dispatched_job, fake_services


@pytest.fixture
def svc():
    services = fake_services()
    services.jobs.create_if_absent(dispatched_job())
    return services


def name(attempt=1):
    return f"{dispatched_job().job_id}/{attempt}.Status.txt"


def test_running_then_final_blob_completes_the_job(svc):
    """The in-progress write and the final write of one blob end with a completed job."""
    assert ingest_status_blob(svc, name(), corpus("01-running-code4.txt"), '"e1"').result is IngestResult.APPLIED
    outcome = ingest_status_blob(svc, name(), corpus("02-completed-fs-two-disks.txt"), '"e2"')
    assert outcome.result is IngestResult.APPLIED and outcome.job.status is JobStatus.COMPLETED
    assert svc.jobs.get(outcome.job_id).status is JobStatus.COMPLETED


def test_same_blob_twice_gives_the_same_record(svc):
    """A blob trigger firing twice for one write leaves the record as the first time."""
    first = ingest_status_blob(svc, name(), corpus("06-failed-partial-76-761.txt"), '"e"')
    writes = svc.jobs.writes
    second = ingest_status_blob(svc, name(), corpus("06-failed-partial-76-761.txt"), '"e"')
    assert second.result is IngestResult.TERMINAL
    assert svc.jobs.get(first.job_id) == first.job and svc.jobs.writes == writes


def test_running_blob_twice_is_unchanged(svc):
    """A repeated in-progress write changes nothing and says so."""
    ingest_status_blob(svc, name(), corpus("01-running-code4.txt"), None)
    assert ingest_status_blob(svc, name(), corpus("01-running-code4.txt"), None).result is IngestResult.UNCHANGED


def test_empty_blob_is_a_no_op(svc):
    """The worker's pre-created empty blob (block, or NUL-filled page blob) changes nothing."""
    for data in (b"", b"\0" * 1024):
        assert ingest_status_blob(svc, name(), data, None).result is IngestResult.EMPTY
    assert svc.jobs.get(dispatched_job().job_id) == dispatched_job()


def test_unknown_job_is_ignored(svc):
    """A status blob for a job that does not exist is reported, not raised."""
    outcome = ingest_status_blob(svc, "00000000-0000-8000-8000-000000000000/1.Status.txt",
                                 corpus("02-completed-fs-two-disks.txt"), None)
    assert outcome.result is IngestResult.UNKNOWN_JOB


def test_unreadable_blob_marks_the_job(svc):
    """A truncated blob marks the running job with the reason, without failing it."""
    outcome = ingest_status_blob(svc, name(), corpus("90-truncated.txt"), None)
    assert outcome.result is IngestResult.UNREADABLE
    job = svc.jobs.get(outcome.job_id)
    assert job.status is JobStatus.IN_PROGRESS
    assert job.errors[0].error_code == "StatusBlobUnreadable" and "not JSON" in job.errors[0].error_string


def test_blob_of_an_older_attempt_is_stale(svc):
    """A status blob named for attempt 0 is noted as stale and changes nothing else."""
    outcome = ingest_status_blob(svc, name(0), corpus("02-completed-fs-two-disks.txt"), None)
    assert outcome.result is IngestResult.STALE
    assert outcome.job.status is JobStatus.IN_PROGRESS and len(outcome.job.notes) == 1


def test_bad_blob_name_is_ignored(svc):
    """A blob not named <job>/<attempt>.Status.txt is ignored."""
    assert ingest_status_blob(svc, "whatever.txt", b"x", None).result is IngestResult.BAD_NAME


def test_storage_down_raises_transient(make_settings, unique_name):
    """When table storage cannot be reached, ingestion raises TransientError so the trigger retries."""
    from azure.data.tables import TableServiceClient
    from shared.adapters.table_jobs import TableJobStore

    dead = TableServiceClient.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;", retry_total=0)
    svc = Services(make_settings(), clock=FixedClock(FINAL_AT), jobs=TableJobStore(dead, unique_name("jobs")))
    with pytest.raises(TransientError):
        ingest_status_blob(svc, name(), corpus("02-completed-fs-two-disks.txt"), None)


def test_end_to_end_on_azurite(make_settings):
    """On real Table storage, the blob's two writes and a replay end in one completed record."""
    svc = Services(make_settings(), clock=FixedClock(FINAL_AT))
    svc.jobs.create_if_absent(dispatched_job())
    for blob in ("01-running-code4.txt", "05-warning-prescript-failed.txt", "01-running-code4.txt",
                 "05-warning-prescript-failed.txt", "90-truncated.txt"):
        ingest_status_blob(svc, name(), corpus(blob), None)
    job = svc.jobs.get(dispatched_job().job_id)
    assert job.status is JobStatus.COMPLETED_WITH_WARNINGS
    assert [e.error_code for e in job.errors] == ["UserErrorPreScriptExecutionFailed"]
    assert job.notes == []
