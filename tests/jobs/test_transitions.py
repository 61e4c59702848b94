"""Job transitions: dispatch, attempts, failures the service finds itself, timeouts, and reports that
must never move a job backwards."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from shared.domain import remediation
from shared.domain.job_transitions import (MAX_ATTEMPTS, RETRY_BACKOFF, apply_report, mark_dispatched, mark_failed,
                                           mark_not_dispatched, mark_retrying, mark_timed_out, next_attempt_at,
                                           pending_retry, record_unreadable, retry_at, timeout_deadline)
from shared.domain.jobs import AttemptOutcome, DiskResult, JobError, JobPhase, JobStatus, job_id_for, slot_of_job_id
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


def _dispatch_error(detail="agent busy"):
    return JobError.from_remediation(remediation.for_service_error(remediation.DISPATCH_FAILED), detail=detail)


def test_a_command_not_handed_over_waits_for_the_next_attempt_then_fails_at_the_limit():
    """A dispatch that fails is retried as new attempts after the pauses; the third failure fails the
    job with the last error and advice, and every attempt is on the record."""
    job = dispatched_job()
    at = next_attempt_at(job, NOW)
    assert at == NOW + RETRY_BACKOFF[0]
    waiting = mark_not_dispatched(job, attempt=1, error=_dispatch_error(), now=NOW, retry_at=at)
    assert (waiting.status, waiting.phase, waiting.attempt, waiting.task_id) == (
        JobStatus.IN_PROGRESS, JobPhase.QUEUED, 2, None)
    assert pending_retry(waiting).retry_at == at
    [record] = waiting.attempts
    assert (record.attempt, record.task_id, record.outcome, record.error_code, record.retry_at) == (
        1, f"{job.job_id}_1", AttemptOutcome.NOT_DISPATCHED, remediation.DISPATCH_FAILED, at)
    assert mark_not_dispatched(waiting, attempt=1, error=_dispatch_error(), now=NOW, retry_at=at) is None
    third = replace(waiting, attempt=MAX_ATTEMPTS)
    assert next_attempt_at(third, NOW) is None
    failed = mark_not_dispatched(third, attempt=MAX_ATTEMPTS, error=_dispatch_error("still busy"), now=NOW,
                                 retry_at=None)
    assert failed.status is JobStatus.FAILED and failed.end_time == NOW
    assert failed.errors[0].error_code == remediation.DISPATCH_FAILED and "still busy" in failed.errors[0].error_string
    assert failed.errors[0].recommendations
    assert [r.attempt for r in failed.attempts] == [1, MAX_ATTEMPTS] and pending_retry(failed) is None


def test_a_retried_failure_is_a_structured_record_and_its_blob_again_changes_nothing():
    """A retryable failure records attempt 1 (task, code, retry time) as data; the same status blob read
    again later is recognised from that record, not from the notes."""
    failure = report("07-failed-all-disks-76-sas.txt")
    job = dispatched_job()
    at = retry_at(job, failure, NOW, attempt=1)
    retrying = mark_retrying(job, failure, NOW, at, attempt=1)
    [record] = retrying.attempts
    assert (record.attempt, record.task_id, record.outcome, record.extension_code, record.retry_at) == (
        1, f"{job.job_id}_1", AttemptOutcome.FAILED, 76, at)
    assert record.dispatched_at == DISPATCHED
    assert apply_report(replace(retrying, notes=[]), failure, NOW, attempt=1) is None


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
    assert [(r.attempt, r.outcome) for r in second.attempts] == [(1, AttemptOutcome.SUPERSEDED)]
    assert mark_dispatched(second, attempt=1, task_id=f"{running.job_id}_1", status_blob="x", log_blob="y",
                           now=NOW) is None
    # attempt 1's running report now counts as stale; its success would end the job (next test)
    stale = apply_report(second, report("01-running-code4.txt"), NOW)
    assert stale.status is JobStatus.IN_PROGRESS and len(stale.notes) == 2


def test_an_earlier_attempts_success_is_never_discarded():
    """Attempt 1's command was taken for not handed over (its answer lost), attempt 2 waits; then
    attempt 1's success arrives: it ends the job with attempt 1's task, blobs and snapshots, attempt 2
    is recorded as overtaken, and its task can no longer dispatch."""
    job = dispatched_job()
    waiting = mark_not_dispatched(job, attempt=1, error=_dispatch_error(), now=NOW,
                                  retry_at=next_attempt_at(job, NOW))
    blobs = (f"{job.job_id}/1.Status.txt", f"{job.job_id}/1.Logs.txt")
    done = apply_report(waiting, report("02-completed-fs-two-disks.txt"), NOW, attempt=1, blobs=blobs)
    assert (done.status, done.phase, done.attempt, done.task_id, done.errors) == (
        JobStatus.COMPLETED, JobPhase.DONE, 1, f"{job.job_id}_1", [])
    assert (done.status_blob, done.log_blob, done.dispatched_at) == (*blobs, DISPATCHED)
    assert [d.status for d in done.disks] == ["Completed", "Completed"] and all(d.snapshot_uri for d in done.disks)
    [overtaken] = done.attempts
    assert (overtaken.attempt, overtaken.task_id, overtaken.outcome, overtaken.dispatched_at) == (
        2, f"{job.job_id}_2", AttemptOutcome.OVERTAKEN, None)
    assert "attempt 1" in done.notes[-1] and "success" in done.notes[-1]
    assert mark_dispatched(done, attempt=2, task_id=f"{job.job_id}_2", status_blob="s", log_blob="l", now=NOW) is None
    assert apply_report(done, report("02-completed-fs-two-disks.txt"), NOW, attempt=1, blobs=blobs) is None


def test_a_superseded_attempts_success_overtakes_the_running_one():
    """Attempt 2 was dispatched over a silent attempt 1; attempt 1's success ends the job first, and
    attempt 2's own success afterwards changes nothing."""
    second = mark_dispatched(dispatched_job(), attempt=2, task_id=f"{dispatched_job().job_id}_2",
                             status_blob="s2", log_blob="l2", now=NOW)
    done = apply_report(second, report("02-completed-fs-two-disks.txt"), NOW, attempt=1)
    assert (done.status, done.attempt, done.task_id) == (JobStatus.COMPLETED, 1, f"{second.job_id}_1")
    assert [(r.attempt, r.outcome, r.dispatched_at) for r in done.attempts] == [(2, AttemptOutcome.OVERTAKEN, NOW)]
    later = parse_status_blob(corpus("02-completed-fs-two-disks.txt").replace(b"_1", b"_2"))
    assert apply_report(done, later, NOW, attempt=2) is None


def test_an_earlier_attempts_running_or_failed_report_stays_stale():
    """Only a final success of an attempt the job may not have heard from changes the job: a running
    report of it, or any report of an attempt whose failure is on the record, is noted or ignored."""
    job = dispatched_job()
    waiting = mark_not_dispatched(job, attempt=1, error=_dispatch_error(), now=NOW,
                                  retry_at=next_attempt_at(job, NOW))
    running = apply_report(waiting, report("01-running-code4.txt"), NOW, attempt=1)
    assert (running.status, running.attempt, running.phase) == (JobStatus.IN_PROGRESS, 2, JobPhase.QUEUED)
    failure = report("06-failed-partial-76-761.txt")
    retrying = mark_retrying(job, failure, NOW, retry_at(job, failure, NOW, attempt=1), attempt=1)
    assert apply_report(retrying, report("02-completed-fs-two-disks.txt"), NOW, attempt=1) is None


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
