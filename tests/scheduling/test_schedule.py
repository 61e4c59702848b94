"""Slots in the user's time zone: daylight saving changes, Enhanced windows across midnight, weekly days."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings, strategies as st

from tests.properties import examples

from shared.domain.policy import EnhancedSchedule, Frequency, Policy, Retention, StandardSchedule, Weekday
from shared.domain.schedule import next_slot, slots_between, to_instant

UTC = timezone.utc


def daily(at: time, zone: str) -> Policy:
    return Policy("p", StandardSchedule(Frequency.DAILY, at), zone)


def enhanced(interval: int, start: time, hours: int, zone: str) -> Policy:
    return Policy("p", EnhancedSchedule(interval, start, hours), zone, instant_rp_days=7)


def local_slots(policy: Policy, start: datetime, end: datetime) -> list[str]:
    return [s.astimezone(policy.zone).strftime("%m-%d %H:%M%z") for s in slots_between(policy, start, end)]


def test_berlin_spring_forward_runs_a_missing_time_at_the_end_of_the_gap():
    """02:30 does not exist in Berlin on 30 March 2025: the backup runs once, at 03:00 CEST."""
    policy = daily(time(2, 30), "Europe/Berlin")
    assert local_slots(policy, datetime(2025, 3, 29, tzinfo=UTC), datetime(2025, 3, 31, 12, tzinfo=UTC)) == [
        "03-29 02:30+0100", "03-30 03:00+0200", "03-31 02:30+0200"]


def test_berlin_fall_back_runs_a_repeated_time_once_at_its_first_occurrence():
    """02:30 happens twice in Berlin on 26 October 2025: the backup runs once, at the first (CEST) one."""
    policy = daily(time(2, 30), "Europe/Berlin")
    slots = slots_between(policy, datetime(2025, 10, 25, 12, tzinfo=UTC), datetime(2025, 10, 27, 12, tzinfo=UTC))
    assert [s.isoformat() for s in slots] == ["2025-10-26T00:30:00+00:00", "2025-10-27T01:30:00+00:00"]


def test_berlin_evening_time_stays_local_across_both_changes():
    """A 22:30 Berlin backup stays at 22:30 local all year, unlike Azure Backup's fixed UTC offset."""
    policy = daily(time(22, 30), "Europe/Berlin")
    slots = slots_between(policy, datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
    assert len(slots) == 365
    assert {s.astimezone(policy.zone).strftime("%H:%M") for s in slots} == {"22:30"}
    assert {s.strftime("%H:%M") for s in slots} == {"21:30", "20:30"}


def test_new_york_spring_forward_moves_a_missing_time_to_three_oclock():
    """02:00 and 02:30 do not exist in New York on 9 March 2025: they run at 03:00 EDT."""
    assert local_slots(daily(time(2, 0), "America/New_York"), datetime(2025, 3, 9, tzinfo=UTC),
                       datetime(2025, 3, 10, tzinfo=UTC)) == ["03-09 03:00-0400"]
    assert local_slots(daily(time(2, 30), "America/New_York"), datetime(2025, 3, 9, tzinfo=UTC),
                       datetime(2025, 3, 10, tzinfo=UTC)) == ["03-09 03:00-0400"]


def test_new_york_fall_back_runs_once_in_the_repeated_hour():
    """01:30 happens twice in New York on 2 November 2025: one backup, at 01:30 EDT."""
    policy = daily(time(1, 30), "America/New_York")
    assert local_slots(policy, datetime(2025, 11, 1, 12, tzinfo=UTC), datetime(2025, 11, 3, 12, tzinfo=UTC)) == [
        "11-02 01:30-0400", "11-03 01:30-0500"]


def test_enhanced_window_crossing_midnight():
    """Start 20:00, 12 h, every 4 h gives 20:00, 00:00 and 04:00, the last two on the next day."""
    policy = enhanced(4, time(20, 0), 12, "UTC")
    assert local_slots(policy, datetime(2025, 6, 1, 12, tzinfo=UTC), datetime(2025, 6, 2, 12, tzinfo=UTC)) == [
        "06-01 20:00+0000", "06-02 00:00+0000", "06-02 04:00+0000"]


def test_enhanced_window_crossing_midnight_into_spring_forward_in_berlin():
    """A 22:00 + 8 h window every 4 h in Berlin keeps wall times: 22:00, then 02:00 (missing) at 03:00."""
    policy = enhanced(4, time(22, 0), 8, "Europe/Berlin")
    assert local_slots(policy, datetime(2025, 3, 29, 12, tzinfo=UTC), datetime(2025, 3, 31, 12, tzinfo=UTC)) == [
        "03-29 22:00+0100", "03-30 03:00+0200", "03-30 22:00+0200", "03-31 02:00+0200"]


def test_enhanced_window_across_fall_back_in_new_york_keeps_wall_clock_steps():
    """Every 4 h from 00:00 on New York's fall-back day: 00:00, 04:00, 08:00 local, never doubled."""
    policy = enhanced(4, time(0, 0), 12, "America/New_York")
    assert local_slots(policy, datetime(2025, 11, 2, 3, tzinfo=UTC), datetime(2025, 11, 2, 23, tzinfo=UTC)) == [
        "11-02 00:00-0400", "11-02 04:00-0500", "11-02 08:00-0500"]


def test_weekly_policy_runs_only_on_its_days():
    """A Mon/Thu policy backs up on Mondays and Thursdays only."""
    policy = Policy("w", StandardSchedule(Frequency.WEEKLY, time(1, 0), (Weekday.MONDAY, Weekday.THURSDAY)),
                    "Europe/Berlin", 5, Retention(daily_days=None, weekly_weeks=4, weekly_days=(Weekday.MONDAY,)))
    slots = slots_between(policy, datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 15, tzinfo=UTC))
    assert [s.astimezone(policy.zone).strftime("%a %d") for s in slots] == ["Mon 02", "Thu 05", "Mon 09", "Thu 12"]


