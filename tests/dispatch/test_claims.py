"""One backup of a VM at a time and the on-demand limits, held by the VM's claim under bursts and
redelivery: tasks delivered to the worker from many threads at once, on the fakes and on the Table
stores (the status container, SAS and disk checks on Azurite in both)."""
from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from shared.adapters.table_claims import TableBackupClaims
from shared.adapters.table_jobs import TableJobStore
from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain import remediation
from shared.domain.claims import CLAIM_GRACE
from shared.domain.jobs import Job, JobPhase, JobStatus, job_id_for
from shared.domain.task import SnapshotTask, Trigger
from shared.errors import TransientError
from shared.services.claims import take_claim
from shared.services.dispatch import Outcome, handle_snapshot_task
from tests.fakes import (InMemoryBackupClaims, InMemoryInventory, InMemoryJobStore, RecordingDispatcher,
                         RecordingTaskQueue)

# Mid-morning UTC: a burst's slots, a few seconds apart, all fall on one UTC day.
NOW = datetime.now(timezone.utc).replace(hour=10, minute=0, second=0, microsecond=0)
BURST = 6


@pytest.fixture
def vm(make_vm):
    return make_vm()


@pytest.fixture(params=["fakes", "tables"])
def svc(request, make_settings, vm):
    """The worker's services: jobs and claims in memory, or in Azurite's tables."""
    settings = make_settings()
    stores = {}
    if request.param == "fakes":
        stores = dict(jobs=InMemoryJobStore(), claims=InMemoryBackupClaims())
    else:
        from azure.data.tables import TableServiceClient

        tables = TableServiceClient.from_connection_string(settings.storage.connection_string)
        stores = dict(jobs=TableJobStore(tables, settings.table("jobs")),
                      claims=TableBackupClaims(tables, settings.table("claims")))
    return Services(settings, clock=FixedClock(NOW), inventory=InMemoryInventory(vm), dispatcher=RecordingDispatcher(),
                    task_queue=RecordingTaskQueue(), **stores)


def _task(vm, trigger: Trigger, slot: datetime) -> SnapshotTask:
    return SnapshotTask(job_id=job_id_for(vm.name, slot, trigger.value), attempt=1, vm_name=vm.name, slot=slot,
                        trigger=trigger, policy_name="DefaultPolicy", retain_until=slot + timedelta(days=30))


def _on_demand_burst(vm, start: datetime, count: int = BURST) -> list[SnapshotTask]:
    """``count`` on-demand tasks of the VM put on the queue by hand, a second apart."""
    return [_task(vm, Trigger.ON_DEMAND, start + timedelta(seconds=n)) for n in range(count)]


def _deliver_at_once(svc, tasks: list[SnapshotTask], delivery_count: int = 1):
    """Every task handed to the worker by its own thread, all released together."""
    start = threading.Barrier(len(tasks))

    def deliver(task: SnapshotTask):
        start.wait(timeout=60)
        return handle_snapshot_task(svc, task.to_json().encode(), message_id=task.message_id,
                                    delivery_count=delivery_count)

    with ThreadPoolExecutor(len(tasks)) as pool:
        return list(pool.map(deliver, tasks))


def _finish(svc, job_id: str, status: JobStatus = JobStatus.COMPLETED) -> None:
    svc.jobs.update(job_id, lambda j: dataclasses.replace(j, status=status, phase=JobPhase.DONE,
                                                          end_time=svc.clock.now()))


def test_a_burst_of_on_demand_tasks_for_one_vm_runs_one_backup(svc, vm):
    """Six on-demand tasks for one VM delivered at once: one backup reaches the VM, the other five fail
    with UserErrorBackupOperationInProgress naming it, as az refuses a backup-now while one runs."""
    tasks = _on_demand_burst(vm, NOW)
    outcomes = _deliver_at_once(svc, tasks)
    [running] = [o.job_id for o in outcomes if o.outcome is Outcome.DISPATCHED]
    assert [c.task_id for _, c in svc.dispatcher.sent] == [f"{running}_1"]
    refused = [svc.jobs.get(t.job_id) for t in tasks if t.job_id != running]
    assert {(j.status, j.errors[0].error_code) for j in refused} == {
        (JobStatus.FAILED, remediation.OPERATION_IN_PROGRESS)}
    assert all(running in j.errors[0].error_string and j.errors[0].recommendations for j in refused)
    claim = svc.claims.get(vm.name)
    assert (claim.holder, claim.on_demand) == (running, (running,))


def test_bursts_of_on_demand_tasks_give_at_most_three_successful_backups_a_day(svc, vm):
    """A burst after each backup finished: three bursts give three backups; the fourth burst, and one
    the next UTC day, find the limit, then a fresh day's allowance."""
    ran = []
    for burst in range(4):
        tasks = _on_demand_burst(vm, svc.clock.now())
        outcomes = _deliver_at_once(svc, tasks)
        ran += [o.job_id for o in outcomes if o.outcome is Outcome.DISPATCHED]
        for job_id in ran:
            _finish(svc, job_id)
        svc.clock.advance(timedelta(minutes=10))
    assert len(ran) == len(svc.dispatcher.sent) == 3
    last = [svc.jobs.get(t.job_id) for t in tasks]
    assert {(j.status, j.errors[0].error_code) for j in last} == {(JobStatus.FAILED, remediation.ON_DEMAND_LIMIT)}
    assert "3 successful" in last[0].errors[0].error_string
    svc.clock.current = NOW.replace(hour=0) + timedelta(days=1, minutes=1)
    outcomes = _deliver_at_once(svc, _on_demand_burst(vm, svc.clock.now()))
    assert [o.outcome for o in outcomes].count(Outcome.DISPATCHED) == 1


