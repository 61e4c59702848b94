"""Retention of a managed-disk VM against the local Compute endpoint: a VM restore point deleted behind the
service's back makes its recovery point Unavailable, and the older point it would have deleted stays."""
from __future__ import annotations

from datetime import timedelta

from shared.domain.jobs import JobStatus
from shared.domain.recovery import PointState, recovery_point_name
from shared.services.retention import ProblemKind, run_retention
from tests.restorepoints.conftest import deliver, task_for, track_until_done


def _backup(svc, vm):
    task = task_for(svc, vm.name)
    deliver(svc, task)
    job = track_until_done(svc, task.job_id)
    assert job.status is JobStatus.COMPLETED, job.errors
    return svc.recovery_points.get(vm.name, recovery_point_name(job.job_id))


def test_a_restore_point_deleted_by_hand_makes_its_point_unavailable_and_the_older_one_stays(svc, compute, md_vm):
    """Two backups; someone deletes the newer VM restore point in the portal. After both expire, retention
    finds the newer one gone (Unavailable, reported) and keeps the older one, with its restore point."""
    vm = md_vm()
    older = _backup(svc, vm)
    svc.clock.advance(timedelta(hours=1))
    newer = _backup(svc, vm)
    assert svc.restore_points.delete(newer.restore_point_id)       # by hand, outside vmsnap
    svc.clock.advance(timedelta(days=60))

    result = run_retention(svc, vm.name)

    assert result.marked_unavailable == [newer.name]
    assert [(p.kind, p.point_name) for p in result.plan.problems] == [(ProblemKind.DATA_MISSING, newer.name)]
    assert svc.recovery_points.get(vm.name, older.name).state is PointState.AVAILABLE
    assert [rp.id.lower() for rp in compute.restore_points(vm.name)] == [older.restore_point_id.lower()]
    gone = svc.recovery_points.get(vm.name, newer.name)
    assert gone.state is PointState.DELETED and "no longer exists" in gone.unavailable_reason
