"""RPO and slot compliance as defined in docs/monitoring.md: the pure functions, on cases a user would
check by hand (daily, weekly, Enhanced windows, a daylight saving change, the current period)."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time, timedelta, timezone

from shared.domain.compliance import (SLOT_ALLOWANCE, ItemState, achieved_rpo, assess_item, by_policy,
                                      policy_interval, slot_deadline, tally_slots, target_rpo)
from shared.domain.policy import EnhancedSchedule, Frequency, Policy, Retention, StandardSchedule, Weekday
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import PointState, RecoveryPoint

UTC = timezone.utc
NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
DAILY = Policy(name="Daily", schedule=StandardSchedule(Frequency.DAILY, time(2, 0)))
WEEKLY = Policy(name="Weekly", schedule=StandardSchedule(Frequency.WEEKLY, time(2, 0), (Weekday.SUNDAY,)),
                instant_rp_days=5, retention=Retention(daily_days=None, weekly_weeks=4))
WINDOW = Policy(name="Window", schedule=EnhancedSchedule(interval_hours=4, window_start=time(8, 0), window_hours=12),
                instant_rp_days=7)


def item(since: datetime = NOW - timedelta(days=30), policy: str = "Daily") -> ProtectedItem:
    return ProtectedItem(vm_name="vm1", policy_name=policy, protected_since=since, policy_assigned_at=since)


def point(at: datetime, name: str = "p", state: PointState = PointState.AVAILABLE) -> RecoveryPoint:
    return RecoveryPoint(name=name, vm_name="vm1", created_at=at, job_id=f"job-{name}", state=state)


def test_the_interval_is_the_longest_gap_between_slots():
    """Daily: a day; weekly on Sunday: a week; 08:00 for 12 h every 4 h (08, 12, 16): the 16-hour night."""
    assert policy_interval(DAILY, NOW) == timedelta(days=1)
    assert policy_interval(WEEKLY, NOW) == timedelta(days=7)
    assert policy_interval(WINDOW, NOW) == timedelta(hours=16)
    assert target_rpo(DAILY, NOW) == timedelta(days=1) + SLOT_ALLOWANCE


def test_the_rpo_counts_from_the_newest_restorable_point_only():
    """An Unavailable point, or one stamped in the future, is not what a restore would use."""
    points = [point(NOW - timedelta(hours=30), "old"), point(NOW - timedelta(hours=2), "broken", PointState.UNAVAILABLE),
              point(NOW + timedelta(days=3), "future")]
    assert achieved_rpo(points, NOW) == timedelta(hours=30)
    assert achieved_rpo([], NOW) is None


def test_an_item_is_healthy_at_risk_or_unprotected_by_its_newest_point():
    """Within interval + allowance: Healthy; past it: AtRisk; no restorable point: Unprotected."""
    def state(points):
        return assess_item(item(), DAILY, now=NOW, since=NOW - timedelta(days=7), successes=[],
                           points=points).state

    assert state([point(NOW - timedelta(hours=26))]) is ItemState.HEALTHY
    assert state([point(NOW - timedelta(hours=27, seconds=1))]) is ItemState.AT_RISK
    assert state([point(NOW - timedelta(hours=1), state=PointState.UNAVAILABLE)]) is ItemState.UNPROTECTED


def test_the_current_period_counts_once_decided():
    """Today's 02:00 slot is met by a success; before its deadline with none yet it is pending, after it missed."""
    since = datetime(2025, 6, 8, 0, 0, tzinfo=UTC)
    at = datetime(2025, 6, 10, 4, 0, tzinfo=UTC)            # 2 h after today's slot: deadline at 05:00
    slots = [datetime(2025, 6, d, 2, 0, tzinfo=UTC) for d in (8, 9, 10)]
    tally = tally_slots(DAILY, since=since, now=at, successes=[slots[0], slots[1] + timedelta(hours=5)])
    assert (tally.met, tally.missed, tally.pending) == (tuple(slots[:2]), (), (slots[2],))
    later = tally_slots(DAILY, since=since, now=slot_deadline(slots[2]), successes=[slots[0]])
    assert (later.met, later.missed, later.compliance) == ((slots[0],), tuple(slots[1:]), 1 / 3)
    met_today = tally_slots(DAILY, since=since, now=at, successes=[slots[2] + timedelta(minutes=5)])
    assert slots[2] in met_today.met


def test_hourly_slots_are_counted_one_by_one():
    """An Enhanced window: three slots a day (08, 12, 16), each met only by a backup of its own period."""
    since = datetime(2025, 6, 9, 0, 0, tzinfo=UTC)
    at = datetime(2025, 6, 9, 18, 0, tzinfo=UTC)        # the 16:00 slot's deadline is at 19:00
    day = [datetime(2025, 6, 9, h, 0, tzinfo=UTC) for h in (8, 12, 16)]
    tally = tally_slots(WINDOW, since=since, now=at, successes=[day[0], day[1] - timedelta(minutes=3)])
    assert tally.met == (day[0],) and tally.missed == (day[1],) and tally.pending == (day[2],)


def test_slots_follow_the_policy_zone_across_a_daylight_saving_change():
    """02:30 Europe/Berlin on the spring-forward Sunday runs at 03:00 CEST (01:00 UTC): one slot that day."""
    berlin = Policy(name="Berlin", schedule=StandardSchedule(Frequency.DAILY, time(2, 30)), time_zone="Europe/Berlin")
    since, at = datetime(2025, 3, 29, 0, 0, tzinfo=UTC), datetime(2025, 3, 31, 12, 0, tzinfo=UTC)
    tally = tally_slots(berlin, since=since, now=at, successes=[])
    assert tally.missed == (datetime(2025, 3, 29, 1, 30, tzinfo=UTC), datetime(2025, 3, 30, 1, 0, tzinfo=UTC),
                            datetime(2025, 3, 31, 0, 30, tzinfo=UTC))


def test_slots_before_the_item_was_protected_are_not_expected():
    """A VM protected yesterday at noon owes only the slots since then."""
    since = NOW - timedelta(days=30)
    protected = NOW - timedelta(days=1)
    figures = assess_item(item(protected), DAILY, now=NOW, since=since, successes=[], points=[])
    assert figures.slots.missed == (datetime(2025, 6, 10, 2, 0, tzinfo=UTC),)
    assert figures.state is ItemState.UNPROTECTED


def test_policies_roll_up_their_items():
    """A policy's compliance is its items' met slots over their expected slots."""
    since = NOW - timedelta(days=2)
    good = assess_item(item(), DAILY, now=NOW, since=since, points=[point(NOW - timedelta(hours=10))],
                       successes=[datetime(2025, 6, 9, 2, tzinfo=UTC), datetime(2025, 6, 10, 2, tzinfo=UTC)])
    bad = replace(assess_item(item(), DAILY, now=NOW, since=since, successes=[], points=[]), vm_name="vm2")
    (rolled,) = by_policy([good, bad])
    assert (rolled.items, rolled.slots.expected, len(rolled.slots.met), rolled.slots.compliance) == (2, 4, 2, 0.5)
    assert rolled.states[ItemState.HEALTHY] == 1 and rolled.states[ItemState.UNPROTECTED] == 1
