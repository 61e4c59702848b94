"""GFS retention as Azure Backup computes it, in the policy's time zone: which tiers hold a recovery
point and until when, and what a retention run keeps or deletes, naming the rule each time. Pure.

Daily keeps the last point of each local day for N days; weekly the point of the weekly day for N
weeks; monthly and yearly the point their selector picks (default: the first backup of the month or
year) for N months or years; the instant-restore tier holds every point for its days; an on-demand
point lives until its retain-until. The latest available point of a protected VM is always kept: it
is the newest point retention may trust, so a point found Unavailable (data gone) or stamped in the
future never stands in for it. Date arithmetic is clamped, never overflows: an odd record is reported
by the run, it does not stop it.
"""
from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Sequence
from zoneinfo import ZoneInfo

from shared.clock import EARLIEST, LATEST, utc
from shared.domain.policy import (LAST_DAY_OF_MONTH, Frequency, Policy, PointSelector, StandardSchedule,
                                  WeekOfMonth, Weekday)
from shared.domain.protection import ProtectionState
from shared.domain.recovery import TIERS, PointState, RecoveryPoint, Rule


@dataclass(frozen=True)
class Hold:
    """One tier holding a point until ``until``."""

    tier: Rule
    until: datetime

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise ValueError(f"{self.tier.value} is a retention rule, not a tier")


@dataclass(frozen=True)
class Decision:
    point: RecoveryPoint
    keep: bool
    rule: Rule                      # keep: what keeps it; delete: the rule that let it go (last)
    holds: tuple[Hold, ...]
    expires_at: datetime | None     # None: no expiry while the situation lasts

    @property
    def reason(self) -> str:
        if self.keep:
            return f"kept by {self.rule.value}" + (f" until {self.expires_at.isoformat()}" if self.expires_at else "")
        if self.rule is Rule.SOFT_DELETE_PURGE:
            return "purged: the item was soft-deleted more than 14 days ago"
        if self.rule is Rule.FUTURE_TIME:
            return "kept: its time lies in the future, so no rule can judge it; never counted as the latest"
        return f"expired: {self.rule.value} retention ended {self.expires_at.isoformat() if self.expires_at else ''}"


def holds(point: RecoveryPoint, history: Sequence[RecoveryPoint], policy: Policy | None) -> tuple[Hold, ...]:
    """Every tier ``point`` counts for and until when, among the VM's points ``history`` (any state).

    Representatives (the last point of a day, the first of a month) are chosen over the whole
    history, deleted points included, so a deletion never promotes another point into a tier.
    """
    return _holds(point, _History(history, policy.zone) if policy else None, policy)


class _History:
    """The representatives of one VM's scheduled points, computed once per VM and policy zone."""

    def __init__(self, history: Sequence[RecoveryPoint], zone: ZoneInfo):
        self.zone = zone
        last_of_day: dict[date, RecoveryPoint] = {}
        first_of_month: dict[tuple[int, int], RecoveryPoint] = {}
        first_of_year: dict[int, RecoveryPoint] = {}
        for p in history:
            if p.is_on_demand:
                continue
            day = _local_date(p.created_at, zone)
            if day not in last_of_day or _later(p, last_of_day[day]):
                last_of_day[day] = p
            month = (day.year, day.month)
            if month not in first_of_month or _later(first_of_month[month], p):
                first_of_month[month] = p
            if day.year not in first_of_year or _later(first_of_year[day.year], p):
                first_of_year[day.year] = p
        self.last_of_day = {p.name for p in last_of_day.values()}
        self.first_of_month = {p.name for p in first_of_month.values()}
        self.first_of_year = {p.name for p in first_of_year.values()}


def _holds(point: RecoveryPoint, history: _History | None, policy: Policy | None) -> tuple[Hold, ...]:
    created = utc(point.created_at)
    result: list[Hold] = []
    if point.is_on_demand:
        result.append(Hold(Rule.ON_DEMAND, point.on_demand_until()))
    if policy is None or history is None:
        return tuple(result)
    zone = policy.zone
    result.append(Hold(Rule.INSTANT_RESTORE, _shift(created, zone, days=policy.instant_rp_days)))
    if point.is_on_demand:
        return tuple(result)
    day = _local_date(created, zone)
    last_of_day = point.name in history.last_of_day
    r = policy.retention
    if r.daily_days is not None and last_of_day:
        result.append(Hold(Rule.DAILY, _shift(created, zone, days=r.daily_days)))
    if r.weekly_weeks is not None and last_of_day and day.weekday() in _weekly_days(policy):
        result.append(Hold(Rule.WEEKLY, _shift(created, zone, days=7 * r.weekly_weeks)))
    if r.monthly_months is not None and _selected(day, r.monthly_on, last_of_day,
                                                  point.name in history.first_of_month):
        result.append(Hold(Rule.MONTHLY, _shift(created, zone, months=r.monthly_months)))
    first_of_period = point.name in (history.first_of_month if r.yearly_months else history.first_of_year)
    if r.yearly_years is not None and (day.month in r.yearly_months if r.yearly_months else True) and _selected(
            day, r.yearly_on, last_of_day, first_of_period):
        result.append(Hold(Rule.YEARLY, _shift(created, zone, months=12 * r.yearly_years)))
    return tuple(result)


