"""The slots of a policy: pure arithmetic from wall-clock times in the policy's zone to UTC instants.

Rules (tested in tests/scheduling/test_schedule.py):
- Slot times are wall-clock times in the policy's IANA zone, so "22:30 Europe/Berlin" stays 22:30
  local across daylight saving changes (Azure Backup does not adjust; we do).
- A wall time that does not exist (spring forward, e.g. 02:30 Europe/Berlin on the last Sunday of
  March) runs at the first valid instant after the gap: the transition itself, 03:00 local.
- A wall time that occurs twice (fall back) runs once, at its first occurrence (fold=0).
- Enhanced windows step in wall-clock hours from the window start and may cross midnight: start
  20:00, 12 h, every 4 h gives 20:00, 00:00 (next day), 04:00 (next day). The window belongs to
  the day it starts on.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Iterator
from zoneinfo import ZoneInfo

from shared.clock import utc
from shared.domain.policy import EnhancedSchedule, Frequency, Policy, Schedule

_ONE_SECOND = timedelta(seconds=1)


def wall_times(schedule: Schedule, day: date) -> Iterator[datetime]:
    """The naive local wall-clock times a schedule asks for, for the window or run starting on ``day``."""
    if isinstance(schedule, EnhancedSchedule):
        start = datetime.combine(day, schedule.window_start)
        for offset in range(0, schedule.window_hours, schedule.interval_hours):
            yield start + timedelta(hours=offset)
        return
    if schedule.frequency is Frequency.WEEKLY and day.weekday() not in {d.index for d in schedule.days}:
        return
    yield datetime.combine(day, schedule.time)


def to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive wall-clock time in ``zone``, by the DST rules in the module docstring."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first          # exists; when it is repeated, fold=0 is the first occurrence
    # In a gap fold=0 reads the wall time with the offset from before the change (an instant after
    # the change) and fold=1 with the offset from after it (an instant before the change): the
    # transition lies between them. Find it to the second (gaps are whole minutes in tzdata).
    before = wall.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)
    low, high = min(before, first), max(before, first)
    offset_before = low.astimezone(zone).utcoffset()
    while high - low > _ONE_SECOND:
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).utcoffset() == offset_before:
            low = middle
        else:
            high = middle
    return high


def slots_between(policy: Policy, after: datetime, until: datetime) -> list[datetime]:
    """The policy's slots ``s`` with ``after < s <= until``, ascending, as aware UTC instants."""
    after, until = utc(after), utc(until)
    if until <= after:
        return []
    zone = policy.zone
    day = after.astimezone(zone).date() - timedelta(days=1)   # an Enhanced window may start the day before
    last_day = until.astimezone(zone).date()
    found: set[datetime] = set()
    while day <= last_day:
        for wall in wall_times(policy.schedule, day):
            instant = to_instant(wall, zone)
            if after < instant <= until:
                found.add(instant)
        day += timedelta(days=1)
    return sorted(found)


def next_slot(policy: Policy, after: datetime) -> datetime:
    """The first slot strictly after ``after`` (every schedule has one within eight days)."""
    slots = slots_between(policy, after, utc(after) + timedelta(days=8))
    return slots[0]
