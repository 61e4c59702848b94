"""A dispatch that keeps failing for a reason that may pass: the trigger settles the message, the next
attempt is a scheduled message no earlier than the retry pause, and after the attempt limit the job
is Failed with the last error and what to do."""
from __future__ import annotations

import json
from datetime import timedelta

from azure.servicebus import ServiceBusSubQueue

from shared.domain import remediation
from shared.domain.job_transitions import MAX_ATTEMPTS, RETRY_BACKOFF
from shared.domain.jobs import AttemptOutcome, JobPhase, JobStatus
from shared.errors import TransientError
from shared.services.dispatch import Outcome, handle_snapshot_task
from shared.services.protection import backup_now, enable_protection
from tests.faults.conftest import make_vms, peek_tasks


class UnreachableAgent:
    """The VM's control plane times out on every command (what the arm dispatcher reports as transient)."""

    def __init__(self) -> None:
        self.calls = 0

    def dispatch(self, vm, command) -> None:
        self.calls += 1
        raise TransientError(f"the VM agent of {vm.name} did not answer (call {self.calls})")


def test_a_transient_dispatch_failure_is_retried_after_the_pause_then_fails_with_advice(stack, capsys):
    """The worker completes the message and schedules attempt 2 for +5 min and attempt 3 for +15 min (not
    earlier); when attempt 3 fails too, the job is Failed with the last reason and recommendations, and
    `job show` lists the three attempts."""
    svc, host = stack
    svc.dispatcher = UnreachableAgent()
    [vm] = make_vms(svc, "flaky", 1)
    enable_protection(svc, vm.name, initial_backup=False)
    job = backup_now(svc, vm.name, retain_until=None)

    host.drain_queue("dispatch_snapshot", max_wait=0.5)          # the real trigger, attempt 1
    failed_at = svc.clock.now()
    assert svc.dispatcher.calls == 1
    assert peek_tasks(svc, ServiceBusSubQueue.DEAD_LETTER) == []
    [waiting] = peek_tasks(svc)
    assert str(waiting.message_id) == f"{job.job_id}_2" and waiting.delivery_count in (0, None, 1)
    assert waiting.scheduled_enqueue_time_utc == failed_at + RETRY_BACKOFF[0]
    host.drain_queue("dispatch_snapshot", max_wait=0.5)          # not due: nothing runs early
    assert svc.dispatcher.calls == 1

    for attempt in range(2, MAX_ATTEMPTS + 1):
        [due] = [m for m in peek_tasks(svc) if str(m.message_id) == f"{job.job_id}_{attempt}"]
        assert due.scheduled_enqueue_time_utc - svc.clock.now() >= RETRY_BACKOFF[attempt - 2]
        svc.clock.current = due.scheduled_enqueue_time_utc             # time passes until it is due
        outcome = handle_snapshot_task(svc, b"".join(due.body), message_id=str(due.message_id), delivery_count=1)
        expected = Outcome.RETRYING if attempt < MAX_ATTEMPTS else Outcome.FAILED
        assert outcome.outcome is expected, outcome

    assert svc.dispatcher.calls == MAX_ATTEMPTS
    assert not [m for m in peek_tasks(svc) if str(m.message_id) == f"{job.job_id}_{MAX_ATTEMPTS + 1}"]
    final = svc.jobs.get(job.job_id)
    assert (final.status, final.phase, final.attempt) == (JobStatus.FAILED, JobPhase.DONE, MAX_ATTEMPTS)
    error = final.errors[0]
    assert error.error_code == remediation.DISPATCH_FAILED
    assert f"(call {MAX_ATTEMPTS})" in error.error_string and f"attempt {MAX_ATTEMPTS} of {MAX_ATTEMPTS}" in error.error_string
    assert error.recommendations
    assert [(a.attempt, a.outcome) for a in final.attempts] == [
        (n, AttemptOutcome.NOT_DISPATCHED) for n in range(1, MAX_ATTEMPTS + 1)]
    gaps = [b.ended_at - a.ended_at for a, b in zip(final.attempts, final.attempts[1:])]
    assert gaps == list(RETRY_BACKOFF[: MAX_ATTEMPTS - 1]) and all(g >= timedelta(minutes=5) for g in gaps)
    item = svc.protected_items.get(vm.name)
    assert item.in_progress_job_id == job.job_id      # a failed job no longer blocks the next backup

    from shared.cli import main

    assert main(["job", "show", job.job_id]) == 0
    shown = capsys.readouterr().out
    assert "Attempts" in shown and shown.count("NotDispatched") == MAX_ATTEMPTS
    assert main(["job", "show", job.job_id, "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [(a["attempt"], a["outcome"], a["errorCode"]) for a in document["properties"]["attempts"]] == [
        (n, "NotDispatched", remediation.DISPATCH_FAILED) for n in range(1, MAX_ATTEMPTS + 1)]
