"""`vmsnap policy create|set|show|list`, shaped like `az backup policy`.

A policy comes from flags (`--frequency Daily --time 22:30 --time-zone Europe/Berlin ...`) or from a
JSON document (`--policy FILE`, the shape `policy show -o json` prints); `set` changes only what is given.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.cli import add_output_option
from shared.cli.output import choice, emit, emit_table, name, Subparsers
from shared.domain.az_policy import from_az_policy, iana_time_zone
from shared.domain.policy import EnhancedSchedule, Frequency, Policy, StandardSchedule, default_policy
from shared.errors import ValidationError

# Which flag a user should fix when a field is invalid.
FLAGS = {
    "name": "--name", "time_zone": "--time-zone", "instant_rp_days": "--instant-rp-days",
    "schedule.frequency": "--frequency", "schedule.time": "--time", "schedule.days": "--days",
    "schedule.interval_hours": "--interval", "schedule.window_start": "--window-start",
    "schedule.window_hours": "--window-hours", "schedule": "--frequency",
    "retention.daily_days": "--daily-retention", "retention.weekly_weeks": "--weekly-retention",
    "retention.weekly_days": "--weekly-retention-days", "retention.monthly_months": "--monthly-retention",
    "retention.yearly_years": "--yearly-retention",
}

if TYPE_CHECKING:
    from shared.bootstrap import Services


def register(subparsers: Subparsers) -> None:
    group = subparsers.add_parser("policy", help="backup policies: when to back up and how long to keep")
    sub = group.add_subparsers(dest="command", metavar="<command>", required=True)

    create = sub.add_parser("create", help="create a policy")
    _policy_options(create)
    create.set_defaults(handler=_create)

    update = sub.add_parser("set", help="change a policy; only the options given change")
    _policy_options(update)
    update.set_defaults(handler=_set)

    show = sub.add_parser("show", help="show one policy")
    show.add_argument("-n", "--name", required=True, type=name("policy"))
    add_output_option(show)
    show.set_defaults(handler=_show)

    listing = sub.add_parser("list", help="list policies")
    add_output_option(listing)
    listing.set_defaults(handler=_list)


def _policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--name", required=True, type=name("policy"), help="policy name")
    parser.add_argument("--policy", metavar="FILE",
                        help="policy JSON document: as `vmsnap policy show -o json` or `az backup policy show` "
                             "print it; '-' reads stdin")
    frequencies = [f.value for f in Frequency]
    parser.add_argument("--frequency", choices=frequencies, type=choice(frequencies),
                        help="Daily or Weekly (Standard), Hourly (Enhanced)")
    parser.add_argument("--time", help="Standard: time of day, HH:MM on the hour or half hour")
    parser.add_argument("--days", help="Weekly: days, e.g. Sun or Mon,Thu")
    parser.add_argument("--interval", type=int, help="Hourly: every 4, 6, 8 or 12 hours")
    parser.add_argument("--window-start", help="Hourly: window start, HH:MM")
    parser.add_argument("--window-hours", type=int, help="Hourly: window length in hours (interval..24)")
    parser.add_argument("--time-zone", help="time zone: IANA (Europe/Berlin) or Windows (W. Europe Standard Time); "
                                            "default UTC")
    parser.add_argument("--instant-rp-days", type=int,
                        help="days to keep instant-restore snapshots (Standard 1-5, Weekly 5, Enhanced 1-30)")
    parser.add_argument("--daily-retention", type=int, help="days to keep daily points (7-9999)")
    parser.add_argument("--weekly-retention", type=int, help="weeks to keep weekly points (1-5163)")
    parser.add_argument("--weekly-retention-days", help="whose point a week keeps, e.g. Sun")
    parser.add_argument("--monthly-retention", type=int, help="months to keep monthly points (1-1188)")
    parser.add_argument("--yearly-retention", type=int, help="years to keep yearly points (1-99)")
    add_output_option(parser)


def _create(args: argparse.Namespace, services: Services) -> int:
    from shared.services.protection import create_policy

    base = _read_document(args.policy) if args.policy else _starting_document(args.frequency or "Daily")
    policy = create_policy(services, _build(base, args))
    _emit(args, [policy], services)
    return 0


def _set(args: argparse.Namespace, services: Services) -> int:
    from shared.services.protection import set_policy

    if args.policy:
        base = _read_document(args.policy)
    else:
        base = services.policies.get(args.name).to_document()
        if args.frequency and args.frequency != base["schedulePolicy"]["scheduleRunFrequency"]:
            base = _rebase(base, args.frequency)
    policy = set_policy(services, _build(base, args))
    _emit(args, [policy], services)
    return 0


def _show(args: argparse.Namespace, services: Services) -> int:
    _emit(args, [services.policies.get(args.name)], services)
    return 0


def _list(args: argparse.Namespace, services: Services) -> int:
    _emit(args, services.policies.list(), services, as_list=True)
    return 0


def _starting_document(frequency: str) -> dict[str, Any]:
    """Azure's portal defaults: Daily 22:30 / 30 days; Weekly Sunday / 12 weeks; Hourly 08:00 every 4 h."""
    return _rebase(default_policy().to_document(), frequency)


