"""What needs an operator, item by item: the dashboard's "needs attention" list, derived from the compliance
figures and the active alerts, each reason with the advice that goes with it (docs/dashboard.md)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable, Sequence

from shared.clock import utc
from shared.domain.alerts import Alert
from shared.domain.compliance import ItemCompliance, ItemState


@dataclass(frozen=True)
class Attention:
    """One item that needs attention: why (most urgent first) and what to do about it."""

    item: str
    policy: str | None
    state: ItemState | None         # None: the item is not in the report (an alert of an unprotected VM)
    reasons: tuple[str, ...]
    advice: tuple[str, ...]
    severity: int                   # 0 most urgent: Unprotected, then AtRisk, then a failure or an alert

    @property
    def sort_key(self) -> tuple[int, str]:
        return self.severity, self.item.lower()


def needs_attention(items: Sequence[ItemCompliance], alerts: Iterable[Alert]) -> list[Attention]:
    """Every item that is Unprotected or AtRisk, whose newest backup failed after its newest point, or that has
    an active alert; most urgent first, then by name."""
    by_item: dict[str, tuple[list[str], list[str], list[int]]] = {}
    known = {item.vm_name.lower(): item for item in items}
    names = {key: item.vm_name for key, item in known.items()}
    for item in items:
        reasons, advice, severity = by_item.setdefault(item.vm_name.lower(), ([], [], []))
        error = item.last_error
        failed_since_point = error is not None and (
            item.newest_point is None or utc(error.slot) >= utc(item.newest_point.created_at))
        if item.state is ItemState.UNPROTECTED:
            reasons.append("no restorable recovery point")
            severity.append(0)
        elif item.state is ItemState.AT_RISK and item.achieved_rpo is not None:
            reasons.append(f"newest point is {describe_age(item.achieved_rpo)} old, above the target RPO of "
                           f"{describe_age(item.target_rpo)}")
            severity.append(1)
        if failed_since_point and error is not None:
            code = error.error.error_code if error.error else "Failed"
            title = f": {error.error.error_title}" if error.error and error.error.error_title else ""
            reasons.append(f"last backup failed ({code}{title}), job {error.job_id}")
            advice.extend(error.error.recommendations if error.error else ())
            severity.append(2)
        if item.state is ItemState.UNPROTECTED and not advice:
            advice.append(f"Back up the VM now ('vmsnap backup-now --vm {item.vm_name}'), or wait for its next "
                          f"scheduled slot, and check the job's result.")
    for alert in alerts:
        if not alert.is_active:
            continue
        names.setdefault(alert.item.lower(), alert.item)
        reasons, advice, severity = by_item.setdefault(alert.item.lower(), ([], [], []))
        reasons.append(f"{alert.kind.value} alert ({alert.severity}, {alert.count}x): {alert.summary}")
        advice.extend(alert.recommendations)
        severity.append(2 if alert.severity == "Sev1" else 3)
    found = []
    for key, (reasons, advice, severity) in by_item.items():
        if not reasons:
            continue
        assessed = known.get(key)
        found.append(Attention(item=names[key], policy=assessed.policy_name if assessed else None,
                               state=assessed.state if assessed else None, reasons=tuple(reasons),
                               advice=tuple(dict.fromkeys(advice)), severity=min(severity)))
    return sorted(found, key=lambda a: a.sort_key)


def describe_age(delta: timedelta) -> str:
    """A duration as an operator reads it at a glance: ``3 d 4 h``, ``5 h 12 min``, ``40 s``."""
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"
