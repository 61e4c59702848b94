"""Every status-blob variant the real extension writes, applied to a dispatched job, field by field."""
from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain.job_transitions import apply_report
from shared.domain.jobs import Consistency, DiskResult, JobPhase, JobStatus
from shared.domain.status import ParseError, parse_status_blob
from tests.jobs.helpers import (DATA_URL, DISPATCHED, FINAL_AT, OS_URL, RUNNING_AT, STARTED, corpus,
                                dispatched_job)

NOW = FINAL_AT + timedelta(seconds=30)
SNAP = "?snapshot=2025-03-01T02:03:40.1234567Z"


def ingest(name: str, job=None):
    job = job or dispatched_job()
    return apply_report(job, parse_status_blob(corpus(name)), NOW)


def assert_completed_two_disks(job, *, consistency, size=5368709120):
    assert job.status is JobStatus.COMPLETED
    assert job.phase is JobPhase.DONE
    assert job.consistency is consistency
    assert job.end_time == FINAL_AT
    assert job.duration == FINAL_AT - STARTED
    assert job.last_report_at == FINAL_AT
    assert job.backup_size_bytes == size
    assert job.errors == []
    assert job.disks == [DiskResult(-1, OS_URL, "Completed", OS_URL + SNAP, None),
                         DiskResult(0, DATA_URL, "Completed", DATA_URL + SNAP, None)]


def test_in_progress_code_4_keeps_the_job_running():
    """A 'success' status with code 4 shows the job as still running, not finished."""
    job = ingest("01-running-code4.txt")
    assert job.status is JobStatus.IN_PROGRESS
    assert job.phase is JobPhase.RUNNING
    assert job.end_time is None
    assert job.extension_code == 4
    assert job.health_code == 1
    assert job.last_report_at == RUNNING_AT
    assert job.consistency is None
    assert job.backup_size_bytes is None
    assert job.errors == []
    assert [d.status for d in job.disks] == ["Pending", "Pending"]
    assert job.dispatched_at == DISPATCHED


def test_code_1_is_a_file_system_consistent_completion():
    """Code 1 completes the job as file-system consistent, with each disk's snapshot and the size."""
    job = ingest("02-completed-fs-two-disks.txt")
    assert_completed_two_disks(job, consistency=Consistency.FILE_SYSTEM)
    assert (job.extension_code, job.health_code) == (1, 1)
    assert job.attempt == 1 and job.task_id == f"{job.job_id}_1"


def test_code_0_is_application_consistent():
    """Code 0 (scripts ran) completes the job as application consistent."""
    job = ingest("03-completed-app-consistent.txt")
    assert_completed_two_disks(job, consistency=Consistency.APPLICATION)
    assert (job.extension_code, job.health_code) == (0, 0)


def test_snapshot_consistency_3_is_crash_consistent():
    """A code-1 run whose message says snapshotConsistency 3 is recorded as crash consistent."""
    one_disk = dispatched_job()
    one_disk.disks = one_disk.disks[:1]
    job = ingest("04-completed-crash-consistent.txt", one_disk)
    assert job.status is JobStatus.COMPLETED
    assert job.consistency is Consistency.CRASH
    assert job.disks == [DiskResult(-1, OS_URL, "Completed", OS_URL + SNAP, None)]
    assert job.errors == []


def test_a_disk_without_a_result_is_a_warning():
    """When the extension reports fewer disks than were sent, the missing one is shown failed."""
    job = ingest("04-completed-crash-consistent.txt")
    assert job.status is JobStatus.COMPLETED_WITH_WARNINGS
    assert job.disks[1] == DiskResult(0, DATA_URL, "Failed", None, "the extension reported no result for this disk")


def test_failed_prescript_with_backup_continuing_is_a_warning():
    """A health code (300) on a successful run completes with warnings, with the script remediation."""
    job = ingest("05-warning-prescript-failed.txt")
    assert job.status is JobStatus.COMPLETED_WITH_WARNINGS
    assert job.consistency is Consistency.FILE_SYSTEM
    assert (job.extension_code, job.health_code) == (1, 300)
    assert job.end_time == FINAL_AT
    [warning] = job.errors
    assert warning.error_code == "UserErrorPreScriptExecutionFailed"
    assert warning.error_title == "The pre-script failed"
    assert warning.extension_code == 300
    assert warning.retryable is False
    assert "PreScript failed for the plugin ScriptRunner" in warning.error_string
    assert "snapshotCreator" not in warning.error_string
    assert any("script" in r for r in warning.recommendations)
    assert [d.status for d in job.disks] == ["Completed", "Completed"]


