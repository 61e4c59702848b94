"""Use cases of the dashboard (functions/dashboard.py): the fleet overview (compliance, active alerts, the
last day's backups and restores by outcome, what needs attention), with the compliance report and the last
day's counts reused for a short time, so a page costs a few reads however large the fleet
(docs/dashboard.md, "Freshness"); ``keep_warm`` computes them before any page asks and keeps them from
ever growing too old to serve, so no page waits for a report."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Protocol, TypeVar, cast

from shared.domain.alerts import Alert, AlertStatus
from shared.domain.attention import Attention, needs_attention
from shared.domain.compliance import DEFAULT_DAYS
from shared.ports import JobQuery
from shared.services.compliance import ComplianceNeeds, ComplianceReport, compliance_report
from shared.services.needs import (HasAlerts, HasClock, HasJobFeed, HasJobs, HasPolicies, HasProtectedItems,
                                   HasRecoveryPoints, HasRollup)

log = logging.getLogger(__name__)


class RecentNeeds(HasClock, HasJobs, Protocol):
    """What recent_outcomes() reads."""


class ActiveAlertsNeeds(HasAlerts, HasClock, Protocol):
    """What ReportCache.active_alerts() reads."""


class HasReportCache(Protocol):
    # Here rather than in needs.py: the cache is this module's own type.
    @property
    def report_cache(self) -> ReportCache: ...


class WarmNeeds(HasAlerts, HasClock, HasJobFeed, HasJobs, HasPolicies, HasProtectedItems, HasRecoveryPoints,
                HasRollup, Protocol):
    """What ReportCache.warm() reads: the report's, the counts' and the alerts' needs."""


class OverviewNeeds(HasAlerts, HasClock, HasJobFeed, HasJobs, HasPolicies, HasProtectedItems, HasRecoveryPoints,
                    HasReportCache, HasRollup, Protocol):
    """What fleet_overview() reads."""


# A report younger than this is served as it is; an older one (up to STALE_LIMIT) is served while one
# background run computes its successor; past STALE_LIMIT a request waits for a fresh one.
MAX_AGE = timedelta(seconds=30)
STALE_LIMIT = timedelta(minutes=10)
# How often keep_warm recomputes the overview's values: within STALE_LIMIT, so none of them is ever too old
# to serve while it runs (one compliance report per process per period: about a second of CPU at 1,000 items).
KEEP_WARM_EVERY = STALE_LIMIT / 2
MAX_REPORTS = 64                # values kept (reports by policy, vm, days; the counts); the oldest goes first
RECENT = timedelta(hours=24)
# What the overview counts by outcome over the last day: backups, restores and restore drills.
RECENT_OPERATIONS = ("Backup", "Restore", "RestoreTest")

Key = tuple[str | int | None, ...]
Background = Callable[[Callable[[], None]], None]
T = TypeVar("T")


def _report_key(policy: str | None, vm: str | None, days: int) -> Key:
    return "report", policy.lower() if policy else None, vm.lower() if vm else None, days


def _in_a_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="report-refresh", daemon=True).start()


