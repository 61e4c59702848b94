"""Reads a policy exported by ``az backup policy show`` (an ARM AzureIaaSVMProtectionPolicy resource)
into vmsnap's policy document, and Windows time-zone names (which Azure Backup uses) into IANA names.

The Windows-to-IANA table is CLDR's windowsZones, as the ``tzlocal`` package ships and maintains it.
"""
from __future__ import annotations

from typing import Any, Mapping

from shared.errors import ValidationError

# Deeper than any policy document: a file nested further is refused before anything recurses into it.
MAX_DEPTH = 16


def is_az_policy(doc: Mapping[str, Any]) -> bool:
    """Whether ``doc`` is az's resource shape (fields under ``properties``), not vmsnap's own."""
    return isinstance(doc.get("properties"), dict) and "schedulePolicy" not in doc


def from_az_policy(doc: Mapping[str, Any]) -> dict[str, Any]:
    """vmsnap's policy document for an az policy resource; vmsnap's own document comes back unchanged
    except for a Windows time-zone name, which becomes its IANA name."""
    check_depth(doc)
    if not is_az_policy(doc):
        out = dict(doc)
    else:
        props: Mapping[str, Any] = doc["properties"]
        management = props.get("backupManagementType")
        if management not in (None, "AzureIaasVM"):
            raise ValidationError(f"policy is for {management}, not Azure VMs (AzureIaasVM)",
                                  field="backupManagementType")
        out = {
            "name": doc.get("name", ""),
            "timeZone": props.get("timeZone") or "UTC",
            "schedulePolicy": _schedule(_mapping(props.get("schedulePolicy"), "schedulePolicy"),
                                        props.get("policyType")),
            "instantRpRetentionRangeInDays": props.get("instantRpRetentionRangeInDays", 2),
            "retentionPolicy": _retention(_mapping(props.get("retentionPolicy"), "retentionPolicy")),
        }
    if isinstance(out.get("timeZone"), str):
        out["timeZone"] = iana_time_zone(out["timeZone"])
    return out


def iana_time_zone(name: str) -> str:
    """The IANA name of a Windows time zone (``W. Europe Standard Time`` -> ``Europe/Berlin``);
    any other name is returned as it is (IANA names, ``UTC``)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from tzlocal.windows_tz import win_tz

    text = name.strip()
    try:
        ZoneInfo(text)
        return text         # already IANA (UTC included): keep the operator's spelling
    except (ZoneInfoNotFoundError, ValueError):
        pass
    mapped: str | None = win_tz.get(text)
    if mapped is None:
        lowered = {k.lower(): v for k, v in win_tz.items()}
        mapped = lowered.get(text.lower())
    return mapped or text


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse a document nested deeper than ``limit`` (iteratively: no recursion to overflow)."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        current, depth = pending.pop()
        if depth > limit:
            raise ValidationError(f"the policy document is nested deeper than {limit} levels; a policy is "
                                  f"a few levels deep", field="policy")
        if isinstance(current, dict):
            pending += [(v, depth + 1) for v in current.values()]
        elif isinstance(current, list):
            pending += [(v, depth + 1) for v in current]


def _schedule(sched: Mapping[str, Any], policy_type: Any = None) -> dict[str, Any]:
    frequency = sched.get("scheduleRunFrequency") or "Daily"
    if policy_type == "V2" and str(frequency).lower() != "hourly":
        raise ValidationError(f"an Enhanced (V2) policy with a {frequency} schedule has no vmsnap equivalent: "
                              f"vmsnap's Enhanced policies run hourly; export a Standard (V1) policy or use "
                              f"--frequency Hourly", field="schedule.frequency")
    if str(frequency).lower() == "hourly":
        hourly = _mapping(sched.get("hourlySchedule"), "schedulePolicy.hourlySchedule")
        return {"scheduleRunFrequency": "Hourly", "hourlySchedule": {
            "interval": hourly.get("interval", 4),
            "scheduleWindowStartTime": _hhmm(hourly.get("scheduleWindowStartTime") or "08:00"),
            "scheduleWindowDuration": hourly.get("scheduleWindowDuration", 24)}}
    # V1 (SimpleSchedulePolicy) keeps times and days at the top; V2 nests them per frequency.
    nested = sched.get("weeklySchedule") if str(frequency).lower() == "weekly" else sched.get("dailySchedule")
    source = _mapping(nested, "schedulePolicy") if isinstance(nested, dict) else sched
    times = source.get("scheduleRunTimes") or ["22:30"]
    if not isinstance(times, list):
        raise ValidationError("schedulePolicy.scheduleRunTimes must be a list of times", field="schedule.time")
    return {"scheduleRunFrequency": frequency, "scheduleRunTimes": [_hhmm(t) for t in times],
            "scheduleRunDays": source.get("scheduleRunDays") or []}


def _retention(ret: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("dailySchedule", "weeklySchedule", "monthlySchedule", "yearlySchedule"):
        section = ret.get(key)
        if section is None:
            out[key] = None
            continue
        section = _mapping(section, f"retentionPolicy.{key}")
        kept: dict[str, Any] = {"retentionDuration": section.get("retentionDuration")}
        if key == "weeklySchedule" and section.get("daysOfTheWeek"):
            kept["daysOfTheWeek"] = section["daysOfTheWeek"]
        out[key] = kept
    return out


def _hhmm(value: Any) -> str:
    """``22:30`` from az's ``2023-01-01T22:30:00+00:00`` (or a plain ``22:30``)."""
    if not isinstance(value, str):
        raise ValidationError(f"{value!r} is not a time of day", field="schedule.time")
    text = value.split("T", 1)[1] if "T" in value else value
    return text[:5]


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{where} must be a JSON object, not {type(value).__name__}", field=where)
    return value
