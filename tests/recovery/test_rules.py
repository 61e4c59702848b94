"""Recording, soft delete, stopped protection, on-demand points, backfill, dry runs and policy formats, on fakes."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from shared.clock import FixedClock
from shared.domain.jobs import JobStatus
from shared.domain.policy import Policy, PointSelector, WeekOfMonth, Weekday, default_policy
from shared.domain.protection import ProtectionState
from shared.domain.recovery import PointState, recovery_point_name
from shared.errors import ValidationError
from shared.services.ingestion import IngestResult, ingest_status_blob
from shared.services.retention import plan_retention, run_retention
from tests.jobs.helpers import corpus, dispatched_job, fake_services
from tests.recovery.test_retention_simulation import START, VM, backup, make_services


def _svc(days: int = 10):
    clock = FixedClock(START)
    svc = make_services(replace(default_policy(), name="SimPolicy"), clock)
    jobs = [backup(svc, START + timedelta(days=d)) for d in range(days)]
    return svc, clock, jobs


def _available(svc) -> list[str]:
    return [p.name for p in svc.recovery_points.list_for_vm(VM) if p.state is PointState.AVAILABLE]


def test_ingesting_a_completed_status_records_one_point_even_twice():
    """The blob trigger firing twice for a completed backup leaves exactly one restorable point."""
    svc = fake_services()
    job = dispatched_job()
    svc.jobs.create_if_absent(job)
    blob = f"{job.job_id}/1.Status.txt"
    first = ingest_status_blob(svc, blob, corpus("02-completed-fs-two-disks.txt"), '"e"')
    ingest_status_blob(svc, blob, corpus("02-completed-fs-two-disks.txt"), '"e"')
    assert first.result is IngestResult.APPLIED and first.job.status is JobStatus.COMPLETED
    (point,) = svc.recovery_points.list_for_vm(job.vm_name)
    assert point.name == recovery_point_name(job.job_id) and point.job_id == job.job_id
    assert [d.lun for d in point.disks] == [d.lun for d in first.job.disks]
    assert all("sig=" not in d.snapshot and "?snapshot=" in d.snapshot for d in point.disks)


def test_a_failed_job_records_no_point():
    """A failed backup is not restorable: no recovery point appears for it."""
    svc = fake_services()
    job = dispatched_job()
    svc.jobs.create_if_absent(job)
    ingest_status_blob(svc, f"{job.job_id}/1.Status.txt", corpus("09-failed-generic-2.txt"), '"e"')
    assert svc.recovery_points.list_for_vm(job.vm_name) == []


def test_a_soft_deleted_item_keeps_its_points_14_days_then_loses_all():
    """disable --delete-backup-data: points stay for 14 days, then every one goes, the latest too."""
    svc, clock, _ = _svc()
    deleted_at = START + timedelta(days=12)
    svc.protected_items.update(VM, lambda i: replace(i, state=ProtectionState.SOFT_DELETED, deleted_at=deleted_at))
    clock.current = deleted_at + timedelta(days=13)
    assert run_retention(svc).points_deleted == [] and len(_available(svc)) == 10
    clock.current = deleted_at + timedelta(days=14)
    assert plan_retention(svc).points and {a.rule.value for a in plan_retention(svc).points} == {"SoftDeletePurge"}
    run_retention(svc)
    assert _available(svc) == [] and svc.snapshots.all_snapshots() == set()
    assert svc.snapshots.base_blob_deletes == 0


def test_stopped_protection_keeps_everything():
    """Protection stopped with data retained: nothing expires, however old."""
    svc, clock, _ = _svc()
    svc.protected_items.update(VM, lambda i: replace(i, state=ProtectionState.STOPPED))
    clock.current = START + timedelta(days=900)
    assert run_retention(svc).points_deleted == [] and len(_available(svc)) == 10


def test_an_on_demand_point_lives_until_its_retain_until():
    """backup-now --retain-until: the point outlives the daily rule until that date, then goes as OnDemand."""
    svc, clock, _ = _svc(days=1)
    od = backup(svc, START + timedelta(hours=5), trigger="OnDemand", retain_until=START + timedelta(days=60))
    backup(svc, START + timedelta(days=30))      # a later point, so the on-demand one is never the latest
    clock.current = START + timedelta(days=59)
    run_retention(svc)
    assert recovery_point_name(od.job_id) in _available(svc)
    clock.current = START + timedelta(days=61)
    plan = plan_retention(svc)
    assert {a.point_name: a.rule.value for a in plan.points}[recovery_point_name(od.job_id)] == "OnDemand"


def test_the_dry_run_changes_nothing_and_lists_missing_points_to_record():
    """retention plan names what goes and which rule, and records or deletes nothing."""
    svc, clock, jobs = _svc()
    lost = jobs[-1]
    svc.recovery_points.points.pop((VM, recovery_point_name(lost.job_id)))
    clock.current = START + timedelta(days=40)     # the lost job is within the 35 days read back
    before = dict(svc.recovery_points.points), svc.snapshots.all_snapshots()
    plan = plan_retention(svc)
    assert plan.backfill == [lost.job_id]
    assert len(plan.points) == 9 and {a.rule.value for a in plan.points} == {"Daily"}
    assert (dict(svc.recovery_points.points), svc.snapshots.all_snapshots()) == before
    result = run_retention(svc)
    assert result.backfilled == [lost.job_id] and _available(svc) == [recovery_point_name(lost.job_id)]


def test_a_backfilled_point_asks_for_its_digests_as_an_ingested_one_does():
    """A point recorded by retention's repair (its recording was lost) gets the same digest request as a point
    recorded by ingestion, so its first restore too reads its copy only; a dry run sends nothing."""
    svc, clock, jobs = _svc()
    lost = jobs[-1]
    svc.recovery_points.points.pop((VM, recovery_point_name(lost.job_id)))
    clock.current = START + timedelta(days=12)
    plan_retention(svc)
    assert svc.digest_queue.sent == []
    assert run_retention(svc).backfilled == [lost.job_id]
    assert [(r.vm_name, r.rp_name) for r in svc.digest_queue.sent] == [(VM, recovery_point_name(lost.job_id))]


def test_a_policy_keeps_its_monthly_format_and_old_documents_read_as_first_backup():
    """A policy with az's Weekly/Daily formats round-trips; one written before formats keeps the first backup."""
    policy = replace(default_policy(), retention=replace(
        default_policy().retention, monthly_months=12, yearly_years=2, yearly_months=(1, 7),
        monthly_on=PointSelector(weeks_of_month=(WeekOfMonth.FIRST,), days_of_week=(Weekday.SUNDAY,)),
        yearly_on=PointSelector(days_of_month=(1, 0))))
    doc = policy.to_document()
    assert doc["retentionPolicy"]["monthlySchedule"]["retentionScheduleFormatType"] == "Weekly"
    assert doc["retentionPolicy"]["yearlySchedule"]["monthsOfYear"] == ["January", "July"]
    assert Policy.from_document(doc) == policy
    old = default_policy().to_document()
    old["retentionPolicy"]["monthlySchedule"] = {"retentionDuration": {"count": 3, "durationType": "Months"}}
    assert Policy.from_document(old).retention.monthly_on == PointSelector()
    doc["retentionPolicy"]["monthlySchedule"]["retentionScheduleFormatType"] = "Hourly"
    with pytest.raises(ValidationError) as error:
        Policy.from_document(doc)
    assert error.value.field == "retention.monthly_on"