def _rebase(doc: dict[str, Any], frequency: str) -> dict[str, Any]:
    doc = dict(doc)
    retention = dict(doc.get("retentionPolicy") or {})
    if frequency == Frequency.HOURLY.value:
        doc["schedulePolicy"] = {"scheduleRunFrequency": "Hourly", "hourlySchedule": {
            "interval": 4, "scheduleWindowStartTime": "08:00", "scheduleWindowDuration": 24}}
        doc["instantRpRetentionRangeInDays"] = 7
        retention["dailySchedule"] = retention.get("dailySchedule") or _count(30, "Days")
    elif frequency == Frequency.WEEKLY.value:
        runs = (doc.get("schedulePolicy") or {}).get("scheduleRunTimes") or ["22:30"]
        doc["schedulePolicy"] = {"scheduleRunFrequency": "Weekly", "scheduleRunTimes": runs,
                                 "scheduleRunDays": ["Sunday"]}
        doc["instantRpRetentionRangeInDays"] = 5
        retention["dailySchedule"] = None
        retention["weeklySchedule"] = retention.get("weeklySchedule") or _count(12, "Weeks")
    else:
        runs = (doc.get("schedulePolicy") or {}).get("scheduleRunTimes") or ["22:30"]
        doc["schedulePolicy"] = {"scheduleRunFrequency": "Daily", "scheduleRunTimes": runs, "scheduleRunDays": []}
        doc["instantRpRetentionRangeInDays"] = 2
        retention["dailySchedule"] = retention.get("dailySchedule") or _count(30, "Days")
    doc["retentionPolicy"] = retention
    return doc


def _count(count: int, unit: str) -> dict[str, Any]:
    return {"retentionDuration": {"count": count, "durationType": unit}}