class ReportCache:
    """What the dashboard reuses: compliance reports by (policy, vm, days) and the last day's outcome counts.
    Each is computed by one caller at a time (the others wait for it), served for MAX_AGE, then served stale
    while ``background`` computes the next (at most one run per key at a time); errors of a background run
    are logged and the stale value stays until STALE_LIMIT."""

    def __init__(self, *, max_age: timedelta = MAX_AGE, stale_limit: timedelta = STALE_LIMIT,
                 background: Background = _in_a_thread) -> None:
        self.max_age = max_age
        self.stale_limit = stale_limit
        self._background = background
        # A key's value is always made by the same function (the key names it): the T its caller asks for.
        self._values: dict[Key, tuple[datetime, object]] = {}
        self._locks: dict[Key, threading.Lock] = {}
        self._refreshing: set[Key] = set()
        self._guard = threading.Lock()
        self.computed = 0               # values computed: what the cache saved is visible to tests and benches

    def report(self, svc: ComplianceNeeds, *, policy: str | None = None, vm: str | None = None,
               days: int = DEFAULT_DAYS) -> ComplianceReport:
        return self._fresh(svc, _report_key(policy, vm, days),
                           lambda: compliance_report(svc, policy=policy, vm=vm, days=days))

    def recent(self, svc: RecentNeeds) -> RecentOutcomes:
        return self._fresh(svc, ("recent",), lambda: recent_outcomes(svc))

    def active_alerts(self, svc: ActiveAlertsNeeds) -> ActiveAlerts:
        return self._fresh(svc, ("alerts",), lambda: active_alerts(svc))

    def warm(self, svc: WarmNeeds) -> None:
        """Compute what the fleet overview reuses now, whatever its age (a caller asking meanwhile waits for
        this run rather than starting its own)."""
        parts: list[tuple[Key, Callable[[], object]]] = [
            (_report_key(None, None, DEFAULT_DAYS), lambda: compliance_report(svc)),
            (("recent",), lambda: recent_outcomes(svc)),
            (("alerts",), lambda: active_alerts(svc))]
        for key, compute in parts:
            with self._lock(key):
                self._compute(svc, key, compute)

    @property
    def refreshing(self) -> int:
        """Background runs under way."""
        with self._guard:
            return len(self._refreshing)

    def _fresh(self, svc: HasClock, key: Key, compute: Callable[[], T]) -> T:
        now = svc.clock.now()
        cached = self._values.get(key)
        if cached is not None and now - cached[0] <= self.max_age:
            return cast(T, cached[1])
        if cached is not None and now - cached[0] <= self.stale_limit:
            self._refresh(svc, key, compute)
            return cast(T, cached[1])
        with self._lock(key):
            cached = self._values.get(key)      # computed by the caller this one waited for
            if cached is not None and now - cached[0] <= self.max_age:
                return cast(T, cached[1])
            return self._compute(svc, key, compute)

    def _compute(self, svc: HasClock, key: Key, compute: Callable[[], T]) -> T:
        at = svc.clock.now()
        value = compute()
        with self._guard:
            self.computed += 1
            self._values[key] = (at, value)
            if len(self._values) > MAX_REPORTS:
                oldest = min(self._values, key=lambda k: self._values[k][0])
                del self._values[oldest]
        return value

    def _refresh(self, svc: HasClock, key: Key, compute: Callable[[], T]) -> None:
        with self._guard:
            if key in self._refreshing:
                return
            self._refreshing.add(key)

        def run() -> None:
            try:
                with self._lock(key):
                    self._compute(svc, key, compute)
            except Exception as exc:  # noqa: BLE001 - a background run has no caller to raise to
                log.warning("dashboard %s not refreshed: %s", " ".join(str(part) for part in key), exc)
            finally:
                with self._guard:
                    self._refreshing.discard(key)

        self._background(run)

    def _lock(self, key: Key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


@dataclass(frozen=True)
class RecentOutcomes:
    """Jobs of the last RECENT (by slot) by operation and status: ``{"Backup": {"Completed": 12, ...}}``."""

    since: datetime
    counts: dict[str, dict[str, int]]
    taken_at: datetime


@dataclass(frozen=True)
class ActiveAlerts:
    taken_at: datetime
    alerts: list[Alert]             # newest fired first


@dataclass(frozen=True)
class Overview:
    report: ComplianceReport
    alerts: ActiveAlerts
    recent: RecentOutcomes
    attention: list[Attention]

    @property
    def as_of(self) -> datetime:
        """When the oldest of its parts was read."""
        return min(self.report.generated_at, self.alerts.taken_at, self.recent.taken_at)


def fleet_overview(svc: OverviewNeeds) -> Overview:
    """The fleet at a glance, all of it reused for a short time (ReportCache): the compliance report, the
    active alerts, the last day's outcomes, and the items that need attention."""
    cache = svc.report_cache
    report, alerts = cache.report(svc), cache.active_alerts(svc)
    return Overview(report=report, alerts=alerts, recent=cache.recent(svc),
                    attention=needs_attention(report.items, alerts.alerts))


def keep_warm(services: Callable[[], OverviewNeeds], stop: threading.Event, *,
              every: timedelta = KEEP_WARM_EVERY) -> None:
    """Warm the overview's values at once, then every ``every`` until ``stop`` is set: run on a thread of its
    own by the app (setting DASHBOARD_KEEP_WARM), so the first page after a start and every later one is
    served from a computed report. A failed run is logged and the next one tries again."""
    while True:
        try:
            svc = services()
            svc.report_cache.warm(svc)
        except Exception as exc:  # noqa: BLE001 - a background loop has no caller to raise to
            log.warning("dashboard: the overview was not computed ahead (%s); the next page computes it", exc)
        if stop.wait(every.total_seconds()):
            return


def active_alerts(svc: ActiveAlertsNeeds) -> ActiveAlerts:
    return ActiveAlerts(svc.clock.now(), svc.alerts.list(AlertStatus.ACTIVE))


def recent_outcomes(svc: RecentNeeds) -> RecentOutcomes:
    """Each operation's jobs of the last RECENT by status: one pass over each shard's range per operation."""
    now = svc.clock.now()
    since = now - RECENT
    counts: dict[str, dict[str, int]] = {}
    for operation in RECENT_OPERATIONS:
        tally = counts.setdefault(operation, {})
        for job in svc.jobs.outcomes(JobQuery(operation=operation, since=since)):
            tally[job.status.value] = tally.get(job.status.value, 0) + 1
    return RecentOutcomes(since=since, counts=counts, taken_at=now)