def test_a_vm_whose_every_point_was_lost_gets_them_back_from_its_jobs():
    """Recent successful jobs of a VM with no point at all: retention run records them (once)."""
    svc, clock, jobs = _svc(days=3)
    svc.recovery_points.points.clear()
    clock.current = START + timedelta(days=4)
    assert sorted(plan_retention(svc).backfill) == sorted(j.job_id for j in jobs)
    assert svc.recovery_points.points == {}
    assert sorted(run_retention(svc).backfilled) == sorted(j.job_id for j in jobs)
    assert sorted(_available(svc)) == sorted(recovery_point_name(j.job_id) for j in jobs)
    assert run_retention(svc).backfilled == []


def test_retention_plan_and_run_print_what_goes_and_why(capsys):
    """vmsnap retention plan lists each expired point with its rule; run then deletes exactly those."""
    from shared.bootstrap import reset_services
    from shared.cli import main

    svc, clock, _ = _svc()
    clock.current = START + timedelta(days=40)
    reset_services(svc)
    try:
        assert main(["retention", "plan"]) == 0
        table = capsys.readouterr().out
        assert main(["retention", "run", "-o", "json"]) == 0
        done = json.loads(capsys.readouterr().out)
    finally:
        reset_services()
    assert table.splitlines()[0].split() == ["What", "VM", "Name", "Created", "Rule", "Reason"]
    assert table.count("expired: Daily") == 9 and "10 point(s) examined, 1 kept, 9 to delete" in table
    assert len(done["pointsDeleted"]) == 9 and done["snapshotsDeleted"] == 18
