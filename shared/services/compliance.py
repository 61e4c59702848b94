"""Use case: the compliance report (``vmsnap report compliance``): each protected item's achieved RPO,
slots met and missed and state, with the evidence (newest point, missed slots, last error and its advice),
and each policy's roll-up, computed from the tables as they are now (shared/domain/compliance.py).

Each table is read once per report: the policies, the items (a page at a time), the backup jobs of the
window (each shard's range, a few fields of each job), and of the recovery points the Available ones of
the last eight days (one pass), plus one short read for each item with none among them.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.clock import utc
from shared.domain.compliance import (ItemCompliance, LastError, PolicyCompliance, PolicySlots, assess_item, by_policy,
                                      policy_slots)
from shared.domain.jobs import JobStatus
from shared.domain.policy import Policy
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import MAX_FUTURE, SUCCESSFUL, RecoveryPoint
from shared.errors import NotFoundError, ValidationError
from shared.ports import JobQuery

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

DEFAULT_DAYS = 30
MAX_DAYS = 400
POINT_READERS = 8       # items' newest points are independent reads: overlap their round trips
RECENT = timedelta(days=8)      # a week of points covers the newest of every item on a daily or weekly policy


@dataclass(frozen=True)
class ComplianceReport:
    generated_at: datetime
    since: datetime
    days: int
    items: list[ItemCompliance]
    policies: list[PolicyCompliance]


def compliance_report(svc: Services, *, policy: str | None = None, vm: str | None = None,
                      days: int = DEFAULT_DAYS) -> ComplianceReport:
    """The report over the last ``days`` days up to now, for every protected item (or one policy's, or one VM)."""
    if isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
        raise ValidationError(f"--days must be from 1 to {MAX_DAYS}, not {days}", field="days")
    now = svc.clock.now()
    since = now - timedelta(days=days)
    policies = {p.name.lower(): p for p in svc.policies.list()}
    if policy is not None and policy.lower() not in policies:
        raise NotFoundError(f"policy {policy!r} not found; see 'vmsnap policy list'")
    items = _items(svc, vm, policy)
    successes, failures = _backups(svc, since, vm)
    points = _newest_points(svc, items, now)
    assessed = []
    computed: dict[str, PolicySlots] = {}       # a policy's slots, computed once for all its items
    for item in items:
        item_policy = policies.get(item.policy_name.lower()) or _policy(svc, item)
        key = item.vm_name.lower()
        name = item_policy.name.lower()
        if name not in computed:
            computed[name] = policy_slots(item_policy, since=since, now=now)
        assessed.append(assess_item(item, item_policy, now=now, since=since, successes=successes.get(key, []),
                                    points=points.get(key, []), last_error=failures.get(key),
                                    computed=computed[name]))
    log.info("compliance report over %s day(s): %s item(s), %s polic(ies)", days, len(assessed),
             len({a.policy_name for a in assessed}))
    return ComplianceReport(generated_at=now, since=since, days=days, items=assessed, policies=by_policy(assessed))


def _items(svc: Services, vm: str | None, policy: str | None) -> list[ProtectedItem]:
    if vm is not None:
        item = svc.protected_items.get(vm)
        if item is None:
            raise NotFoundError(f"VM {vm!r} is not protected; see 'vmsnap item list'")
        found = [item]
    else:
        found = [item for page in svc.protected_items.pages(page_size=1000) for item in page]
    return sorted((i for i in found if i.is_active and (policy is None or i.policy_name.lower() == policy.lower())),
                  key=lambda i: i.vm_name.lower())


def _backups(svc: Services, since: datetime, vm: str | None) -> tuple[dict[str, list[datetime]], dict[str, LastError]]:
    """Per VM: the slots of its successful backups since ``since``, and its newest failed backup."""
    successes: dict[str, list[datetime]] = {}
    failures: dict[str, LastError] = {}
    for job in svc.jobs.outcomes(JobQuery(vm_name=vm, operation="Backup", since=since)):
        key = job.vm_name.lower()
        if job.status in SUCCESSFUL:
            successes.setdefault(key, []).append(utc(job.slot))
        elif job.status is JobStatus.FAILED and (key not in failures or failures[key].slot < utc(job.slot)):
            failures[key] = LastError(job.job_id, utc(job.slot), job.error)
    return successes, failures


def _newest_points(svc: Services, items: list[ProtectedItem], now: datetime) -> dict[str, list[RecoveryPoint]]:
    """Each item's newest restorable point (Available, not stamped beyond now + MAX_FUTURE): the points of
    the last RECENT days in one pass, then one short read for each item that has none among them."""
    until = now + MAX_FUTURE
    recent = svc.recovery_points.recent_available(now - RECENT, until)

    def newest(item: ProtectedItem) -> list[RecoveryPoint]:
        point = recent.get(item.vm_name.lower()) or svc.recovery_points.newest_available(item.vm_name, until=until)
        return [] if point is None else [point]

    with ThreadPoolExecutor(POINT_READERS) as pool:
        return {item.vm_name.lower(): found for item, found in zip(items, pool.map(newest, items))}


def _policy(svc: Services, item: ProtectedItem) -> Policy:
    """The item's policy when the listing missed it (created meanwhile); NotFoundError names it."""
    return svc.policies.get(item.policy_name)
