"""400 days of backups and daily retention runs, on fakes, against an independent oracle of the GFS rules."""
from __future__ import annotations

import calendar
import functools
import random
from datetime import datetime, time, timedelta, timezone
from typing import Callable
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.jobs import DiskResult, Job, JobStatus
from shared.domain.policy import (EnhancedSchedule, Frequency, Policy, PointSelector, Retention, StandardSchedule,
                                  WeekOfMonth, Weekday)
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import PointState, RecoveryPoint
from shared.domain.schedule import slots_between
from shared.services.recovery import record_recovery_point
from shared.services.retention import run_retention, start_retention
from shared.settings import Settings
from tests.fakes import InMemoryJobStore, RecordingDigestQueue, RecordingRetentionQueue
from tests.recovery.fakes import FakeSnapshots, FakeStatusArchive, InMemoryRecoveryPointStore
from tests.scheduling.fakes import (InMemoryPolicyStore, InMemoryProtectedItemStore, InMemoryRetentionProgressStore,
                                    InMemoryShardProgressStore)
from tests.properties import examples

# On fakes, but 400 simulated days take a minute each: the integration tier keeps the unit tier in seconds.
pytestmark = [pytest.mark.integration, pytest.mark.long]

VM = "sim-vm"


def disks_of(vm: str) -> list[str]:
    return [f"http://127.0.0.1:10000/devstoreaccount1/vhds/{vm}-{n}.vhd" for n in ("os", "data0")]


DISKS = disks_of(VM)
START = datetime(2025, 1, 1, tzinfo=timezone.utc)
DAYS = 400
SETTINGS = Settings.from_env({"BackupStorage": "UseDevelopmentStorage=true",
                              "ServiceBusConnection": "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=x;"
                                                      "SharedAccessKey=y;UseDevelopmentEmulator=true;"})


# --- the oracle: the GFS rules written out directly, sharing no code with shared/domain/retention.py -------

@functools.lru_cache(maxsize=None)     # pure, and asked about the same points every simulated day
def _wall_plus(when: datetime, zone: ZoneInfo, *, days: int = 0, months: int = 0) -> datetime:
    local = when.astimezone(zone)
    year, month = local.year, local.month
    for _ in range(months):
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    day = min(local.day, calendar.monthrange(year, month)[1])
    wall = datetime(year, month, day, local.hour, local.minute, local.second, local.microsecond) + timedelta(days=days)
    return wall.replace(tzinfo=zone).astimezone(timezone.utc)


def oracle_kept(points: list[RecoveryPoint], policy: Policy, now: datetime) -> set[str]:
    """The points the GFS rules keep at ``now``, and the latest point."""
    ends = oracle_ends(points, policy)
    return {max(points, key=lambda p: p.created_at).name} | {name for name, end in ends.items() if now < end}


