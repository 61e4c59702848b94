"""Job transitions: dispatch, attempts, failures the service finds itself, timeouts, and reports that
must never move a job backwards."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from shared.domain import remediation
from shared.domain.jobs import (DiskResult, JobError, JobPhase, JobStatus, apply_report, job_id_for,
                                mark_dispatched, mark_failed, mark_timed_out, next_attempt, record_unreadable,
                                slot_of_job_id, timeout_deadline)
from shared.domain.status import parse_status_blob
from tests.jobs.helpers import DISPATCHED, FINAL_AT, corpus, dispatched_job, queued_job

NOW = FINAL_AT + timedelta(minutes=1)


def report(name):
    return parse_status_blob(corpus(name))


def test_job_id_is_deterministic_and_carries_its_slot():
    """The same VM, slot and trigger always give the same id, and the id tells its slot."""
    slot = datetime(2025, 3, 1, 2, 0, 0, 123000, tzinfo=timezone.utc)
    assert job_id_for("VM1", slot) == job_id_for("vm1", slot)
    assert job_id_for("vm1", slot) != job_id_for("vm2", slot)
    assert job_id_for("vm1", slot, "OnDemand") != job_id_for("vm1", slot)
    assert slot_of_job_id(job_id_for("vm1", slot)) == slot
    assert slot_of_job_id("not-a-uuid") is None
    assert job_id_for("vm1", slot) < job_id_for("vm1", slot + timedelta(milliseconds=1))


def test_dispatch_moves_a_queued_job_and_is_idempotent():
    """Dispatching records the attempt's task and blobs once; repeating it changes nothing."""
    job = dispatched_job()
    assert job.phase is JobPhase.DISPATCHED
    assert (job.attempt, job.task_id) == (1, f"{job.job_id}_1")
    assert job.status_blob == f"{job.job_id}/1.Status.txt" and job.dispatched_at == DISPATCHED
    assert mark_dispatched(job, attempt=1, task_id=job.task_id, status_blob=job.status_blob,
                           log_blob=job.log_blob, now=NOW) is None


def test_next_attempt_never_reuses_a_dispatched_task():
    """A redelivered task gets a new attempt number once the previous one reached the VM."""
    assert next_attempt(queued_job()) == 1
    assert next_attempt(dispatched_job()) == 2


def test_newer_attempt_supersedes_and_older_attempt_is_refused():
    """Attempt 2 replaces attempt 1's task and clears its results; attempt 1 cannot come back."""
    running = apply_report(dispatched_job(), report("01-running-code4.txt"), NOW)
    second = mark_dispatched(running, attempt=2, task_id=f"{running.job_id}_2",
                             status_blob=f"{running.job_id}/2.Status.txt", log_blob="l?sig=secret", now=NOW)
    assert (second.attempt, second.task_id, second.phase) == (2, f"{running.job_id}_2", JobPhase.DISPATCHED)
    assert second.last_report_at is None and second.extension_code is None
    assert second.log_blob == "l"
    assert [d.status for d in second.disks] == ["Pending", "Pending"]
    assert second.notes == [f"attempt 1 (task {running.job_id}_1) superseded by attempt 2 (task {running.job_id}_2)"]
    assert mark_dispatched(second, attempt=1, task_id=f"{running.job_id}_1", status_blob="x", log_blob="y",
                           now=NOW) is None
    # attempt 1's final status now counts as stale
    stale = apply_report(second, report("02-completed-fs-two-disks.txt"), NOW)
    assert stale.status is JobStatus.IN_PROGRESS and len(stale.notes) == 2


def test_terminal_jobs_are_final():
    """Once a job is finished, no report, dispatch, failure or timeout changes it."""
    done = apply_report(dispatched_job(), report("02-completed-fs-two-disks.txt"), NOW)
    assert done.status is JobStatus.COMPLETED
    for name in ("01-running-code4.txt", "06-failed-partial-76-761.txt", "15-stale-other-task.txt"):
        assert apply_report(done, report(name), NOW) is None
    assert mark_failed(done, JobError("X", "y"), NOW) is None
    assert mark_timed_out(done, NOW + timedelta(days=1)) is None
    assert mark_dispatched(done, attempt=2, task_id="t", status_blob="s", log_blob="l", now=NOW) is None
    assert record_unreadable(done, "b", "bad", NOW) is None