def test_failed_on_demand_backups_count_as_attempts_up_to_nine_a_day(svc, vm):
    """Accepted on-demand backups that failed on the VM count against the nine attempts of a day."""
    for _ in range(9):
        [task] = _on_demand_burst(vm, svc.clock.now(), 1)
        assert _deliver_at_once(svc, [task])[0].outcome is Outcome.DISPATCHED
        _finish(svc, task.job_id, JobStatus.FAILED)
        svc.clock.advance(timedelta(minutes=10))
    [tenth] = _on_demand_burst(vm, svc.clock.now(), 1)
    assert _deliver_at_once(svc, [tenth])[0].outcome is Outcome.FAILED
    assert "9 on-demand backup attempts" in svc.jobs.get(tenth.job_id).errors[0].error_string


def test_a_burst_of_every_trigger_runs_one_backup_and_the_rest_give_way_or_fail(svc, vm):
    """A scheduled, an initial and four on-demand tasks of one VM at once: one runs; a scheduled or
    initial loser is cancelled naming the backup that runs, an on-demand one fails with the reason."""
    tasks = [_task(vm, Trigger.SCHEDULED, NOW), _task(vm, Trigger.INITIAL, NOW - timedelta(hours=1))]
    tasks += _on_demand_burst(vm, NOW, 4)
    outcomes = _deliver_at_once(svc, tasks)
    [running] = [o.job_id for o in outcomes if o.outcome is Outcome.DISPATCHED]
    assert len(svc.dispatcher.sent) == 1
    for task in tasks:
        job = svc.jobs.get(task.job_id)
        if task.job_id == running:
            assert job.phase is JobPhase.DISPATCHED
        elif task.trigger is Trigger.ON_DEMAND:
            assert job.status is JobStatus.FAILED and running in job.errors[0].error_string
        else:
            assert job.status is JobStatus.CANCELLED and running in " ".join(job.notes)


def test_copies_and_redeliveries_of_the_holders_task_are_its_own(svc, vm):
    """The holder's task delivered again (a worker died after taking the claim, copies racing) finds
    the claim its own: one dispatch, and no copy fails or gives way."""
    task = _task(vm, Trigger.ON_DEMAND, NOW)
    job = Job.new_backup(vm_name=vm.name, slot=NOW, now=NOW, trigger=Trigger.ON_DEMAND.value)
    svc.jobs.create_if_absent(job)
    assert take_claim(svc, job, NOW) is None            # the first delivery took the VM and died
    outcomes = _deliver_at_once(svc, [task] * 4, delivery_count=2)
    assert sorted(o.outcome.value for o in outcomes) == ["dispatched", "duplicate", "duplicate", "duplicate"]
    assert svc.jobs.get(job.job_id).status is JobStatus.IN_PROGRESS and len(svc.dispatcher.sent) == 1
    assert svc.claims.get(vm.name).on_demand == (job.job_id,)


def test_the_holders_retry_keeps_the_vm_while_it_waits(svc, vm):
    """While the holder waits for its retry, another backup of the VM is refused; its retry then runs."""
    first = _task(vm, Trigger.SCHEDULED, NOW)
    svc.dispatcher.errors.append(TransientError("agent busy"))
    assert _deliver_at_once(svc, [first])[0].outcome is Outcome.RETRYING
    [retry] = svc.task_queue.sent
    other = _task(vm, Trigger.ON_DEMAND, NOW + timedelta(minutes=1))
    assert _deliver_at_once(svc, [other])[0].outcome is Outcome.FAILED
    assert first.job_id in svc.jobs.get(other.job_id).errors[0].error_string
    assert _deliver_at_once(svc, [retry])[0].outcome is Outcome.DISPATCHED


def test_a_holder_that_stopped_blocking_lets_the_next_backup_run(svc, vm):
    """A holder whose job is past its deadline (its worker died) holds the VM no longer: no wedge."""
    stuck = Job.new_backup(vm_name=vm.name, slot=NOW - timedelta(hours=3), now=NOW - timedelta(hours=3))
    svc.jobs.create_if_absent(stuck)
    assert take_claim(svc, stuck, NOW - timedelta(hours=3)) is None
    task = _task(vm, Trigger.SCHEDULED, NOW)
    assert _deliver_at_once(svc, [task])[0].outcome is Outcome.DISPATCHED
    assert svc.claims.get(vm.name).holder == task.job_id


def test_a_holder_whose_job_was_never_written_holds_the_vm_only_briefly(svc, vm):
    """backup-now claims before it writes its job; if it died in between, the VM is free after the grace."""
    ghost = Job.new_backup(vm_name=vm.name, slot=NOW, now=NOW, trigger=Trigger.ON_DEMAND.value)
    assert take_claim(svc, ghost, NOW) is None
    task = _task(vm, Trigger.SCHEDULED, NOW)
    assert _deliver_at_once(svc, [task])[0].outcome is Outcome.DUPLICATE
    assert svc.jobs.get(task.job_id).status is JobStatus.CANCELLED
    later = _task(vm, Trigger.SCHEDULED, NOW + CLAIM_GRACE)
    svc.clock.current = NOW + CLAIM_GRACE
    assert _deliver_at_once(svc, [later])[0].outcome is Outcome.DISPATCHED
