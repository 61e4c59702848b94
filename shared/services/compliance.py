"""Use case: the compliance report (``vmsnap report compliance``): each protected item's achieved RPO,
slots met and missed and state, with the evidence (newest point, missed slots, last error and its advice),
and each policy's roll-up, computed from the tables as they are now (shared/domain/compliance.py).

Each table is read once per report: the policies, the items (a page at a time), the roll-up's rows of the
window's months (each shard's range side by side), the job feed after the roll-up's last fold and those jobs,
the backup jobs of any part of the window the roll-up does not cover yet, and of the recovery points the
Available ones within the longest target RPO (one pass), plus one short read for each item with none there.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from shared.clock import utc
from shared.domain.compliance import (DEFAULT_DAYS, ItemCompliance, PolicyCompliance, PolicySlots, assess_item,
                                      by_policy, check_days, policy_slots)
from shared.domain.policy import Policy
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import MAX_FUTURE, RecoveryPoint
from shared.domain.rollup import ItemHistory, MonthRollup, histories, job_rollup, of_job
from shared.errors import NotFoundError
from shared.ports import JobQuery
from shared.services.needs import (HasClock, HasJobFeed, HasJobs, HasPolicies, HasProtectedItems, HasRecoveryPoints,
                                   HasRollup)
from shared.services.outcomes import FEED_MARGIN

log = logging.getLogger(__name__)


class HistoriesNeeds(HasJobFeed, HasJobs, HasRollup, Protocol):
    """What _histories() reads."""


class ComplianceNeeds(HasClock, HasJobFeed, HasJobs, HasPolicies, HasProtectedItems, HasRecoveryPoints, HasRollup,
                      Protocol):
    """What compliance_report() reads."""


POINT_READERS = 8       # items' newest points are independent reads: overlap their round trips
RECENT = timedelta(days=8)      # the longest pass over recent points: a weekly policy's target RPO


@dataclass(frozen=True)
class ComplianceReport:
    generated_at: datetime
    since: datetime
    days: int
    items: list[ItemCompliance]
    policies: list[PolicyCompliance]


def compliance_report(svc: ComplianceNeeds, *, policy: str | None = None, vm: str | None = None,
                      days: int = DEFAULT_DAYS) -> ComplianceReport:
    """The report over the last ``days`` days up to now, for every protected item (or one policy's, or one VM)."""
    check_days(days)
    now = svc.clock.now()
    since = now - timedelta(days=days)
    policies = {p.name.lower(): p for p in svc.policies.list()}
    if policy is not None and policy.lower() not in policies:
        raise NotFoundError(f"policy {policy!r} not found; see 'vmsnap policy list'")
    items = [(item, policies.get(item.policy_name.lower()) or _policy(svc, item)) for item in _items(svc, vm, policy)]
    computed: dict[str, PolicySlots] = {}       # a policy's slots, computed once for all its items
    for _, item_policy in items:
        if item_policy.name.lower() not in computed:
            computed[item_policy.name.lower()] = policy_slots(item_policy, since=since, now=now)
    backups = _histories(svc, since, now, vm)
    # An item within its target RPO has a point that recent: one pass over the points of the longest target
    # finds those; an item at risk (or a report of one VM) costs a short read.
    recent = None if vm is not None else min(RECENT, max((c.target for c in computed.values()), default=RECENT))
    points = _newest_points(svc, [item for item, _ in items], now, recent)
    assessed = []
    for item, item_policy in items:
        key = item.vm_name.lower()
        history = backups.get(key) or ItemHistory([], None)
        assessed.append(assess_item(item, item_policy, now=now, since=since, successes=history.successes,
                                    points=points.get(key, []), last_error=history.last_failure,
                                    computed=computed[item_policy.name.lower()]))
    log.info("compliance report over %s day(s): %s item(s), %s polic(ies)", days, len(assessed),
             len({a.policy_name for a in assessed}))
    return ComplianceReport(generated_at=now, since=since, days=days, items=assessed, policies=by_policy(assessed))


def _items(svc: HasProtectedItems, vm: str | None, policy: str | None) -> list[ProtectedItem]:
    if vm is not None:
        item = svc.protected_items.get(vm)
        if item is None:
            raise NotFoundError(f"VM {vm!r} not found among the protected items; see 'vmsnap item list'")
        found = [item]
    else:
        found = [item for page in svc.protected_items.pages(page_size=1000) for item in page]
    return sorted((i for i in found if i.is_active and (policy is None or i.policy_name.lower() == policy.lower())),
                  key=lambda i: i.vm_name.lower())


def _histories(svc: HistoriesNeeds, since: datetime, now: datetime, vm: str | None) -> dict[str, ItemHistory]:
    """Per VM: the slots of its successful backups since ``since`` and its newest failed backup. From the
    roll-up where it covers the window, the jobs of the feed it has not folded yet, and the jobs table for
    the part of the window before the roll-up began (all of it, before any fold)."""
    state = svc.rollup.state()
    covered = state.covered_from
    rows: list[MonthRollup] = []
    if covered is None or covered > since:
        for job in svc.jobs.outcomes(JobQuery(vm_name=vm, operation="Backup", since=since, until=covered)):
            row = job_rollup(job.vm_name, job.job_id, job.slot, job.status, job.error)
            if row is not None:
                rows.append(row)
    if covered is not None:
        rows += svc.rollup.months(max(since, covered), now, vm_name=vm)
        # The feed since the last fold (its clock may run ahead of ours: up to now + the margin).
        tail = svc.job_feed.between((state.folded_through or covered) - FEED_MARGIN, now + FEED_MARGIN)
        wanted = [e.job_id for e in tail if vm is None or e.vm_name.lower() == vm.lower()]
        if wanted:
            rows += [row for job in svc.jobs.get_many(wanted).values() if (row := of_job(job)) is not None]
    return histories(rows, since)


def _newest_points(svc: HasRecoveryPoints, items: list[ProtectedItem], now: datetime,
                   recent: timedelta | None) -> dict[str, list[RecoveryPoint]]:
    """Each item's newest restorable point (Available, not stamped beyond now + MAX_FUTURE): the points of
    the last ``recent`` in one pass (none: no pass), then one short read for each item with none among them."""
    until = now + MAX_FUTURE
    found = {} if recent is None else svc.recovery_points.recent_available(now - recent, until)

    def newest(item: ProtectedItem) -> list[RecoveryPoint]:
        point = found.get(item.vm_name.lower()) or svc.recovery_points.newest_available(item.vm_name, until=until)
        return [] if point is None else [point]

    with ThreadPoolExecutor(POINT_READERS) as pool:
        return {item.vm_name.lower(): found for item, found in zip(items, pool.map(newest, items))}


def _policy(svc: HasPolicies, item: ProtectedItem) -> Policy:
    """The item's policy when the listing missed it (created meanwhile); NotFoundError names it."""
    return svc.policies.get(item.policy_name)