def decide(points: Sequence[RecoveryPoint], policy: Policy | None, now: datetime, *,
           state: ProtectionState | None, purge_after: datetime | None = None) -> list[Decision]:
    """What a retention run does with each point of one VM that may still hold data (``points``: all
    its points). Unavailable points are kept while a rule holds them, then go; they and points stamped
    in the future are never the latest."""
    now = utc(now)
    current = [p for p in points if p.state.holds_data]
    if not current:
        return []
    if state is ProtectionState.SOFT_DELETED:
        due = purge_after is not None and now >= utc(purge_after)
        return [Decision(p, not due, Rule.SOFT_DELETE_PURGE if due else Rule.SOFT_DELETED, (), purge_after)
                for p in current]
    if state is ProtectionState.STOPPED:
        return [Decision(p, True, Rule.PROTECTION_STOPPED, (), None) for p in current]
    if state is None or policy is None:
        return [Decision(p, True, Rule.NOT_PROTECTED, (), None) for p in current]
    trusted = [p for p in current if p.state is PointState.AVAILABLE and not p.is_from_the_future(now)]
    latest = max(trusted, key=_order) if trusted else None
    history = _History(points, policy.zone)
    decisions = []
    for point in current:
        if point.is_from_the_future(now):
            decisions.append(Decision(point, True, Rule.FUTURE_TIME, (), None))
            continue
        held = _holds(point, history, policy)
        last = max(held, key=lambda h: h.until) if held else None
        expires = last.until if last else None
        if last is not None and now < last.until:
            decisions.append(Decision(point, True, last.tier, held, expires))
        elif point is latest:
            decisions.append(Decision(point, True, Rule.LATEST, held, None))
        else:
            rule = last.tier if last else Rule.INSTANT_RESTORE
            decisions.append(Decision(point, False, rule, held, expires))
    return decisions


def tiers_now(point: RecoveryPoint, history: Sequence[RecoveryPoint], policy: Policy | None,
              now: datetime) -> tuple[list[Rule], datetime | None]:
    """The tiers a point counts for at ``now`` and when it expires (None: no expiry known)."""
    held = [h for h in holds(point, history, policy) if h.until > utc(now)]
    return [h.tier for h in held], max((h.until for h in held), default=None)


# --- helpers ----------------------------------------------------------------------------------

def _order(point: RecoveryPoint) -> tuple[datetime, str]:
    return utc(point.created_at), point.name


def _later(a: RecoveryPoint, b: RecoveryPoint) -> bool:
    return _order(a) > _order(b)


def _local_date(when: datetime, zone: ZoneInfo) -> date:
    try:
        return utc(when).astimezone(zone).date()
    except OverflowError:       # within hours of the first or last representable instant
        return utc(when).date()


def _shift(when: datetime, zone: ZoneInfo, *, days: int = 0, months: int = 0) -> datetime:
    """``when`` moved by whole local days or calendar months (wall clock, so DST changes nothing);
    clamped to the representable range rather than overflowing."""
    try:
        local = utc(when).astimezone(zone).replace(tzinfo=None)
        if months:
            index = local.year * 12 + local.month - 1 + months
            year, month = divmod(index, 12)
            local = local.replace(year=year, month=month + 1,
                                  day=min(local.day, calendar.monthrange(year, month + 1)[1]))
        local += timedelta(days=days)
        return utc(local.replace(tzinfo=zone))
    except (OverflowError, ValueError):     # ValueError: a year beyond 9999 from the month arithmetic
        return LATEST if days > 0 or months > 0 else EARLIEST


def _weekly_days(policy: Policy) -> set[int]:
    r = policy.retention
    if r.weekly_days:
        return {d.index for d in r.weekly_days}
    schedule = policy.schedule
    if isinstance(schedule, StandardSchedule) and schedule.frequency is Frequency.WEEKLY and schedule.days:
        return {schedule.days[0].index}
    return {Weekday.SUNDAY.index}


def _selected(day: date, selector: PointSelector, last_of_day: bool, first_of_period: bool) -> bool:
    if selector.format_type == "Daily":
        last = calendar.monthrange(day.year, day.month)[1]
        return last_of_day and (day.day in selector.days_of_month
                                or (LAST_DAY_OF_MONTH in selector.days_of_month and day.day == last))
    if selector.format_type == "Weekly":
        return (last_of_day and day.weekday() in {d.index for d in selector.days_of_week}
                and bool(_weeks_of_month(day) & set(selector.weeks_of_month)))
    return first_of_period


def _weeks_of_month(day: date) -> set[WeekOfMonth]:
    weeks = {[WeekOfMonth.FIRST, WeekOfMonth.SECOND, WeekOfMonth.THIRD, WeekOfMonth.FOURTH][(day.day - 1) // 7]} \
        if day.day <= 28 else set()
    if day.day + 7 > calendar.monthrange(day.year, day.month)[1]:
        weeks.add(WeekOfMonth.LAST)
    return weeks