def test_next_slot_is_strictly_after():
    """The next backup after 22:30 exactly is tomorrow's 22:30."""
    policy = daily(time(22, 30), "UTC")
    assert next_slot(policy, datetime(2025, 6, 2, 22, 30, tzinfo=UTC)) == datetime(2025, 6, 3, 22, 30, tzinfo=UTC)


ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Asia/Kolkata", "UTC"]


@settings(max_examples=examples(60), deadline=None)
@given(st.sampled_from(ZONES), st.integers(0, 47), st.dates(date(2020, 1, 1), date(2030, 12, 31)))
def test_daily_policy_has_exactly_one_slot_every_local_day(zone, half_hours, day):
    """Whatever the zone and DST rules, a daily policy backs up once on every local day, in order."""
    policy = daily(time(half_hours // 2, 30 * (half_hours % 2)), zone)
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=40), time(0), tzinfo=tz).astimezone(UTC)
    slots = slots_between(policy, start - timedelta(seconds=1), end - timedelta(seconds=1))
    assert [s.astimezone(tz).date() for s in slots] == [day + timedelta(days=i) for i in range(40)]


@settings(max_examples=examples(60), deadline=None)
@given(st.sampled_from(ZONES), st.datetimes(datetime(2020, 1, 1), datetime(2030, 12, 31)))
def test_a_wall_time_resolves_to_itself_or_to_the_end_of_a_gap(zone, wall):
    """Every wall time maps to that same local time, or (in a gap) to the first instant after it."""
    tz = ZoneInfo(zone)
    wall = wall.replace(second=0, microsecond=0)
    instant = to_instant(wall, tz)
    local = instant.astimezone(tz).replace(tzinfo=None)
    if local != wall:
        # In a gap: the instant is a transition (offset changes there) and local time jumped past wall.
        assert (instant - timedelta(seconds=1)).astimezone(tz).utcoffset() != instant.astimezone(tz).utcoffset()
        assert local > wall


@settings(max_examples=examples(40), deadline=None)
@given(st.sampled_from(ZONES), st.sampled_from([4, 6, 8, 12]), st.integers(0, 23), st.integers(4, 24),
       st.datetimes(datetime(2020, 1, 1), datetime(2030, 12, 31)), st.integers(1, 200))
def test_slots_split_across_ticks_are_the_same_as_in_one_go(zone, interval, start_hour, hours, start, split):
    """Running the scheduler in many small ticks yields exactly the slots of one long tick: none lost, none doubled."""
    policy = enhanced(interval, time(start_hour, 0), max(interval, hours), zone)
    start = start.replace(tzinfo=UTC)
    end = start + timedelta(days=3)
    middle = start + timedelta(minutes=split * 20)
    assert slots_between(policy, start, middle) + slots_between(policy, middle, end) == \
        slots_between(policy, start, end)
