"""A command the VM got although the worker was told it had not (the answer lost on the way back): the
VM's success is the job's result, whichever path reads it (the blob trigger or the sweep), and the
retry the worker scheduled meanwhile hands nothing more to the VM, so the VM keeps one snapshot set."""
from __future__ import annotations

import pytest

from shared.domain.jobs import AttemptOutcome, JobPhase, JobStatus
from shared.domain.recovery import recovery_point_name
from shared.domain.status import ParseError, parse_status_blob
from shared.errors import NotFoundError, TransientError
from shared.services.dispatch import Outcome, handle_snapshot_task
from shared.services.protection import backup_now, enable_protection
from shared.services.sweeping import sweep_stale_jobs
from tests.faults.conftest import commands_handed_to, make_vms, peek_tasks, snapshots_per_disk
from tests.polling import eventually


class AnswerLost:
    """The real local dispatcher, whose first call hands the command to the VM and then reports a
    transient failure, as a control-plane call that timed out after the platform accepted it does."""

    def __init__(self, real) -> None:
        self.real = real
        self.calls = 0

    def dispatch(self, vm, command) -> None:
        self.calls += 1
        self.real.dispatch(vm, command)
        if self.calls == 1:
            raise TransientError(f"the agent of VM {vm.name} did not answer in time")

    def __getattr__(self, name):
        return getattr(self.real, name)


def _final_report_written(svc, blob: str) -> bool:
    try:
        return not parse_status_blob(svc.status_blobs.read(blob)).in_progress
    except (NotFoundError, ParseError):          # not there yet, or still the empty blob
        return False


@pytest.mark.parametrize("reader", ["blob trigger", "sweep"])
def test_a_command_whose_answer_was_lost_completes_its_job_once(stack, reader):
    """Attempt 1 reaches the VM but the worker is told it did not, so it schedules attempt 2 for five
    minutes on. Attempt 1's success ends the job (task _1, Completed, a recovery point); attempt 2's task,
    once due, dispatches nothing; each disk has one snapshot."""
    svc, host = stack
    svc.dispatcher = AnswerLost(svc.dispatcher)
    [vm] = make_vms(svc, "unseen", 1)
    enable_protection(svc, vm.name, initial_backup=False)
    job = backup_now(svc, vm.name, retain_until=None)

    host.drain_queue("dispatch_snapshot", max_wait=0.5)          # the real trigger, attempt 1
    waiting = svc.jobs.get(job.job_id)
    assert (waiting.phase, waiting.attempt, waiting.attempts[0].outcome) == (
        JobPhase.QUEUED, 2, AttemptOutcome.NOT_DISPATCHED)
    blob = f"{job.job_id}/1.Status.txt"
    assert eventually(lambda: _final_report_written(svc, blob), timeout=60), "the VM never wrote its result"

    if reader == "blob trigger":
        host.scan_blobs("ingest_status")
    else:
        assert sweep_stale_jobs(svc).reingested == [job.job_id]

    done = svc.jobs.get(job.job_id)
    assert (done.status, done.attempt, done.task_id, done.status_blob) == (
        JobStatus.COMPLETED, 1, f"{job.job_id}_1", blob)
    assert [(a.attempt, a.outcome) for a in done.attempts] == [(2, AttemptOutcome.OVERTAKEN)]
    assert [d.status for d in done.disks] == ["Completed"] * len(vm.disks)
    assert svc.recovery_points.get(vm.name, recovery_point_name(job.job_id)) is not None

    [due] = [m for m in peek_tasks(svc) if str(m.message_id) == f"{job.job_id}_2"]
    svc.clock.current = due.scheduled_enqueue_time_utc          # time passes until attempt 2 is due
    outcome = handle_snapshot_task(svc, b"".join(due.body), message_id=str(due.message_id), delivery_count=1)
    assert outcome.outcome is Outcome.DUPLICATE, outcome
    assert (svc.dispatcher.calls, commands_handed_to(svc, vm)) == (1, 1)
    assert snapshots_per_disk(svc, [vm]) == {disk.name: 1 for disk in vm.disks}