def test_older_in_progress_report_never_overwrites_a_newer_one():
    """A 'running' report older than the last one applied is ignored."""
    newer = replace(report("01-running-code4.txt"), timestamp=FINAL_AT)
    job = apply_report(dispatched_job(), newer, NOW)
    assert apply_report(job, report("01-running-code4.txt"), NOW) is None


def test_final_report_wins_over_a_running_report_whatever_the_clocks_say():
    """A result stamped earlier than a 'running' report (skewed clock) still finishes the job."""
    late_running = replace(report("01-running-code4.txt"), timestamp=FINAL_AT + timedelta(hours=1))
    job = apply_report(dispatched_job(), late_running, NOW)
    done = apply_report(job, report("02-completed-fs-two-disks.txt"), NOW)
    assert done.status is JobStatus.COMPLETED and done.last_report_at == FINAL_AT


def test_service_side_failure_carries_its_remediation():
    """An unknown VM fails the job with the catalogue's title and recommendations."""
    fix = remediation.for_service_error(remediation.VM_NOT_FOUND)
    failed = mark_failed(queued_job(), JobError.from_remediation(fix, detail="vm1 is not in the inventory"), NOW)
    assert failed.status is JobStatus.FAILED and failed.phase is JobPhase.DONE and failed.end_time == NOW
    [error] = failed.errors
    assert error.error_code == "UserErrorVmNotFound" and error.retryable is False
    assert error.recommendations == ["Re-create the VM, or stop protection for it."]
    assert "vm1 is not in the inventory" in error.error_string


def test_timeout_after_the_extension_window():
    """A job with no result 150 minutes after dispatch fails with GuestAgentSnapshotTaskStatusError."""
    job = apply_report(dispatched_job(), report("01-running-code4.txt"), NOW)
    assert timeout_deadline(job) == DISPATCHED + timedelta(minutes=150)
    assert mark_timed_out(job, DISPATCHED + timedelta(minutes=149)) is None
    failed = mark_timed_out(job, DISPATCHED + timedelta(minutes=150))
    assert failed.status is JobStatus.FAILED
    [error] = failed.errors
    assert error.error_code == "GuestAgentSnapshotTaskStatusError" and error.retryable
    assert "reported it was running" in error.error_string
    assert any("waagent" in r for r in error.recommendations)
    assert [d.status for d in failed.disks] == ["Failed", "Failed"]


def test_unreadable_blob_is_recorded_once_and_cleared_by_a_good_report():
    """A garbled blob marks the running job; the same blob again adds nothing; a good one supersedes it."""
    job = record_unreadable(dispatched_job(), "j/1.Status.txt", "status blob is not JSON", NOW)
    assert [e.error_code for e in job.errors] == ["StatusBlobUnreadable"]
    assert job.notes == ["status blob j/1.Status.txt unreadable: status blob is not JSON"]
    assert job.status is JobStatus.IN_PROGRESS
    assert record_unreadable(job, "j/1.Status.txt", "status blob is not JSON", NOW) is None
    done = apply_report(job, report("02-completed-fs-two-disks.txt"), NOW)
    assert done.status is JobStatus.COMPLETED and done.errors == []


def test_dispatch_after_an_early_report_keeps_the_results():
    """If the VM reported before dispatch was recorded, recording it keeps the reported state."""
    job = queued_job()
    early = apply_report(job, report("02-completed-fs-two-disks.txt"), NOW)
    assert early.status is JobStatus.COMPLETED
    running = apply_report(job, report("01-running-code4.txt"), NOW)
    later = mark_dispatched(running, attempt=1, task_id=f"{job.job_id}_1", status_blob="s", log_blob="l",
                            now=NOW, disks=[DiskResult(-1, "u")])
    assert later.phase is JobPhase.RUNNING and later.disks == running.disks
