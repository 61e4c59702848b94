"""ingest_status_blob: what the blob trigger does with each status blob it sees."""
from __future__ import annotations

from datetime import timedelta

import pytest

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.job_transitions import MAX_ATTEMPTS, RETRY_BACKOFF, mark_dispatched
from shared.domain.jobs import JobPhase, JobStatus
from shared.errors import TransientError
from shared.services.ingestion import IngestResult, ingest_status_blob
from tests.jobs.helpers import FINAL_AT, corpus, dispatched_job, fake_services
from tests.fakes import OutageJobStore


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
    """A blob trigger firing twice for one write leaves the record as the first time (and one task)."""
    first = ingest_status_blob(svc, name(), corpus("06-failed-partial-76-761.txt"), '"e"')
    writes = svc.jobs.writes
    second = ingest_status_blob(svc, name(), corpus("06-failed-partial-76-761.txt"), '"e"')
    assert (first.result, second.result) == (IngestResult.RETRYING, IngestResult.STALE)
    assert svc.jobs.get(first.job_id) == first.job and svc.jobs.writes == writes
    assert len(svc.task_queue.sent) == 1


def test_a_finished_job_ignores_its_final_blob_again(svc):
    """A final blob replayed onto a job it finished changes nothing."""
    first = ingest_status_blob(svc, name(), corpus("02-completed-fs-two-disks.txt"), '"e"')
    writes = svc.jobs.writes
    assert ingest_status_blob(svc, name(), corpus("02-completed-fs-two-disks.txt"), '"e"').result is \
        IngestResult.TERMINAL
    assert svc.jobs.get(first.job_id) == first.job and svc.jobs.writes == writes


def for_attempt(data: bytes, attempt: int) -> bytes:
    """A corpus blob as attempt ``attempt``'s extension writes it (its taskId ends in _<attempt>)."""
    return data.replace(f"{dispatched_job().job_id}_1".encode(), f"{dispatched_job().job_id}_{attempt}".encode())


def redispatch(svc, attempt: int, minutes: int) -> None:
    """What the worker does with the retry task: hand attempt ``attempt`` to the VM."""
    job_id = dispatched_job().job_id
    svc.jobs.update(job_id, lambda job: mark_dispatched(
        job, attempt=attempt, task_id=f"{job_id}_{attempt}", status_blob=f"{job_id}/{attempt}.Status.txt",
        log_blob=f"{job_id}/{attempt}.Logs.txt", now=FINAL_AT + timedelta(minutes=minutes)))


def test_a_retryable_failure_queues_the_next_attempt_after_a_pause(svc):
    """Code 76 on attempt 1: the job stays InProgress, attempt 2's task is scheduled 5 minutes on."""
    outcome = ingest_status_blob(svc, name(), corpus("06-failed-partial-76-761.txt"), None)
    job = svc.jobs.get(outcome.job_id)
    assert outcome.result is IngestResult.RETRYING
    assert (job.status, job.phase, job.attempt, job.task_id) == (JobStatus.IN_PROGRESS, JobPhase.QUEUED, 2, None)
    assert job.errors[0].extension_code == 76 and job.errors[0].recommendations     # why, meanwhile
    assert [d.status for d in job.disks] == ["Completed", "Failed"]                 # what attempt 1 did
    assert "attempt 1" in job.notes[-1] and "code 76" in job.notes[-1] and "attempt 2" in job.notes[-1]
    (task,) = svc.task_queue.sent
    assert (task.task_id, task.vm_name, task.slot, task.not_before) == (
        f"{job.job_id}_2", job.vm_name, job.slot, FINAL_AT + RETRY_BACKOFF[0])


def test_the_retry_that_succeeds_completes_the_job_with_its_history(svc):
    """Attempt 2 completes: Completed, no errors, and the notes still say attempt 1 failed."""
    ingest_status_blob(svc, name(), corpus("06-failed-partial-76-761.txt"), None)
    redispatch(svc, 2, minutes=6)
    outcome = ingest_status_blob(svc, name(2), for_attempt(corpus("02-completed-fs-two-disks.txt"), 2), None)
    job = outcome.job
    assert (outcome.result, job.status, job.attempt, job.errors) == (IngestResult.APPLIED, JobStatus.COMPLETED, 2, [])
    assert [d.status for d in job.disks] == ["Completed", "Completed"]
    assert any("attempt 1" in note and "code 76" in note for note in job.notes)
    # attempt 1's blob firing again afterwards changes nothing
    assert ingest_status_blob(svc, name(), corpus("06-failed-partial-76-761.txt"), None).job == job


def test_the_last_attempt_fails_for_good(svc):
    """After MAX_ATTEMPTS the failure stands: Failed with its advice, and no further task."""
    ingest_status_blob(svc, name(), corpus("09-failed-generic-2.txt"), None)
    for attempt in range(2, MAX_ATTEMPTS + 1):
        redispatch(svc, attempt, minutes=10 * attempt)
        outcome = ingest_status_blob(svc, name(attempt), for_attempt(corpus("09-failed-generic-2.txt"), attempt), None)
    assert outcome.result is IngestResult.APPLIED and outcome.job.status is JobStatus.FAILED
    assert outcome.job.attempt == MAX_ATTEMPTS and outcome.job.errors[0].extension_code == 2
    assert [t.attempt for t in svc.task_queue.sent] == list(range(2, MAX_ATTEMPTS + 1))
    assert sum("failed with code 2" in note for note in outcome.job.notes) == MAX_ATTEMPTS - 1