def test_partial_snapshot_failure_fails_with_both_codes_and_matches_disks_by_position():
    """Code 76 with health 761: failed, one disk snapshotted, the other's error shown (its blobUri is null);
    its blob is missing, so the first error names that disk and what to check."""
    job = ingest("06-failed-partial-76-761.txt")
    assert job.status is JobStatus.FAILED
    assert job.phase is JobPhase.DONE
    assert job.consistency is None
    assert (job.extension_code, job.health_code) == (76, 761)
    assert [e.error_code for e in job.errors] == ["UserErrorDiskBlobNotFound", "ExtensionSnapshotFailedNoNetwork",
                                                  "ExtensionSnapshotFailedRestrictedNetwork"]
    assert all(e.retryable for e in job.errors)
    assert f"LUN 0 ({DATA_URL}): BlobNotFound" in job.errors[0].error_string and OS_URL not in job.errors[0].error_string
    assert job.disks == [DiskResult(-1, OS_URL, "Completed", OS_URL + SNAP, None),
                         DiskResult(0, DATA_URL, "Failed", None,
                                    "BlobNotFound: The specified blob does not exist.")]
    assert job.backup_size_bytes == 5368709120
    assert job.end_time == FINAL_AT


def test_all_disks_refused_keeps_the_storage_error_but_never_the_signature():
    """Every disk failing with AuthenticationFailed: the reason is kept, the sig= value never is."""
    job = ingest("07-failed-all-disks-76-sas.txt")
    assert job.status is JobStatus.FAILED
    assert [e.error_code for e in job.errors] == ["ExtensionSnapshotFailedNoNetwork"]
    assert [d.status for d in job.disks] == ["Failed", "Failed"]
    for disk in job.disks:
        assert disk.error.startswith("AuthenticationFailed: Server failed to authenticate the request.")
        assert "Signature not valid in the specified time frame" in disk.error
        assert "AbCdEfSecretSig" not in disk.error and "sig=REDACTED" in disk.error
        assert disk.blob_url in (OS_URL, DATA_URL) and disk.snapshot_uri is None


def test_command_too_late_402_fails_retryable_with_no_snapshot():
    """Code 402: failed, a retry with a fresh command can help, and no disk was snapshotted."""
    job = ingest("08-failed-too-late-402.txt")
    assert job.status is JobStatus.FAILED
    [error] = job.errors
    assert error.error_code == "ExtensionCommandTooLate"
    assert error.retryable is True and error.extension_code == 402
    assert "CRP timeout limit has reached" in error.error_string
    assert [(d.status, d.error) for d in job.disks] == [("Failed", "no snapshot was taken")] * 2
    assert job.backup_size_bytes == 0


def test_generic_error_2_is_retryable():
    """Code 2 fails the job as an internal extension error that a retry can fix; the disks storage says
    do not exist are named first."""
    job = ingest("09-failed-generic-2.txt")
    assert job.status is JobStatus.FAILED
    assert [(e.error_code, e.retryable, e.extension_code) for e in job.errors] == [
        ("UserErrorDiskBlobNotFound", True, 2), ("BackUpOperationFailed", True, 2)]
    assert f"LUN -1 (OS disk) ({OS_URL})" in job.errors[0].error_string and f"LUN 0 ({DATA_URL})" in \
        job.errors[0].error_string
    assert [d.status for d in job.disks] == ["Failed", "Failed"]


def test_string_booleans_and_numbers_from_the_host_path():
    """isSuccessful "true"/"True", size and health codes as strings: read as the values they mean."""
    job = ingest("10-host-path-string-booleans.txt")
    assert_completed_two_disks(job, consistency=Consistency.FILE_SYSTEM, size=1073741824)
    assert job.health_code == 1