def _read_document(path: str) -> dict[str, Any]:
    """The policy document in ``path``: vmsnap's own shape or az's (converted), checked for depth."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        doc = json.loads(text)
    except OSError as exc:
        raise ValidationError(f"--policy: cannot read {path}: {exc.strerror}", field="policy") from exc
    except UnicodeDecodeError as exc:
        raise ValidationError(f"--policy: {path} is not UTF-8 text", field="policy") from exc
    except json.JSONDecodeError as exc:
        raise ValidationError(f"--policy: {path} is not JSON: {exc}", field="policy") from exc
    except RecursionError as exc:
        raise ValidationError(f"--policy: {path} is nested too deeply to be a policy", field="policy") from exc
    if not isinstance(doc, dict):
        raise ValidationError("--policy: the document must be a JSON object", field="policy")
    try:
        doc = from_az_policy(doc)
    except ValidationError as exc:
        raise ValidationError(f"--policy: {exc}", field=exc.field) from exc
    doc.pop("protectedItemsCount", None)
    return doc


def _build(doc: dict[str, Any], args: argparse.Namespace) -> Policy:
    """Apply the given flags to a policy document and validate it; an error names the flag to fix."""
    try:
        return _apply_flags(doc, args)
    except (AttributeError, TypeError, KeyError, IndexError) as exc:
        # A field of the wrong JSON type (a string where an object belongs, ...).
        raise ValidationError(f"--policy: the document is not shaped like a policy ({type(exc).__name__}: "
                              f"{exc}); compare it with `vmsnap policy show -o json`", field="policy") from exc


def _apply_flags(doc: dict[str, Any], args: argparse.Namespace) -> Policy:
    doc = json.loads(json.dumps(doc))   # a private copy
    doc["name"] = args.name
    sched = doc.setdefault("schedulePolicy", {})
    if args.time is not None:
        sched["scheduleRunTimes"] = [args.time]
    if args.days is not None:
        sched["scheduleRunDays"] = [d for d in args.days.split(",") if d.strip()]
    hourly = sched.get("hourlySchedule")
    if hourly is not None:
        for flag, key in ((args.interval, "interval"), (args.window_start, "scheduleWindowStartTime"),
                          (args.window_hours, "scheduleWindowDuration")):
            if flag is not None:
                hourly[key] = flag
    elif any(v is not None for v in (args.interval, args.window_start, args.window_hours)):
        raise ValidationError("--interval, --window-start and --window-hours need --frequency Hourly",
                              field="schedule.frequency")
    if args.time_zone is not None:
        doc["timeZone"] = iana_time_zone(args.time_zone)
    if args.instant_rp_days is not None:
        doc["instantRpRetentionRangeInDays"] = args.instant_rp_days
    retention = doc.setdefault("retentionPolicy", {})
    for value, key, unit in ((args.daily_retention, "dailySchedule", "Days"),
                             (args.weekly_retention, "weeklySchedule", "Weeks"),
                             (args.monthly_retention, "monthlySchedule", "Months"),
                             (args.yearly_retention, "yearlySchedule", "Years")):
        if value is not None:
            section = retention.get(key) or {}
            section["retentionDuration"] = {"count": value, "durationType": unit}
            retention[key] = section
    if args.weekly_retention_days is not None:
        section = retention.get("weeklySchedule") or {}
        section["daysOfTheWeek"] = [d for d in args.weekly_retention_days.split(",") if d.strip()]
        retention["weeklySchedule"] = section
    try:
        return Policy.from_document(doc)
    except ValidationError as exc:
        flag = FLAGS.get(exc.field or "")
        if flag and not args.policy:
            raise ValidationError(f"{flag}: {exc}", field=exc.field) from exc
        raise ValidationError(f"{exc.field}: {exc}" if exc.field else str(exc), field=exc.field) from exc


def _emit(args: argparse.Namespace, policies: list[Policy], services: Services, *, as_list: bool = False) -> None:
    counts = {p.name: services.protected_items.count_by_policy(p.name) for p in policies}
    docs = [{**p.to_document(), "protectedItemsCount": counts[p.name]} for p in policies]
    emit(args, docs if as_list else docs[0], lambda: emit_table(
        [_row(p, counts[p.name]) for p in policies],
        ["Name", "Type", "Schedule", "Time Zone", "Instant RP Days", "Retention", "Protected Items"]))


def _row(policy: Policy, count: int) -> list[Any]:
    schedule = policy.schedule
    if isinstance(schedule, EnhancedSchedule):
        when = (f"every {schedule.interval_hours}h from {schedule.window_start:%H:%M} "
                f"for {schedule.window_hours}h")
    elif isinstance(schedule, StandardSchedule) and schedule.frequency is Frequency.WEEKLY:
        when = f"weekly {','.join(d.value[:3] for d in schedule.days)} {schedule.time:%H:%M}"
    else:
        when = f"daily {schedule.time:%H:%M}"
    r = policy.retention
    kept = ", ".join(f"{n} {unit}" for n, unit in ((r.daily_days, "days"), (r.weekly_weeks, "weeks"),
                                                   (r.monthly_months, "months"), (r.yearly_years, "years"))
                     if n is not None)
    kind = "Enhanced" if policy.policy_type.value == "V2" else "Standard"
    return [policy.name, kind, when, policy.time_zone, str(policy.instant_rp_days), kept, str(count)]