def test_a_failure_retrying_cannot_cure_fails_at_once(svc):
    """A pre-script failure with continueBackupOnFailure=false (code 300-range) is not retried."""
    blob = corpus("09-failed-generic-2.txt").replace(b'"code": "2"', b'"code": "302"')
    outcome = ingest_status_blob(svc, name(), blob, None)
    assert outcome.job.status is JobStatus.FAILED and outcome.job.errors[0].retryable is False
    assert svc.task_queue.sent == []


def test_a_retry_that_cannot_be_sent_leaves_the_job_for_the_trigger_to_retry(svc):
    """Service Bus down: TransientError, the job unchanged, so the blob is ingested again later."""
    class DownQueue:
        def send(self, tasks):
            raise TransientError("Service Bus unreachable")

    svc.task_queue = DownQueue()
    with pytest.raises(TransientError):
        ingest_status_blob(svc, name(), corpus("06-failed-partial-76-761.txt"), None)
    assert svc.jobs.get(dispatched_job().job_id) == dispatched_job()


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


# --- numbers the table cannot hold, times in the future, storage outages ------------------------

COMPLETED = "02-completed-fs-two-disks.txt"


def out_of_range(data: bytes) -> bytes:
    """A completed blob whose health code is beyond Int32 and whose size is beyond Int64."""
    return (data.replace(b'"vmHealthStatusCode": 1', b'"vmHealthStatusCode": 98765432109')
                .replace(b'"totalUsedSizeInBytes": 5368709120', b'"totalUsedSizeInBytes": ' + b"9" * 30))


def test_numbers_beyond_the_table_are_kept_with_a_note(svc):
    """A code beyond Int32 is clamped and a size beyond Int64 dropped; the job completes and says why."""
    outcome = ingest_status_blob(svc, name(), out_of_range(corpus(COMPLETED)), None)
    job = svc.jobs.get(outcome.job_id)
    assert job.status is JobStatus.COMPLETED_WITH_WARNINGS       # a non-success health code is a warning
    assert job.health_code == 2**31 - 1 and job.backup_size_bytes is None
    assert any("98765432109" in n and "Int32" in n for n in job.notes)
    assert any("totalUsedSizeInBytes" in n and "Int64" in n for n in job.notes)


def test_an_integer_too_long_to_convert_is_unreadable_not_a_crash(svc):
    """A code with thousands of digits marks the blob unreadable with a reason; nothing raises."""
    blob = corpus(COMPLETED).replace(b'"code": "1"', b'"code": ' + b"7" * 5000)
    outcome = ingest_status_blob(svc, name(), blob, None)
    assert outcome.result is IngestResult.UNREADABLE and "not usable JSON" in outcome.detail


def test_a_final_report_from_the_far_future_is_unreadable(svc):
    """A result stamped in year 9999 is not taken as the end time: the blob is unreadable, and says why."""
    blob = corpus(COMPLETED).replace(b'"\\/Date(1740794621000)\\/"', b'"9999-12-31T23:59:59Z"')
    outcome = ingest_status_blob(svc, name(), blob, None)
    job = svc.jobs.get(outcome.job_id)
    assert outcome.result is IngestResult.UNREADABLE and "in the future" in outcome.detail
    assert job.status is JobStatus.IN_PROGRESS and job.end_time is None
    assert job.errors[0].error_code == "StatusBlobUnreadable" and "9999-12-31" in job.errors[0].error_string


def test_a_report_a_few_minutes_ahead_is_still_believed(svc):
    """A VM clock slightly ahead of ours (skew) does not cost the result."""
    svc.clock.advance(timedelta(minutes=-10))
    assert ingest_status_blob(svc, name(), corpus(COMPLETED), None).job.status is JobStatus.COMPLETED


def test_ingestion_rides_out_a_minutes_long_outage(svc):
    """Storage down for 4 minutes: the same invocation keeps trying, with growing pauses, and completes."""
    from shared.services.ingestion import ingest_with_retries
    from shared.services.outages import MAX_PAUSE

    pauses = []

    def sleep(seconds):
        pauses.append(seconds)
        svc.clock.advance(timedelta(seconds=seconds))

    svc.jobs = OutageJobStore(svc.jobs, svc.clock, FINAL_AT + timedelta(minutes=4))
    outcome = ingest_with_retries(svc, name(), corpus(COMPLETED), None, sleep=sleep)
    assert outcome.job.status is JobStatus.COMPLETED
    assert pauses[:3] == [1.0, 2.0, 4.0] and max(pauses) == MAX_PAUSE
    assert timedelta(minutes=4) <= timedelta(seconds=sum(pauses)) < timedelta(minutes=5)


def test_an_outage_longer_than_the_budget_hands_the_blob_back_to_the_host(svc):
    """Past the retry budget (inside the function timeout) the trigger fails, so the host and sweep take over."""
    from shared.services.ingestion import RETRY_BUDGET, ingest_with_retries

    svc.jobs = OutageJobStore(svc.jobs, svc.clock, FINAL_AT + timedelta(hours=1))
    with pytest.raises(TransientError):
        ingest_with_retries(svc, name(), corpus(COMPLETED), None,
                            sleep=lambda s: svc.clock.advance(timedelta(seconds=s)))
    assert svc.clock.now() - FINAL_AT <= RETRY_BUDGET < timedelta(minutes=10)
