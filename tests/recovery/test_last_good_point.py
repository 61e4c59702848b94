"""Retention never leaves a VM without a restorable point, and one odd record never stops the fleet's
retention: points whose data is gone, points stamped in the future, records that break, on fakes."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.jobs import JobStatus
from shared.domain.policy import Policy
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import DiskSnapshot, PointState, RecoveryPoint, Rule, recovery_point_name
from shared.domain.task import Trigger
from shared.errors import TransientError
from shared.ports import JobQuery
from shared.services.recovery import list_points
from shared.services.retention import ProblemKind, plan_retention, run_retention
from tests.fakes import InMemoryJobStore
from tests.recovery.fakes import FakeSnapshots, FakeStatusArchive, InMemoryRecoveryPointStore
from tests.recovery.test_retention_simulation import (DAILY, HOURLY, SETTINGS, WEEKLY, daily_policies, oracle_ends,
                                                      timer_fakes, timer_run)
from tests.scheduling.fakes import InMemoryPolicyStore, InMemoryProtectedItemStore
from tests.properties import examples

NOW = datetime(2026, 6, 15, 9, 0, tzinfo=timezone.utc)
SHORT = replace(DAILY, instant_rp_days=1, retention=replace(DAILY.retention, daily_days=7, weekly_weeks=None,
                                                            monthly_months=None, yearly_years=None))


def _disks(vm: str) -> list[str]:
    return [f"http://127.0.0.1:10000/devstoreaccount1/vhds/{vm}-{n}.vhd" for n in ("os", "data0")]


def _world(policy: Policy = SHORT, vms: tuple[str, ...] = ("vm-a",), snapshots: FakeSnapshots | None = None):
    policies = InMemoryPolicyStore()
    policies.policies[policy.name.lower()] = policy
    items = InMemoryProtectedItemStore()
    for vm in vms:
        items.add(ProtectedItem(vm_name=vm, policy_name=policy.name, protected_since=NOW - timedelta(days=400),
                                policy_assigned_at=NOW - timedelta(days=400)))
    clock = FixedClock(NOW)
    svc = Services(SETTINGS, clock=clock, jobs=InMemoryJobStore(), recovery_points=InMemoryRecoveryPointStore(),
                   snapshots=snapshots or FakeSnapshots(), status_archive=FakeStatusArchive(), policies=policies,
                   protected_items=items, **timer_fakes())
    return svc, clock


def _point(svc, vm: str, at: datetime, *, trigger: str = "Scheduled", retain_until: datetime | None = None,
           state: PointState = PointState.AVAILABLE, state_changed_at: datetime | None = None) -> RecoveryPoint:
    job_id = f"job-{vm}-{at.isoformat()}-{trigger}"
    disks = tuple(DiskSnapshot(lun=lun, source=url, snapshot=svc.snapshots.take(url, {"jobId": job_id}))
                  for lun, url in zip((-1, 0), _disks(vm)))
    point = RecoveryPoint(name=recovery_point_name(job_id), vm_name=vm, created_at=at, job_id=job_id,
                          trigger=Trigger(trigger), retain_until=retain_until, disks=disks, policy_name="SimPolicy",
                          state=state, state_changed_at=state_changed_at)
    svc.recovery_points.add_if_absent(point)
    return svc.recovery_points.get(vm, point.name)


def _lose(svc, point: RecoveryPoint, luns=(-1, 0)) -> None:
    """Delete a point's snapshots behind the service's back (someone with access to the account)."""
    for disk in point.disks:
        if disk.lun in luns:
            base, _, query = disk.snapshot.partition("?snapshot=")
            del svc.snapshots.blobs[base][query]


def _state(svc, vm: str, name: str) -> PointState:
    return svc.recovery_points.get(vm, name).state


def test_a_newest_point_whose_snapshots_are_gone_is_not_the_one_kept():
    """The newest point's snapshots were deleted by hand: it becomes Unavailable with the reason, and the
    older good point stays as the VM's latest instead of being deleted as expired."""
    svc, _ = _world()
    old = _point(svc, "vm-a", NOW - timedelta(days=30))
    older = _point(svc, "vm-a", NOW - timedelta(days=31))
    newest = _point(svc, "vm-a", NOW - timedelta(days=29))
    _lose(svc, newest, luns=(0,))
    plan = plan_retention(svc)
    assert [(p.kind, p.point_name) for p in plan.problems] == [(ProblemKind.DATA_MISSING, newest.name)]
    assert {a.point_name for a in plan.points} == {older.name, newest.name}     # the dry run changes nothing
    assert _state(svc, "vm-a", newest.name) is PointState.AVAILABLE

    result = run_retention(svc)
    assert result.marked_unavailable == [newest.name]
    assert _state(svc, "vm-a", old.name) is PointState.AVAILABLE
    assert _state(svc, "vm-a", older.name) is PointState.DELETED
    gone = svc.recovery_points.get("vm-a", newest.name)
    assert gone.state is PointState.DELETED and "LUN 0" in gone.unavailable_reason   # expired: what is left goes
    assert svc.snapshots.all_snapshots() == {d.snapshot for d in old.disks}


