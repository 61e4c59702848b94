"""The two reads the compliance report makes, in the JobStore and RecoveryPointStore contracts: a query's
jobs as outcomes (every match, its first error, none else), and a VM's newest Available point up to a time."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from shared.domain.jobs import Job, JobError, JobPhase, JobStatus
from shared.domain.recovery import PointState, RecoveryPoint
from shared.domain.task import Trigger
from shared.ports import JobQuery

T0 = datetime(2025, 6, 2, 22, 30, tzinfo=timezone.utc)


def test_outcomes_are_every_matching_job_with_its_first_error(job_store):
    """Backups of the window, of any VM and shard, with status and first error; other operations and
    older jobs are not outcomes of the query."""
    error = JobError(error_code="E1", error_string="first", recommendations=["fix"])
    made = []
    for n in range(12):
        job = Job.new_backup(vm_name=f"vm{n}", slot=T0 - timedelta(days=n % 4), now=T0)
        job = replace(job, status=JobStatus.FAILED if n % 3 == 0 else JobStatus.COMPLETED, phase=JobPhase.DONE,
                      errors=[error, JobError(error_code="E2", error_string="second")] if n % 3 == 0 else [])
        job_store.create_if_absent(job)
        made.append(job)
    job_store.create_if_absent(replace(Job.new_backup(vm_name="vm0", slot=T0, now=T0, trigger=Trigger.ON_DEMAND),
                                       operation="Retention"))
    since = T0 - timedelta(days=2)
    got = {o.job_id: o for o in job_store.outcomes(JobQuery(operation="Backup", since=since))}
    wanted = {j.job_id: j for j in made if j.slot >= since}
    assert set(got) == set(wanted)
    for job_id, outcome in got.items():
        job = wanted[job_id]
        assert (outcome.vm_name, outcome.slot, outcome.status) == (job.vm_name, job.slot, job.status)
        assert outcome.error == (error if job.errors else None)
    one = list(job_store.outcomes(JobQuery(vm_name="VM3", operation="Backup")))
    assert [o.job_id for o in one] == [made[3].job_id]


def test_the_newest_available_point_up_to_a_time(point_store):
    """Unavailable and later points are passed over; a VM without one gives None."""
    def point(name, hours, state=PointState.AVAILABLE):
        return RecoveryPoint(name=name, vm_name="Vm-1", created_at=T0 + timedelta(hours=hours), job_id=f"j-{name}",
                             state=state)

    for p in (point("a", -48), point("b", -24), point("c", -1, PointState.UNAVAILABLE), point("d", 5)):
        point_store.add_if_absent(p)
    assert point_store.newest_available("vm-1", until=T0).name == "b"
    assert point_store.newest_available("VM-1", until=T0 + timedelta(hours=5)).name == "d"
    assert point_store.newest_available("vm-1", until=T0 - timedelta(days=3)) is None
    assert point_store.newest_available("other", until=T0) is None
    point_store.add_if_absent(replace(point("e", -30), vm_name="vm-2", name="e"))
    recent = point_store.recent_available(T0 - timedelta(hours=36), T0)
    assert {vm: p.name for vm, p in recent.items()} == {"vm-1": "b", "vm-2": "e"}
    assert point_store.recent_available(T0 - timedelta(hours=12), T0) == {}