def oracle_ends(points: list[RecoveryPoint], policy: Policy) -> dict[str, datetime]:
    """When the GFS rules let each point go (every point of ``points``, whatever its state)."""
    zone = ZoneInfo(policy.time_zone)
    r = policy.retention
    sched = [p for p in points if p.trigger != "OnDemand"]
    local = {p.name: p.created_at.astimezone(zone) for p in points}
    newest_of_day: dict = {}
    oldest_of: dict = {}
    for q in sched:
        lq = local[q.name]
        newest_of_day[lq.date()] = max(newest_of_day.get(lq.date(), q.created_at), q.created_at)
        for key in ((lq.year, lq.month), lq.year):
            oldest_of[key] = min(oldest_of.get(key, q.created_at), q.created_at)

    def picked(p: RecoveryPoint, selector: PointSelector, period) -> bool:
        lp = local[p.name]
        last_of_day = p.created_at == newest_of_day[lp.date()]
        if selector.days_of_month:
            month_len = calendar.monthrange(lp.year, lp.month)[1]
            return last_of_day and lp.day in {month_len if d == 0 else d for d in selector.days_of_month}
        if selector.weeks_of_month:
            ordinal = ["First", "Second", "Third", "Fourth", "Fifth"][(lp.day - 1) // 7]
            is_last = lp.day > calendar.monthrange(lp.year, lp.month)[1] - 7
            names = {w.value for w in selector.weeks_of_month}
            return (last_of_day and lp.strftime("%A") in {d.value for d in selector.days_of_week}
                    and (ordinal in names or (is_last and "Last" in names)))
        return p.created_at == oldest_of[period(lp)]

    if r.weekly_days:
        weekly = {d.value for d in r.weekly_days}
    elif isinstance(policy.schedule, StandardSchedule) and policy.schedule.frequency is Frequency.WEEKLY:
        weekly = {policy.schedule.days[0].value}
    else:
        weekly = {"Sunday"}
    ends_of: dict[str, datetime] = {}
    for p in points:
        lp = local[p.name]
        ends = [_wall_plus(p.created_at, zone, days=policy.instant_rp_days)]
        if p.trigger == "OnDemand":
            ends.append(p.retain_until or p.created_at + timedelta(days=30))
        else:
            last_of_day = p.created_at == newest_of_day[lp.date()]
            if r.daily_days and last_of_day:
                ends.append(_wall_plus(p.created_at, zone, days=r.daily_days))
            if r.weekly_weeks and last_of_day and lp.strftime("%A") in weekly:
                ends.append(_wall_plus(p.created_at, zone, days=7 * r.weekly_weeks))
            if r.monthly_months and picked(p, r.monthly_on, lambda d: (d.year, d.month)):
                ends.append(_wall_plus(p.created_at, zone, months=r.monthly_months))
            if r.yearly_years and picked(p, r.yearly_on, lambda d: d.year):
                ends.append(_wall_plus(p.created_at, zone, months=12 * r.yearly_years))
        ends_of[p.name] = max(ends)
    return ends_of


# --- the simulation -----------------------------------------------------------------------------------

def make_services(policy: Policy, clock: FixedClock) -> Services:
    policies = InMemoryPolicyStore()
    policies.policies[policy.name.lower()] = policy
    items = InMemoryProtectedItemStore()
    items.add(ProtectedItem(vm_name=VM, policy_name=policy.name, protected_since=START, policy_assigned_at=START))
    return Services(SETTINGS, clock=clock, jobs=InMemoryJobStore(), recovery_points=InMemoryRecoveryPointStore(),
                    snapshots=FakeSnapshots(), status_archive=FakeStatusArchive(), policies=policies,
                    protected_items=items, **timer_fakes())


def timer_fakes() -> dict:
    """What the timer's run needs besides the stores: the scheduler's and retention's progress, the queue,
    and the digest requests of the points it backfills."""
    return {"progress": InMemoryShardProgressStore(), "retention_progress": InMemoryRetentionProgressStore(),
            "retention_queue": RecordingRetentionQueue(), "digest_queue": RecordingDigestQueue()}


def timer_run(svc: Services) -> None:
    """The timer's run as the app makes it on a large fleet: a request per part, each settled a page an
    invocation (every page ends the invocation's budget), through continuations on the queue."""
    start_retention(svc, fan_out=True)
    svc.retention_queue.drain(svc, budget=timedelta(0), page_size=1)


def backup(svc: Services, slot: datetime, *, trigger: str = "Scheduled", failed: bool = False, attempts: int = 1,
           retain_until: datetime | None = None, vm: str = VM) -> Job:
    """One job as ingestion leaves it: snapshots stamped with its id; earlier attempts' snapshots left over."""
    job = Job.new_backup(vm_name=vm, slot=slot, now=slot, trigger=trigger, policy_name="SimPolicy",
                         retain_until=retain_until)
    disks = disks_of(vm)
    for _ in range(attempts - 1):
        svc.snapshots.take(disks[0], {"jobId": job.job_id})
    snaps = [svc.snapshots.take(disks[0], {"jobId": job.job_id}),
             None if failed else svc.snapshots.take(disks[1], {"jobId": job.job_id})]
    job.attempt = attempts
    job.status = JobStatus.FAILED if failed else JobStatus.COMPLETED
    job.end_time = slot + timedelta(minutes=5)
    job.disks = [DiskResult(lun=i - 1, blob_url=disks[i], status="Completed" if s else "Failed", snapshot_uri=s)
                 for i, s in enumerate(snaps)]
    svc.jobs.create_if_absent(job)
    record_recovery_point(svc, job)
    return job


def simulate(policy: Policy, seed: int, check_every: int = 1,
             retain: Callable[[Services], object] = run_retention) -> tuple[Services, FixedClock, set[str]]:
    """400 days: every slot of the policy backs up (about 1 in 12 fails, 1 in 15 needs a retry), some
    on-demand backups, and retention once a day; checks the latest point after every run."""
    rng = random.Random(seed)
    clock = FixedClock(START)
    svc = make_services(policy, clock)
    taken_by_failures: set[str] = set()
    day = START
    for n in range(DAYS):
        for slot in slots_between(policy, day, day + timedelta(days=1)):
            clock.current = slot
            outcome = rng.random()
            job = backup(svc, slot, failed=outcome < 0.08, attempts=2 if outcome > 0.93 else 1)
            if job.status is JobStatus.FAILED:
                taken_by_failures.update(d.snapshot_uri for d in job.disks if d.snapshot_uri)
        if rng.random() < 0.07:
            clock.current = day + timedelta(hours=13, minutes=rng.randrange(60))
            backup(svc, clock.current, trigger="OnDemand",
                   retain_until=clock.current + timedelta(days=rng.choice([3, 10, 45, 200])))
        day += timedelta(days=1)
        clock.current = day + timedelta(hours=1)
        retain(svc)
        points = svc.recovery_points.list_for_vm(VM)
        available = [p for p in points if p.state is PointState.AVAILABLE]
        if points:
            assert available and available[0] == max(points, key=lambda p: p.created_at), \
                "the latest good point was deleted"
            if n % check_every == 0:
                remaining = {p.name for p in available}
                expected = oracle_kept(points, policy, clock.now())
                assert remaining == expected, (clock.now(), sorted(remaining - expected), sorted(expected - remaining))
    return svc, clock, taken_by_failures


def check_against_oracle(svc: Services, clock: FixedClock, policy: Policy, failed_snaps: set[str]) -> None:
    points = svc.recovery_points.list_for_vm(VM)
    remaining = {p.name for p in points if p.state is PointState.AVAILABLE}
    expected = oracle_kept(points, policy, clock.now())
    assert remaining == expected, (sorted(remaining - expected), sorted(expected - remaining))
    snaps: FakeSnapshots = svc.snapshots
    assert snaps.base_blob_deletes == 0 and set(snaps.blobs) == set(DISKS)
    assert all(n == 1 for n in snaps.delete_calls.values()), "a snapshot was deleted twice"
    held = {d.snapshot for p in points if p.state is PointState.AVAILABLE for d in p.disks}
    assert snaps.all_snapshots() == held, "a snapshot outlived its point, or a kept point lost one"
    assert not failed_snaps & snaps.all_snapshots()
    for p in points:
        if p.state is PointState.DELETED:
            assert p.deleted_by in ("InstantRestore", "Daily", "Weekly", "Monthly", "Yearly", "OnDemand")


DAILY = Policy(name="SimPolicy", schedule=StandardSchedule(Frequency.DAILY, time(22, 30)), time_zone="Europe/Berlin",
               instant_rp_days=2, retention=Retention(daily_days=30, weekly_weeks=8, monthly_months=6, yearly_years=1))
WEEKLY = Policy(name="SimPolicy", schedule=StandardSchedule(Frequency.WEEKLY, time(2, 0),
                                                            (Weekday.SUNDAY, Weekday.WEDNESDAY)),
                time_zone="America/New_York", instant_rp_days=5,
                retention=Retention(daily_days=None, weekly_weeks=12, monthly_months=3,
                                    monthly_on=PointSelector(weeks_of_month=(WeekOfMonth.FIRST, WeekOfMonth.LAST),
                                                             days_of_week=(Weekday.SUNDAY,))))
HOURLY = Policy(name="SimPolicy", schedule=EnhancedSchedule(interval_hours=4, window_start=time(8, 0), window_hours=24),
                time_zone="Asia/Kolkata", instant_rp_days=7,
                retention=Retention(daily_days=14, weekly_weeks=4, monthly_months=2,
                                    monthly_on=PointSelector(days_of_month=(1, 15, 0))))


@pytest.mark.parametrize("policy", [DAILY, WEEKLY, HOURLY], ids=["daily", "weekly", "enhanced-hourly"])
def test_400_days_leave_exactly_the_points_the_gfs_rules_keep(policy):
    """After 400 days the VM keeps exactly the daily/weekly/monthly/yearly/on-demand points Azure would."""
    svc, clock, failed = simulate(policy, seed=9)
    check_against_oracle(svc, clock, policy, failed)


@pytest.mark.parametrize("policy", [DAILY, HOURLY], ids=["daily", "enhanced-hourly"])
def test_the_timer_s_runs_a_page_an_invocation_keep_what_the_gfs_rules_keep(policy):
    """The same 400 days with the timer's runs, each part settled a page an invocation from its cursor and
    reading only the jobs since the last run settled: exactly the oracle's points, every failed attempt's
    snapshots gone, none deleted twice."""
    svc, clock, failed = simulate(policy, seed=11, retain=timer_run)
    check_against_oracle(svc, clock, policy, failed)


zones = st.sampled_from(["UTC", "Europe/Berlin", "America/Los_Angeles", "Pacific/Auckland"])
selectors = st.one_of(
    st.just(PointSelector()),
    st.lists(st.sampled_from([0, 1, 2, 10, 15, 28]), min_size=1, max_size=3, unique=True).map(
        lambda days: PointSelector(days_of_month=tuple(days))),
    st.tuples(st.lists(st.sampled_from(list(WeekOfMonth)), min_size=1, max_size=2, unique=True),
              st.lists(st.sampled_from(list(Weekday)), min_size=1, max_size=2, unique=True)).map(
        lambda wd: PointSelector(weeks_of_month=tuple(wd[0]), days_of_week=tuple(wd[1]))))


@st.composite
def daily_policies(draw):
    return Policy(
        name="SimPolicy", schedule=StandardSchedule(Frequency.DAILY, time(draw(st.sampled_from([0, 12, 23])), 30)),
        time_zone=draw(zones), instant_rp_days=draw(st.integers(1, 5)),
        retention=Retention(daily_days=draw(st.integers(7, 40)),
                            weekly_weeks=draw(st.none() | st.integers(1, 10)),
                            weekly_days=tuple(draw(st.lists(st.sampled_from(list(Weekday)), max_size=2, unique=True))),
                            monthly_months=draw(st.none() | st.integers(1, 8)), monthly_on=draw(selectors),
                            yearly_years=draw(st.none() | st.just(1)), yearly_on=draw(selectors)))


@settings(max_examples=examples(4), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=daily_policies(), seed=st.integers(0, 1000))
def test_any_daily_policy_keeps_what_the_oracle_keeps(policy, seed):
    """Whatever the policy, zone and failures, retention keeps exactly the oracle's points, never the base blobs."""
    svc, clock, failed = simulate(policy, seed, check_every=5)
    check_against_oracle(svc, clock, policy, failed)