def test_an_unavailable_point_is_listed_with_its_reason_and_never_restored_whole():
    """recoverypoint list shows a broken point that is still held as Unavailable, with the reason."""
    svc, _ = _world()
    good = _point(svc, "vm-a", NOW - timedelta(days=10))
    broken = _point(svc, "vm-a", NOW - timedelta(hours=5))
    _point(svc, "vm-a", NOW - timedelta(days=20))       # expired: gives retention something to delete
    _lose(svc, broken, luns=(-1,))
    run_retention(svc)
    views = {v.point.name: v for v in list_points(svc, "vm-a")}
    assert views[broken.name].point.state is PointState.UNAVAILABLE
    assert "LUN -1" in views[broken.name].point.unavailable_reason
    assert views[good.name].point.state is PointState.AVAILABLE


def test_a_point_that_cannot_be_checked_now_keeps_everything_of_its_vm():
    """Storage does not answer the check: that VM loses nothing in this run, the other VM is served."""
    class Flaky(FakeSnapshots):
        def snapshot_exists(self, snapshot_url: str) -> bool:
            if "vm-a" in snapshot_url:
                raise TransientError("storage did not answer")
            return super().snapshot_exists(snapshot_url)

    svc, _ = _world(vms=("vm-a", "vm-b"), snapshots=Flaky())
    expired = {vm: _point(svc, vm, NOW - timedelta(days=30)) for vm in ("vm-a", "vm-b")}
    for vm in ("vm-a", "vm-b"):
        _point(svc, vm, NOW - timedelta(days=1))
    result = run_retention(svc)
    assert _state(svc, "vm-a", expired["vm-a"].name) is PointState.AVAILABLE
    assert _state(svc, "vm-b", expired["vm-b"].name) is PointState.DELETED
    assert [(p.vm_name, p.kind) for p in result.plan.problems] == [("vm-a", ProblemKind.DEFERRED)]
    (job,) = svc.jobs.query(JobQuery(vm_name="vm-a", operation="Retention")).jobs
    assert job.status is JobStatus.FAILED and job.errors[0].error_code == "RetentionLatestPointNotConfirmed"
    assert job.errors[0].recommendations


@pytest.mark.parametrize("when", [datetime(9999, 12, 31, tzinfo=timezone.utc),
                                  datetime(9999, 12, 31, 23, 59, tzinfo=timezone.utc),
                                  NOW + timedelta(days=365)])
@pytest.mark.parametrize("trigger", ["Scheduled", "OnDemand"])
def test_a_point_dated_in_the_future_stops_nothing(when, trigger):
    """A point dated 9999 (made by a hand-made task before tasks were bounded) is kept, reported, never
    the latest; plan, run and the point list of every VM still work and the other VM's points expire."""
    svc, _ = _world(policy=HOURLY, vms=("vm-a", "vm-b"))
    odd = _point(svc, "vm-a", when, trigger=trigger, retain_until=when if trigger == "OnDemand" else None)
    expired = {vm: _point(svc, vm, NOW - timedelta(days=40)) for vm in ("vm-a", "vm-b")}
    latest = {vm: _point(svc, vm, NOW - timedelta(hours=3)) for vm in ("vm-a", "vm-b")}
    plan = plan_retention(svc)
    assert [(p.vm_name, p.kind, p.point_name) for p in plan.problems] == [("vm-a", ProblemKind.FUTURE_TIME, odd.name)]
    run_retention(svc)
    for vm in ("vm-a", "vm-b"):
        assert _state(svc, vm, expired[vm].name) is PointState.DELETED
        assert _state(svc, vm, latest[vm].name) is PointState.AVAILABLE
    assert _state(svc, "vm-a", odd.name) is PointState.AVAILABLE
    assert {v.point.name for v in list_points(svc, "vm-a")} == {odd.name, latest["vm-a"].name}
    (job,) = svc.jobs.query(JobQuery(vm_name="vm-a", operation="Retention")).jobs
    assert job.status is JobStatus.COMPLETED_WITH_WARNINGS
    assert job.errors[0].error_code == "RetentionPointTimeInFuture" and odd.name in job.errors[0].error_string


