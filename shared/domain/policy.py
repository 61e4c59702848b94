# Over 400 lines on purpose: schedules, retention and the az document are one value validated whole.
"""Backup policies as Azure Backup shapes them: Standard (daily or weekly, one time a day) and
Enhanced (every 4/6/8/12 h inside a daily window), an IANA time zone, instant-restore snapshot
retention and long-term retention counts. Values validate themselves: ValidationError(field=...).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, time
from enum import Enum
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.clock import utc
from shared.domain.jobs import Consistency
from shared.errors import ValidationError

DEFAULT_POLICY_NAME = "DefaultPolicy"
_E = TypeVar("_E", bound=Enum)

# Ranges from Azure Backup's policy limits (Microsoft Learn: "Support matrix for Azure VM backups").
DAILY_RETENTION_DAYS = (7, 9999)
WEEKLY_RETENTION_WEEKS = (1, 5163)
MONTHLY_RETENTION_MONTHS = (1, 1188)
YEARLY_RETENTION_YEARS = (1, 99)
STANDARD_INSTANT_RP_DAYS = (1, 5)
WEEKLY_INSTANT_RP_DAYS = 5            # Azure fixes weekly Standard policies at 5 days
ENHANCED_INSTANT_RP_DAYS = (1, 30)
ENHANCED_INTERVALS_HOURS = (4, 6, 8, 12)


class Weekday(str, Enum):
    MONDAY = "Monday"
    TUESDAY = "Tuesday"
    WEDNESDAY = "Wednesday"
    THURSDAY = "Thursday"
    FRIDAY = "Friday"
    SATURDAY = "Saturday"
    SUNDAY = "Sunday"

    @property
    def index(self) -> int:  # type: ignore[override]  # shadows str.index on purpose
        """Monday is 0, as ``date.weekday()`` counts."""
        return list(Weekday).index(self)

    @classmethod
    def parse(cls, text: str, *, field_name: str) -> "Weekday":
        wanted = text.strip().lower()
        for day in cls:
            if day.value.lower() == wanted or day.value[:3].lower() == wanted:
                return day
        raise ValidationError(f"{text!r} is not a day of the week (use Monday..Sunday or Mon..Sun)",
                              field=field_name)


class Frequency(str, Enum):
    DAILY = "Daily"
    WEEKLY = "Weekly"
    HOURLY = "Hourly"     # Enhanced policies only


RESTORE_POINT_CONSISTENCY = (Consistency.APPLICATION.value, Consistency.CRASH.value)


class PolicyType(str, Enum):
    STANDARD = "V1"
    ENHANCED = "V2"


@dataclass(frozen=True)
class StandardSchedule:
    """One backup a day at ``time`` (local to the policy's zone); Weekly runs only on ``days``."""

    frequency: Frequency = Frequency.DAILY
    time: time = time(22, 30)
    days: tuple[Weekday, ...] = ()

    def __post_init__(self) -> None:
        if self.frequency not in (Frequency.DAILY, Frequency.WEEKLY):
            raise ValidationError("a Standard policy runs Daily or Weekly; use an Enhanced policy for "
                                  "hourly backups", field="schedule.frequency")
        _check_half_hour(self.time, "schedule.time")
        if self.frequency is Frequency.WEEKLY and not self.days:
            raise ValidationError("a Weekly schedule needs at least one day", field="schedule.days")
        if self.frequency is Frequency.DAILY and self.days:
            raise ValidationError("a Daily schedule runs every day; days are only for Weekly",
                                  field="schedule.days")
        if len(set(self.days)) != len(self.days):
            raise ValidationError("a day is listed twice", field="schedule.days")


@dataclass(frozen=True)
class EnhancedSchedule:
    """Every ``interval_hours`` from ``window_start`` for ``window_hours`` (the window may cross midnight)."""

    interval_hours: int = 4
    window_start: time = time(8, 0)
    window_hours: int = 24

    def __post_init__(self) -> None:
        if self.interval_hours not in ENHANCED_INTERVALS_HOURS:
            raise ValidationError(f"interval must be one of {', '.join(map(str, ENHANCED_INTERVALS_HOURS))} "
                                  f"hours, not {self.interval_hours}", field="schedule.interval_hours")
        _check_half_hour(self.window_start, "schedule.window_start")
        if not self.interval_hours <= self.window_hours <= 24:
            raise ValidationError(f"window must last from {self.interval_hours} (the interval) to 24 hours, "
                                  f"not {self.window_hours}", field="schedule.window_hours")

    @property
    def frequency(self) -> Frequency:
        return Frequency.HOURLY


Schedule = StandardSchedule | EnhancedSchedule


class WeekOfMonth(str, Enum):
    FIRST = "First"
    SECOND = "Second"
    THIRD = "Third"
    FOURTH = "Fourth"
    LAST = "Last"


LAST_DAY_OF_MONTH = 0       # in ``PointSelector.days_of_month``: the month's last day (az's isLast)
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


@dataclass(frozen=True)
class PointSelector:
    """Which backup of a month a monthly (or yearly) retention keeps, as az's retentionScheduleFormatType.

    ``Daily`` format: the backup of each listed day of the month (1-28, or 0 for the last day).
    ``Weekly`` format: the backup of the listed weekdays in the listed weeks of the month.
    Neither (the default, and every document written before formats existed): the month's first backup.
    """

    days_of_month: tuple[int, ...] = ()
    weeks_of_month: tuple[WeekOfMonth, ...] = ()
    days_of_week: tuple[Weekday, ...] = ()

    @property
    def format_type(self) -> str | None:
        if self.days_of_month:
            return "Daily"
        if self.weeks_of_month:
            return "Weekly"
        return None

    def check(self, field_name: str) -> None:
        if self.days_of_month and (self.weeks_of_month or self.days_of_week):
            raise ValidationError("give days of the month (Daily format) or weeks and weekdays (Weekly "
                                  "format), not both", field=field_name)
        for day in self.days_of_month:
            if isinstance(day, bool) or not isinstance(day, int) or not 0 <= day <= 28:
                raise ValidationError(f"a day of the month is 1 to 28 or Last, not {day!r}", field=field_name)
        if bool(self.weeks_of_month) != bool(self.days_of_week):
            raise ValidationError("the Weekly format needs both weeks of the month and days of the week",
                                  field=field_name)


@dataclass(frozen=True)
class Retention:
    """Long-term retention counts and which points they keep (enforced by shared/domain/retention.py)."""

    daily_days: int | None = 30
    weekly_weeks: int | None = None
    weekly_days: tuple[Weekday, ...] = ()   # whose point a week keeps; () = first scheduled day, or Sunday
    monthly_months: int | None = None
    yearly_years: int | None = None
    monthly_on: PointSelector = field(default_factory=PointSelector)
    yearly_on: PointSelector = field(default_factory=PointSelector)
    yearly_months: tuple[int, ...] = ()     # 1-12; () = the year's first backup

    def check_for(self, schedule: Schedule) -> None:
        self.monthly_on.check("retention.monthly_on")
        self.yearly_on.check("retention.yearly_on")
        if any(isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 12 for m in self.yearly_months):
            raise ValidationError(f"months of the year are 1 to 12, not {list(self.yearly_months)}",
                                  field="retention.yearly_months")
        for name, label, value, (low, high) in (
                ("retention.daily_days", "daily retention (days)", self.daily_days, DAILY_RETENTION_DAYS),
                ("retention.weekly_weeks", "weekly retention (weeks)", self.weekly_weeks, WEEKLY_RETENTION_WEEKS),
                ("retention.monthly_months", "monthly retention (months)", self.monthly_months,
                 MONTHLY_RETENTION_MONTHS),
                ("retention.yearly_years", "yearly retention (years)", self.yearly_years, YEARLY_RETENTION_YEARS)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValidationError(f"{label} must be from {low} to {high}, not {value}", field=name)
        weekly = isinstance(schedule, StandardSchedule) and schedule.frequency is Frequency.WEEKLY
        if weekly and isinstance(schedule, StandardSchedule):
            if self.daily_days is not None:
                raise ValidationError("a Weekly schedule takes no daily retention; keep weekly points instead",
                                      field="retention.daily_days")
            if self.weekly_weeks is None:
                raise ValidationError("a Weekly schedule needs a weekly retention", field="retention.weekly_weeks")
            missing = set(self.weekly_days) - set(schedule.days)
            if missing:
                raise ValidationError(f"weekly retention keeps {', '.join(d.value for d in missing)}, "
                                      f"a day the schedule never runs", field="retention.weekly_days")
        elif self.daily_days is None:
            raise ValidationError("a Daily or Hourly schedule needs a daily retention (7 to 9999 days)",
                                  field="retention.daily_days")


@dataclass(frozen=True)
class Policy:
    name: str
    schedule: Schedule = field(default_factory=StandardSchedule)
    time_zone: str = "UTC"
    instant_rp_days: int = 2
    retention: Retention = field(default_factory=Retention)
    modified_at: datetime | None = None   # set when stored; slots before it follow the old policy
    # Managed-disk VMs only (restore points): CrashConsistent skips the extension (no scripts, no freeze).
    restore_point_consistency: str = "ApplicationConsistent"

    def __post_init__(self) -> None:
        check_name(self.name, "name", "policy")
        if self.restore_point_consistency not in RESTORE_POINT_CONSISTENCY:
            raise ValidationError(f"restore point consistency must be one of {', '.join(RESTORE_POINT_CONSISTENCY)}, "
                                  f"not {self.restore_point_consistency!r}", field="restore_point_consistency")
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValidationError(f"unknown time zone {self.time_zone!r}; use an IANA name such as "
                                  f"Europe/Berlin or UTC", field="time_zone") from None
        low, high = (ENHANCED_INSTANT_RP_DAYS if self.policy_type is PolicyType.ENHANCED
                     else STANDARD_INSTANT_RP_DAYS)
        if isinstance(self.instant_rp_days, bool) or not isinstance(self.instant_rp_days, int) \
                or not low <= self.instant_rp_days <= high:
            raise ValidationError(f"instant-restore retention must be from {low} to {high} days for a "
                                  f"{self.policy_type.name.title()} policy, not {self.instant_rp_days}",
                                  field="instant_rp_days")
        if self.schedule.frequency is Frequency.WEEKLY and self.instant_rp_days != WEEKLY_INSTANT_RP_DAYS:
            raise ValidationError(f"a Weekly policy keeps instant-restore snapshots {WEEKLY_INSTANT_RP_DAYS} "
                                  f"days", field="instant_rp_days")
        self.retention.check_for(self.schedule)
        if self.modified_at is not None:
            object.__setattr__(self, "modified_at", utc(self.modified_at))

    @property
    def policy_type(self) -> PolicyType:
        return PolicyType.ENHANCED if isinstance(self.schedule, EnhancedSchedule) else PolicyType.STANDARD

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def touched(self, now: datetime) -> "Policy":
        return replace(self, modified_at=now)

    # --- the stored and printed document (shaped like AzureIaaSVMProtectionPolicy) ----------------
    def to_document(self) -> dict[str, Any]:
        schedule = self.schedule
        if isinstance(schedule, EnhancedSchedule):
            schedule_doc = {"scheduleRunFrequency": Frequency.HOURLY.value,
                            "hourlySchedule": {"interval": schedule.interval_hours,
                                               "scheduleWindowStartTime": _hhmm(schedule.window_start),
                                               "scheduleWindowDuration": schedule.window_hours}}
        else:
            schedule_doc = {"scheduleRunFrequency": schedule.frequency.value,
                            "scheduleRunTimes": [_hhmm(schedule.time)],
                            "scheduleRunDays": [d.value for d in schedule.days]}
        r = self.retention
        return {
            "name": self.name,
            "policyType": self.policy_type.value,
            "timeZone": self.time_zone,
            "schedulePolicy": schedule_doc,
            "instantRpRetentionRangeInDays": self.instant_rp_days,
            "retentionPolicy": {
                "dailySchedule": _duration(r.daily_days, "Days"),
                "weeklySchedule": _duration(r.weekly_weeks, "Weeks",
                                            daysOfTheWeek=[d.value for d in r.weekly_days]),
                "monthlySchedule": _duration(r.monthly_months, "Months", **_selector_doc(r.monthly_on)),
                "yearlySchedule": _duration(r.yearly_years, "Years", **_selector_doc(r.yearly_on),
                                            **({"monthsOfYear": [MONTHS[m - 1] for m in r.yearly_months]}
                                               if r.yearly_months else {})),
            },
            "restorePointConsistency": self.restore_point_consistency,
            "modifiedAt": utc(self.modified_at).isoformat().replace("+00:00", "Z") if self.modified_at else None,
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> "Policy":
        """Read a document written by ``to_document`` (or typed by a user); errors name the field."""
        if not isinstance(doc, dict):
            raise ValidationError("a policy must be a JSON object", field="policy")
        sched = doc.get("schedulePolicy") or {}
        frequency = _enum(Frequency, sched.get("scheduleRunFrequency", "Daily"), "schedule.frequency")
        if frequency is Frequency.HOURLY:
            hourly = sched.get("hourlySchedule") or {}
            schedule: Schedule = EnhancedSchedule(
                interval_hours=_int(hourly.get("interval", 4), "schedule.interval_hours"),
                window_start=parse_hhmm(hourly.get("scheduleWindowStartTime", "08:00"), "schedule.window_start"),
                window_hours=_int(hourly.get("scheduleWindowDuration", 24), "schedule.window_hours"))
        else:
            times = sched.get("scheduleRunTimes") or ["22:30"]
            if not isinstance(times, list) or len(times) != 1:
                raise ValidationError("a Standard policy runs once a day: give exactly one time",
                                      field="schedule.time")
            schedule = StandardSchedule(
                frequency=frequency, time=parse_hhmm(times[0], "schedule.time"),
                days=tuple(Weekday.parse(d, field_name="schedule.days") for d in sched.get("scheduleRunDays") or ()))
        ret = doc.get("retentionPolicy") or {}
        weekly = ret.get("weeklySchedule") or {}
        retention = Retention(
            daily_days=_count(ret.get("dailySchedule"), "retention.daily_days"),
            weekly_weeks=_count(weekly, "retention.weekly_weeks"),
            weekly_days=tuple(Weekday.parse(d, field_name="retention.weekly_days")
                              for d in weekly.get("daysOfTheWeek") or ()),
            monthly_months=_count(ret.get("monthlySchedule"), "retention.monthly_months"),
            yearly_years=_count(ret.get("yearlySchedule"), "retention.yearly_years"),
            monthly_on=_selector(ret.get("monthlySchedule"), "retention.monthly_on"),
            yearly_on=_selector(ret.get("yearlySchedule"), "retention.yearly_on"),
            yearly_months=tuple(_month((ret.get("yearlySchedule") or {}).get("monthsOfYear") or ())))
        modified = doc.get("modifiedAt")
        try:
            modified_at = datetime.fromisoformat(modified.replace("Z", "+00:00")) if modified else None
        except (AttributeError, ValueError):
            raise ValidationError(f"modifiedAt is not an ISO time: {modified!r}", field="modified_at") from None
        return cls(name=doc.get("name", ""), schedule=schedule, time_zone=doc.get("timeZone", "UTC"),
                   instant_rp_days=_int(doc.get("instantRpRetentionRangeInDays", 2), "instant_rp_days"),
                   retention=retention, modified_at=modified_at,
                   restore_point_consistency=doc.get("restorePointConsistency") or "ApplicationConsistent")


def default_policy() -> Policy:
    """Azure's built-in DefaultPolicy: daily at 22:30 UTC, 2 days of instant restore, 30 daily points."""
    return Policy(name=DEFAULT_POLICY_NAME, schedule=StandardSchedule(Frequency.DAILY, time(22, 30)),
                  time_zone="UTC", instant_rp_days=2, retention=Retention(daily_days=30))


def check_name(name: object, field_name: str, what: str) -> str:
    """Names become Table row keys: letters, digits, '-', '_', '.', at most 64 characters."""
    if not isinstance(name, str) or not name or len(name) > 64 or name[0] in "-." \
            or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name):
        raise ValidationError(f"{what} name {name!r} is invalid; use 1-64 letters, digits, '-', '_' or '.'",
                              field=field_name)
    return name


def parse_hhmm(text: object, field_name: str) -> time:
    try:
        hours, minutes = str(text).strip().split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValidationError(f"{text!r} is not a time of day (HH:MM)", field=field_name) from None


def _check_half_hour(value: time, field_name: str) -> None:
    if value.minute not in (0, 30) or value.second or value.microsecond:
        raise ValidationError(f"times run on the hour or half hour, not {_hhmm(value)}", field=field_name)


def _hhmm(value: time) -> str:
    return f"{value.hour:02d}:{value.minute:02d}"


def _duration(count: int | None, unit: str, **extra: Any) -> dict[str, Any] | None:
    if count is None:
        return None
    return {"retentionDuration": {"count": count, "durationType": unit}, **extra}


def _selector_doc(selector: PointSelector) -> dict[str, Any]:
    """az's retentionScheduleFormatType and its detail; nothing for the default (the first backup)."""
    if selector.format_type == "Daily":
        return {"retentionScheduleFormatType": "Daily",
                "retentionScheduleDaily": {"daysOfTheMonth": [
                    {"date": day, "isLast": day == LAST_DAY_OF_MONTH} for day in selector.days_of_month]}}
    if selector.format_type == "Weekly":
        return {"retentionScheduleFormatType": "Weekly",
                "retentionScheduleWeekly": {"daysOfTheWeek": [d.value for d in selector.days_of_week],
                                            "weeksOfTheMonth": [w.value for w in selector.weeks_of_month]}}
    return {}


def _selector(section: object, field_name: str) -> PointSelector:
    if not isinstance(section, dict) or not section.get("retentionScheduleFormatType"):
        return PointSelector()
    kind = str(section["retentionScheduleFormatType"]).lower()
    if kind == "daily":
        days = (section.get("retentionScheduleDaily") or {}).get("daysOfTheMonth") or []
        return PointSelector(days_of_month=tuple(
            LAST_DAY_OF_MONTH if isinstance(d, dict) and d.get("isLast") else
            _int(d.get("date") if isinstance(d, dict) else d, field_name) for d in days))
    if kind == "weekly":
        weekly = section.get("retentionScheduleWeekly") or {}
        return PointSelector(
            weeks_of_month=tuple(_enum(WeekOfMonth, w, field_name) for w in weekly.get("weeksOfTheMonth") or ()),
            days_of_week=tuple(Weekday.parse(str(d), field_name=field_name)
                               for d in weekly.get("daysOfTheWeek") or ()))
    raise ValidationError(f"retentionScheduleFormatType is Daily or Weekly, not "
                          f"{section['retentionScheduleFormatType']!r}", field=field_name)


def _month(values: object) -> list[int]:
    months = []
    for value in values if isinstance(values, (list, tuple)) else [values]:
        names = [m.lower() for m in MONTHS]
        text = str(value).strip().lower()
        if text in names:
            months.append(names.index(text) + 1)
        elif text[:3] in [n[:3] for n in names]:
            months.append([n[:3] for n in names].index(text[:3]) + 1)
        else:
            months.append(_int(value, "retention.yearly_months"))
    return months


def _count(section: Any, field_name: str) -> int | None:
    if not section:
        return None
    try:
        return _int(section["retentionDuration"]["count"], field_name)
    except (KeyError, TypeError):
        raise ValidationError("retention needs retentionDuration.count", field=field_name) from None


def _int(value: Any, field_name: str) -> int:
    if isinstance(value, bool):
        raise ValidationError(f"{value!r} is not a whole number", field=field_name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{value!r} is not a whole number", field=field_name) from None


def _enum(kind: type[_E], value: object, field_name: str) -> _E:
    for member in kind:
        if str(value).lower() == member.value.lower():
            return member
    raise ValidationError(f"{value!r} is not one of {', '.join(m.value for m in kind)}", field=field_name)