def test_page_blob_padding_is_ignored():
    """Trailing spaces and NULs of a page blob do not hide the status."""
    data = corpus("11-page-blob-padded.bin")
    assert len(data) % 512 == 0 and data.endswith(b"\0")
    assert_completed_two_disks(ingest("11-page-blob-padded.bin"), consistency=Consistency.FILE_SYSTEM)


def test_agent_file_form_uses_the_payload_in_substatus():
    """The agent file says 'success' outside but carries the real failure in substatus[0].name."""
    report = parse_status_blob(corpus("12-file-form-substatus.status"))
    assert report.source == "file"
    assert (report.status, report.code, report.health_code) == ("error", 76, 761)
    job = ingest("12-file-form-substatus.status")
    assert job.status is JobStatus.FAILED
    assert [d.status for d in job.disks] == ["Completed", "Failed"]
    assert job.last_report_at == FINAL_AT


def test_iso_timestamp_is_read_like_the_ms_form():
    """A status with an ISO timestampUTC gives the same record as the \\/Date(ms)\\/ form."""
    assert ingest("13-iso-timestamp.txt") == ingest("02-completed-fs-two-disks.txt")


def test_unknown_fields_are_ignored():
    """Fields a newer extension adds change nothing in the record."""
    assert ingest("14-unknown-fields.txt") == ingest("13-iso-timestamp.txt")


def test_report_of_another_task_is_noted_and_changes_nothing_else():
    """A status of an older attempt's taskId is recorded as stale; status, disks and codes stay."""
    before = dispatched_job()
    after = ingest("15-stale-other-task.txt", before)
    assert after.notes == [f"ignored a status report of task {before.job_id}_0: the current task is {before.job_id}_1"]
    after.notes = []
    assert after == before
    assert apply_report(ingest("15-stale-other-task.txt", before), parse_status_blob(
        corpus("15-stale-other-task.txt")), NOW) is None


def test_successful_run_with_a_failed_disk_is_a_warning():
    """A 'success' run that lists a failed disk completes with warnings rather than hiding it."""
    job = ingest("16-warning-partial-disks-success.txt")
    assert job.status is JobStatus.COMPLETED_WITH_WARNINGS
    assert [e.error_code for e in job.errors] == ["UserErrorDiskBlobNotFound", "ExtensionSnapshotFailedRestrictedNetwork"]
    assert [d.status for d in job.disks] == ["Completed", "Failed"]


def test_disks_are_built_from_the_report_when_the_job_has_none():
    """Without dispatch-time disks, the record lists each disk the extension reported."""
    job = ingest("06-failed-partial-76-761.txt", dispatched_job(disks=False))
    assert [(d.lun, d.blob_url, d.status) for d in job.disks] == [(0, OS_URL, "Completed"), (1, "", "Failed")]
    # Its LUN is unknown then: the missing disk is named by its entry, not as a LUN it may not be.
    assert "disk #1 (blob URL not reported): BlobNotFound" in job.errors[0].error_string


@pytest.mark.parametrize("name, kind, words", [
    ("90-truncated.txt", "json", "not JSON"),
    ("91-empty-array.txt", "shape", "empty JSON array"),
    ("92-no-code.txt", "shape", "status.code"),
    ("93-not-utf8.bin", "encoding", "not UTF-8"),
    ("94-bad-timestamp.txt", "shape", "timestampUTC"),
    ("95-empty-padding-only.bin", "empty", "empty"),
])
def test_unreadable_blobs_say_why(name, kind, words):
    """A blob that cannot be read is refused with a reason naming the problem."""
    with pytest.raises(ParseError) as caught:
        parse_status_blob(corpus(name))
    assert caught.value.kind == kind
    assert words in caught.value.reason


def test_size_and_depth_limits():
    """Oversized or absurdly nested blobs are refused without exhausting the parser."""
    with pytest.raises(ParseError, match="byte limit"):
        parse_status_blob(b"[" + b" " * (2 * 1024 * 1024) + b"]")
    with pytest.raises(ParseError) as deep:
        parse_status_blob(b"[" * 100_000 + b"]" * 100_000)
    assert deep.value.kind == "too_deep"
    nested = b'[{"version":"1.0","status":{"status":"success","code":"1","x":' + b"[" * 40 + b"]" * 40 + b"}}]"
    with pytest.raises(ParseError, match="deeper than"):
        parse_status_blob(nested)