def test_a_record_that_breaks_is_its_vm_s_problem_and_the_fleet_goes_on():
    """One VM's record makes the rules fail (a corrupt retain-until): that VM is reported Failed with a
    Retention job; every other VM's retention is done."""
    svc, _ = _world(vms=("vm-a", "vm-b", "vm-c"))
    expired = {vm: _point(svc, vm, NOW - timedelta(days=30)) for vm in ("vm-a", "vm-b", "vm-c")}
    for vm in ("vm-a", "vm-b", "vm-c"):
        _point(svc, vm, NOW - timedelta(days=1))
    corrupt = _point(svc, "vm-b", NOW - timedelta(days=2), trigger="OnDemand")
    svc.recovery_points.points[("vm-b", corrupt.name)] = replace(corrupt, retain_until="not a time")
    result = run_retention(svc)
    assert [(p.vm_name, p.kind) for p in result.plan.problems] == [("vm-b", ProblemKind.FAILED)]
    assert _state(svc, "vm-a", expired["vm-a"].name) is PointState.DELETED
    assert _state(svc, "vm-c", expired["vm-c"].name) is PointState.DELETED
    assert _state(svc, "vm-b", expired["vm-b"].name) is PointState.AVAILABLE
    (job,) = svc.jobs.query(JobQuery(vm_name="vm-b", operation="Retention")).jobs
    assert job.status is JobStatus.FAILED and job.errors[0].error_code == "RetentionItemFailed"


# --- the property: random histories ---------------------------------------------------------------------

_STATES = st.sampled_from(["available", "available", "available", "broken", "half", "unavailable", "deleted",
                           "claimed", "stale-claim"])


@st.composite
def histories(draw):
    """Per VM: points at random times (some in the future), each in a random state, its data present or
    gone, on-demand with random retain-until; claims of other runs in flight, fresh or stale."""
    vms = {}
    for vm in ("vm-a", "vm-b", "vm-c")[:draw(st.integers(1, 3))]:
        points = []
        for _ in range(draw(st.integers(0, 14))):
            age = draw(st.one_of(st.integers(-3 * 24, 200 * 24), st.integers(-200, 48)))   # hours before NOW
            on_demand = draw(st.booleans()) and draw(st.booleans())
            keep_days = draw(st.integers(1, 90))
            points.append((age, on_demand, keep_days, draw(_STATES), draw(st.integers(0, 59))))
        vms[vm] = points
    return vms


def _restorable(svc, point: RecoveryPoint, now: datetime) -> bool:
    return (point.state is PointState.AVAILABLE and not point.is_from_the_future(now)
            and all(svc.snapshots.snapshot_exists(d.snapshot) for d in point.disks))


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(), policy=st.one_of(st.sampled_from([SHORT, DAILY, WEEKLY, HOURLY]), daily_policies()),
       runs=st.integers(1, 2), retain=st.sampled_from([run_retention, timer_run]))
def test_after_any_retention_run_every_vm_that_could_be_restored_still_can(history, policy, runs, retain):
    """Whatever the history (points broken, half gone, deleted, claimed by a run in flight, stamped in the
    future), and whether the operator's run or the timer's (a page an invocation): after retention, every
    VM that had a restorable point still has one, and no point whose policy still holds it has lost its
    data or its record."""
    svc, clock = _world(policy=replace(policy, name="SimPolicy"), vms=tuple(history))
    for vm, points in history.items():
        for n, (age, on_demand, keep_days, state, minute) in enumerate(points):
            at = NOW - timedelta(hours=age, minutes=minute, seconds=n)
            point = _point(svc, vm, at, trigger="OnDemand" if on_demand else "Scheduled",
                           retain_until=at + timedelta(days=keep_days) if on_demand else None)
            if state in ("broken", "half", "unavailable"):
                _lose(svc, point, luns=(0,) if state == "half" else (-1, 0))
            if state in ("unavailable", "deleted", "claimed", "stale-claim"):
                stored = {"unavailable": point.unavailable("gone", NOW - timedelta(days=1)),
                          "deleted": point.claimed(Rule.DAILY, NOW).deleted(NOW),
                          "claimed": point.claimed(Rule.DAILY, NOW - timedelta(minutes=5)),
                          "stale-claim": point.claimed(Rule.DAILY, NOW - timedelta(hours=3))}[state]
                svc.recovery_points.save_many([stored])
    before = {vm: svc.recovery_points.list_for_vm(vm) for vm in history}
    restorable = {vm: {p.name for p in points if _restorable(svc, p, NOW)} for vm, points in before.items()}
    ends = {vm: oracle_ends(points, svc.policies.get("SimPolicy")) for vm, points in before.items() if points}

    for _ in range(runs):
        retain(svc)

    for vm, points in before.items():
        after = {p.name: p for p in svc.recovery_points.list_for_vm(vm)}
        if restorable[vm]:
            assert any(_restorable(svc, p, NOW) for p in after.values()), f"{vm} lost its last restorable point"
        for p in points:
            now_held = after[p.name].state.holds_data
            if p.state.holds_data and not now_held and not p.is_from_the_future(NOW):
                assert NOW >= ends[vm][p.name], f"{p.name} of {vm} died before its policy let it go"
            if after[p.name].state is PointState.UNAVAILABLE and p.state is PointState.AVAILABLE:
                assert not _restorable(svc, p, NOW), f"{p.name} of {vm} was marked Unavailable with its data there"
        for name in restorable[vm]:
            if after[name].state is PointState.AVAILABLE:
                assert _restorable(svc, after[name], NOW), f"{name} of {vm} was kept but lost data"
