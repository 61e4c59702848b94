# Over 400 lines on purpose: raise, evaluate, deliver and resolve share one record and one feed mark.
"""Use cases of alerts: raise and resolve (also the API other work raises through, e.g. restore drills:
``raise_alert`` with kind RestoreTestFailed, ``resolve_alerts`` when a test passes), the evaluator the
``evaluate_alerts`` timer runs, delivery to the webhook, and what the CLI lists, shows and resolves.

The evaluator, each run (docs/monitoring.md says why this shape):
1. reads the job feed since its mark (less a margin): every job that turned final, however it did, and
   every failed attempt; a failure raises its alert, a success resolves its item's alerts, a failed
   backup has the item's newest restorable point checked (data gone: Unavailable, PointUnavailable);
   the final backups among them are folded into the compliance report's roll-up (shared/services/rollup.py);
2. checks the slots whose deadline passed since its mark: an item with no successful backup since the
   slot raises BackupMissed, and its RPO is breached now (RpoBreach) or watched until it would be;
3. checks the RPO watches that came due;
4. deletes feed entries and roll-up months past their retention;
5. delivers what the webhook is owed.
Every step is idempotent (an occurrence counts once, a mark never goes back), so two evaluators at once,
or one that died half way, change nothing twice.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Iterable, Mapping, Protocol, Sequence

from shared.clock import utc
from shared.domain.alert_schema import common_alert_schema
from shared.domain.alerts import (Alert, AlertKind, AlertStatus, Occurrence, Signal, delivered,
                                  delivery_failed, job_verdict, leased, not_configured, raised, resolved, unparked)
from shared.domain.compliance import SLOT_ALLOWANCE, applies_from, newest_restorable, target_rpo
from shared.domain.jobs import AttemptOutcome, Job, JobStatus
from shared.domain.policy import Policy
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import SUCCESSFUL, RecoveryPoint, near_limit
from shared.domain.retention_progress import BLOBS
from shared.domain.schedule import slots_between
from shared.domain.shards import SHARDS, shard_of
from shared.errors import NotFoundError, PermanentError, TransientError, ValidationError
from shared.ports import FeedEntry, JobQuery
from shared.redaction import redact
from shared.services.needs import (HasAlerts, HasClock, HasInventory, HasJobFeed, HasJobs, HasNotifier, HasPolicies,
                                   HasProtectedItems, HasRecoveryPoints, HasRestorePoints, HasRollup, HasSettings,
                                   HasSnapshots, HasTelemetry)
from shared.services.outcomes import FEED_MARGIN
from shared.services.point_data import missing_data
from shared.services.retention import PartOutcome, ProblemKind, RetentionResult
from shared.services.rollup import fold_feed, prune_history

log = logging.getLogger(__name__)


class ResolveNeeds(HasAlerts, HasClock, HasTelemetry, Protocol):
    """What resolve_alerts(), resolve_by_operator() read."""


class RaiseNeeds(HasAlerts, HasClock, HasProtectedItems, HasTelemetry, Protocol):
    """What raise_alert(), snapshot_limit_near() read (recovery's disk guard raises through it)."""


class WatchNeeds(HasAlerts, HasClock, HasPolicies, HasProtectedItems, HasTelemetry, Protocol):
    """What _watch_rpo() reads."""


class DueWatchesNeeds(HasAlerts, HasClock, HasPolicies, HasProtectedItems, HasRecoveryPoints, HasTelemetry, Protocol):
    """What _due_watches() reads."""


class MissedSlotsNeeds(HasAlerts, HasClock, HasJobs, HasPolicies, HasProtectedItems, HasRecoveryPoints, HasTelemetry,
                       Protocol):
    """What _missed_slots() reads."""

class CheckPointNeeds(HasAlerts, HasClock, HasInventory, HasPolicies, HasProtectedItems, HasRecoveryPoints,
                      HasRestorePoints, HasSnapshots, HasTelemetry, Protocol):
    """What _from_feed(), _check_newest_point() read."""


class DeliverNeeds(HasAlerts, HasClock, HasNotifier, Protocol):
    """What deliver_alerts(), _deliver() read."""

class EvaluateNeeds(HasAlerts, HasClock, HasInventory, HasJobFeed, HasJobs, HasNotifier, HasPolicies, HasProtectedItems,
                    HasRecoveryPoints, HasRestorePoints, HasRollup, HasSnapshots, HasTelemetry, Protocol):
    """What evaluate_alerts() reads."""


class LimitClearedNeeds(HasInventory, HasSnapshots, Protocol):
    """What _snapshot_limit_cleared() reads."""

class AfterRetentionNeeds(HasAlerts, HasClock, HasInventory, HasSettings, HasSnapshots, HasTelemetry, Protocol):
    """What after_retention(), after_retention_part() read."""


# A first run (no marks yet) looks back this far.
FIRST_LOOK = timedelta(hours=1)
OPERATOR = "operator"


@dataclass
class Evaluation:
    """What one evaluator run did (names of the alerts, by what happened to them)."""

    jobs_read: int = 0
    raised: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    missed_slots: int = 0
    points_checked: int = 0
    folded: int = 0             # roll-up rows the fold changed
    pruned: int = 0             # feed entries and roll-up rows deleted by retention
    delivered: list[str] = field(default_factory=list)
    delivery_failed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.jobs_read} finished job(s) read, {len(self.raised)} alert(s) raised, {len(self.resolved)} "
                f"resolved, {self.missed_slots} missed slot(s), {self.points_checked} point(s) checked, "
                f"{self.folded} roll-up row(s) folded, {self.pruned} old row(s) deleted, "
                f"{len(self.delivered)} notification(s) delivered, {len(self.delivery_failed)} failed")


# --- raise and resolve (the API) ----------------------------------------------------------------------

def raise_alert(svc: RaiseNeeds, signal: Signal, result: Evaluation | None = None) -> Alert | None:
    """Raise ``signal`` on its (item, kind): fires a new alert, or counts an occurrence on the active one.
    Idempotent: the same occurrence again changes nothing. Returns the alert when it changed."""
    now = svc.clock.now()
    if signal.target_id is None:
        item = svc.protected_items.get(signal.item)
        if item is not None and item.resource_id:
            signal = replace(signal, target_id=item.resource_id)
    changes: list[Alert] = []

    def change(current: Alert | None) -> Alert | None:
        changes.clear()
        after = raised(current, signal, now)
        if after is not None:
            changes.append(after)
        return after

    alert = svc.alerts.update(signal.item, signal.kind, change)
    if not changes or alert is None:
        return None
    if alert.count == 1:
        log.warning("alert %s fired: %s %s (%s)", alert.name, alert.kind.value, alert.item, alert.summary)
        svc.telemetry.alert_changed(alert.kind.value, +1)
    else:
        log.info("alert %s: occurrence %s of %s on %s (%s)", alert.name, alert.count, alert.kind.value, alert.item,
                 signal.occurrence.key)
    if result is not None:
        result.raised.append(alert.name)
    return alert


def resolve_alerts(svc: ResolveNeeds, item: str, kinds: Sequence[AlertKind], *, time: datetime, by: str, note: str,
                   result: Evaluation | None = None) -> list[Alert]:
    """Resolve the item's active alerts of ``kinds`` that happened before ``time`` (what resolves them is
    about that time: a successful job's slot). One read of the item's alerts; a write per alert resolved."""
    now = svc.clock.now()
    done = []
    for active in svc.alerts.list(status=AlertStatus.ACTIVE, item=item):
        if active.kind not in kinds:
            continue
        after = svc.alerts.update(item, active.kind, lambda current: resolved(current, time=time, by=by, note=note,
                                                                              now=now))
        if after is not None and after.name == active.name and not after.is_active:
            log.info("alert %s resolved by %s: %s", after.name, by, note)
            svc.telemetry.alert_changed(after.kind.value, -1)
            done.append(after)
            if result is not None:
                result.resolved.append(after.name)
    return done


def resolve_by_operator(svc: ResolveNeeds, name: str, note: str = "") -> Alert:
    """``vmsnap alert resolve``: an operator closes an active alert (it is not reopened by what it had seen)."""
    alert = show_alert(svc, name)
    if not alert.is_active:
        raise ValidationError(f"alert {name} is already Resolved ({alert.resolution})", field="name")
    now = svc.clock.now()
    text = note or "resolved by an operator"
    after = svc.alerts.update(alert.item, alert.kind, lambda current: resolved(
        current, time=max(now, current.latest_time), by=OPERATOR, note=text, now=now, force=True)
        if current is not None and current.name == name else None)
    if after is None or after.name != name or after.is_active:
        raise NotFoundError(f"alert {name} changed meanwhile; list the alerts again ('vmsnap alert list')")
    svc.telemetry.alert_changed(after.kind.value, -1)
    log.info("alert %s resolved by an operator: %s", name, text)
    return after


def show_alert(svc: HasAlerts, name: str) -> Alert:
    alert = svc.alerts.find(name)
    if alert is None:
        raise NotFoundError(f"alert {name!r} not found; list them with 'vmsnap alert list'")
    return alert


def list_alerts(svc: HasAlerts, status: AlertStatus | None = None, item: str | None = None) -> list[Alert]:
    return svc.alerts.list(status=status, item=item)


# --- the evaluator -----------------------------------------------------------------------------------

def evaluate_alerts(svc: EvaluateNeeds) -> Evaluation:
    """One run of the evaluator (see the module docstring); then deliver what is owed."""
    now = svc.clock.now()
    marks = svc.alerts.marks()
    rollup = svc.rollup.state()
    result = Evaluation()
    after = marks.get("feed", now - FIRST_LOOK) - FEED_MARGIN
    # The fold reads the feed from where it stopped (a rebuild may have set that place before any run).
    fold_after = rollup.folded_through or after
    entries = svc.job_feed.between(min(after, fold_after), now)
    jobs = svc.jobs.get_many([e.job_id for e in entries]) if entries else {}
    result.jobs_read += len(jobs)
    _from_feed(svc, [e for e in entries if e.at > after], jobs, now, result)
    result.folded = fold_feed(svc, entries, jobs, rollup, after=fold_after, through=now - FEED_MARGIN)
    folded = max(fold_after, now - FEED_MARGIN)         # how far the fold has read the feed now
    _missed_slots(svc, marks.get("deadlines", now - FIRST_LOOK), now, result)
    _due_watches(svc, now, result)
    svc.alerts.advance_marks({"feed": now, "deadlines": now})
    pruned = prune_history(svc, marks, now, folded_through=folded)
    result.pruned = pruned.feed_entries + pruned.rollup_rows
    deliver_alerts(svc, result)
    # Every 30 s: a run that changed nothing logs at DEBUG, so the host's log keeps only what happened.
    busy = result.raised or result.resolved or result.delivered or result.delivery_failed or result.missed_slots
    log.log(logging.INFO if busy else logging.DEBUG, "alert evaluation at %s: %s", now.isoformat(), result)
    return result


def _from_feed(svc: CheckPointNeeds, entries: Sequence[FeedEntry], jobs: Mapping[str, Job], now: datetime,
               result: Evaluation) -> None:
    for job_id in dict.fromkeys(e.job_id for e in entries):
        job = jobs.get(job_id)
        if job is None:
            continue
        verdict = job_verdict(job, now)
        if verdict.resolves:
            resolve_alerts(svc, job.vm_name, verdict.resolves, time=job.slot, by=job.job_id,
                           note=f"{job.operation.lower()} job {job.job_id} {job.status.value}", result=result)
        for signal in verdict.signals:
            raise_alert(svc, signal, result)
        if job.operation == "Backup" and _failed(job):
            _check_newest_point(svc, job, now, result)


def _failed(job: Job) -> bool:
    """A failed backup, or one whose attempt failed and is being retried."""
    if job.status is JobStatus.FAILED:
        return True
    return not job.is_terminal and bool(job.attempts) and job.attempts[-1].outcome is AttemptOutcome.FAILED


def _check_newest_point(svc: CheckPointNeeds, job: Job, now: datetime, result: Evaluation) -> None:
    """A failed backup may mean the VM's data is gone (a disk deleted): confirm the point a restore would
    use now; one whose data is gone becomes Unavailable and raises PointUnavailable."""
    points = svc.recovery_points.list_for_vm(job.vm_name)
    newest = newest_restorable(points, now)
    if newest is None:
        return
    result.points_checked += 1
    try:
        gone = missing_data(svc, newest)
    except (TransientError, NotFoundError) as exc:
        log.warning("job %s: the newest point %s of %s could not be checked now: %s", job.job_id, newest.name,
                    job.vm_name, exc)
        return
    if gone is None:
        return
    broken = newest.unavailable(f"{gone} (found after the failed backup job {job.job_id}, "
                                f"{now.isoformat(timespec='seconds')})", now)
    svc.recovery_points.save_many([broken])
    log.error("job %s: recovery point %s of %s is Unavailable: %s", job.job_id, newest.name, job.vm_name, gone)
    raise_alert(svc, Signal(
        item=job.vm_name, kind=AlertKind.POINT_UNAVAILABLE,
        occurrence=Occurrence(key=f"point:{newest.name}", time=now, seen_at=now, job_id=job.job_id),
        summary=f"recovery point {newest.name} of {job.vm_name} ({newest.created_at.isoformat()}) cannot be "
                f"restored: {gone}",
        error_code="UserErrorRecoveryPointDataMissing", error_title="A recovery point's data is gone",
        recommendations=(f"Take a fresh backup: 'vmsnap backup-now --vm {job.vm_name}' once the cause is fixed.",
                         "Find out who or what deleted the data (the activity log of the storage account or "
                         "resource group).",
                         f"See the failed job: 'vmsnap job show --name {job.job_id}'."),
        policy_name=job.policy_name), result)
    _watch_rpo(svc, job.vm_name, [broken if p.name == broken.name else p for p in points], now, result)


def _missed_slots(svc: MissedSlotsNeeds, since: datetime, now: datetime, result: Evaluation) -> None:
    """Slots whose deadline fell in (since, now] with no successful backup of the item since: BackupMissed."""
    policies = {p.name.lower(): p for p in svc.policies.list()}
    due = {key: slots for key, p in policies.items()
           if (slots := slots_between(p, since - SLOT_ALLOWANCE, now - SLOT_ALLOWANCE))}
    if not due:
        return      # most runs: no deadline passed, nothing else is read
    earliest = min(s for slots in due.values() for s in slots)
    for shard in SHARDS:
        items = [i for page in svc.protected_items.pages(shard=shard) for i in page
                 if i.is_active and i.policy_name.lower() in due]
        if not items:
            continue
        successes = _success_slots(svc, shard, earliest)
        for item in items:
            policy = policies[item.policy_name.lower()]
            start = applies_from(item, policy)
            done = successes.get(item.vm_name.lower(), [])
            missed = [s for s in due[item.policy_name.lower()] if s >= start and not any(x >= s for x in done)]
            for slot in missed:
                result.missed_slots += 1
                raise_alert(svc, _missed_signal(item, slot, now), result)
            if missed:
                _watch_rpo(svc, item.vm_name, svc.recovery_points.list_for_vm(item.vm_name), now, result,
                           item=item, policy=policy)


def _success_slots(svc: HasJobs, shard: str, since: datetime) -> dict[str, list[datetime]]:
    """The slots of each VM's successful backups since ``since`` (one walk of the shard's jobs)."""
    found: dict[str, list[datetime]] = defaultdict(list)
    query = JobQuery(operation="Backup", shard=shard, since=since, page_size=1000)
    while True:
        page = svc.jobs.query(query)
        for job in page.jobs:
            if job.status in SUCCESSFUL:
                found[job.vm_name.lower()].append(utc(job.slot))
        if not page.continuation:
            return found
        query = replace(query, continuation=page.continuation)


def _missed_signal(item: ProtectedItem, slot: datetime, now: datetime) -> Signal:
    return Signal(
        item=item.vm_name, kind=AlertKind.BACKUP_MISSED,
        occurrence=Occurrence(key=f"slot:{slot.isoformat()}", time=slot, seen_at=now),
        summary=f"no successful backup of {item.vm_name} for its {slot.isoformat()} slot (policy {item.policy_name}) "
                f"by its deadline, {(slot + SLOT_ALLOWANCE).isoformat()}",
        error_code="BackupMissed", error_title="A scheduled backup did not succeed in time",
        recommendations=(f"See the VM's jobs: 'vmsnap job list --vm {item.vm_name}' (a failed or cancelled job, or "
                         f"none at all: is the scheduler running?).",
                         f"Take a backup now: 'vmsnap backup-now --vm {item.vm_name}'."),
        policy_name=item.policy_name, target_id=item.resource_id)


def _watch_rpo(svc: WatchNeeds, vm_name: str, points: Iterable[RecoveryPoint], now: datetime, result: Evaluation, *,
               item: ProtectedItem | None = None, policy: Policy | None = None) -> None:
    """RpoBreach now if the item's newest restorable point is past its target; else check again when it
    would be (a newer success before then makes the check find nothing)."""
    item = item or svc.protected_items.get(vm_name)
    if item is None or not item.is_active:
        svc.alerts.unwatch(vm_name)
        return
    try:
        policy = policy or svc.policies.get(item.policy_name)
    except NotFoundError:
        return
    newest = newest_restorable(points, now)
    target = target_rpo(policy, now)
    if newest is not None:
        svc.telemetry.rpo(item.vm_name, (now - utc(newest.created_at)).total_seconds())
    breach_at = utc(newest.created_at) + target if newest is not None else now
    if breach_at > now:
        svc.alerts.watch(item.vm_name, breach_at)
        return
    svc.alerts.unwatch(item.vm_name)
    rpo = "no restorable point" if newest is None else \
        f"its newest restorable point ({newest.name}) is from {newest.created_at.isoformat()}"
    raise_alert(svc, Signal(
        item=item.vm_name, kind=AlertKind.RPO_BREACH,
        occurrence=Occurrence(key=f"rpo:{newest.name if newest else 'none'}", time=breach_at, seen_at=now),
        summary=f"{item.vm_name} is past its target RPO of {target} (policy {policy.name}): {rpo}",
        error_code="RpoBreach", error_title="The item's recovery point objective is not met",
        recommendations=(f"Take a backup now: 'vmsnap backup-now --vm {item.vm_name}'.",
                         f"See why backups do not succeed: 'vmsnap job list --vm {item.vm_name}'."),
        policy_name=policy.name, target_id=item.resource_id), result)


def _due_watches(svc: DueWatchesNeeds, now: datetime, result: Evaluation) -> None:
    for vm_name, _ in svc.alerts.due_watches(now):
        _watch_rpo(svc, vm_name, svc.recovery_points.list_for_vm(vm_name), now, result)


# --- delivery ------------------------------------------------------------------------------------------

def deliver_alerts(svc: DeliverNeeds, result: Evaluation | None = None) -> Evaluation:
    """Send each owed notification once it is due (Fired, then Resolved): a sender leases the alert first,
    so two evaluators do not both send; a failure is tried again with backoff (shared/domain/alerts.py)."""
    result = result if result is not None else Evaluation()
    if svc.notifier is not None:
        for alert in svc.alerts.parked():
            _unpark(svc, alert)
    for alert in svc.alerts.owed():
        _deliver(svc, alert, result)
    return result


def _unpark(svc: HasAlerts, alert: Alert) -> None:
    """An alert recorded while no webhook was set, now that one is: owed its notice (sent in this run)."""
    after = svc.alerts.update(alert.item, alert.kind, lambda c: unparked(c) if c and c.name == alert.name else None)
    if after is not None and after.name == alert.name and after.owed is not None:
        log.info("alert %s: recorded while no ALERT_WEBHOOK_URL was set; sending its %s notification now",
                 alert.name, after.owed)


def _deliver(svc: DeliverNeeds, alert: Alert, result: Evaluation) -> None:
    now = svc.clock.now()
    notifier = svc.notifier
    if notifier is None:
        svc.alerts.update(alert.item, alert.kind, lambda c: not_configured(c) if c and c.name == alert.name else None)
        log.info("alert %s: no ALERT_WEBHOOK_URL set; not sent (it is, if still active, once one is set)", alert.name)
        return
    won: list[Alert] = []

    def lease(current: Alert | None) -> Alert | None:
        won.clear()
        after = leased(current, now) if current is not None and current.name == alert.name else None
        if after is not None:
            won.append(after)
        return after

    svc.alerts.update(alert.item, alert.kind, lease)
    if not won:
        return
    claimed = won[-1]
    condition = claimed.owed
    if condition is None:
        return
    try:
        notifier.send(common_alert_schema(claimed, condition))
    except (TransientError, PermanentError) as exc:
        reason = redact(str(exc))
        after = svc.alerts.update(alert.item, alert.kind, lambda c: delivery_failed(c, reason, svc.clock.now())
                                  if c and c.name == alert.name else None)
        when = after.delivery.next_attempt_at.isoformat() if after and after.delivery.next_attempt_at else "never"
        log.warning("alert %s: %s notification not delivered (%s); next try %s", alert.name, condition, reason, when)
        result.delivery_failed.append(alert.name)
        return
    svc.alerts.update(alert.item, alert.kind, lambda c: delivered(c, condition, svc.clock.now())
                      if c and c.name == alert.name else None)
    log.info("alert %s: %s notification delivered", alert.name, condition)
    result.delivered.append(alert.name)


# --- the snapshot limit ---------------------------------------------------------------------------------

def snapshot_limit_near(svc: RaiseNeeds, vm_name: str, count: int, limit: int) -> Alert | None:
    """The worker found a disk of the VM with ``count`` snapshots, near ``limit`` (or at it)."""
    now = svc.clock.now()
    return raise_alert(svc, Signal(
        item=vm_name, kind=AlertKind.SNAPSHOT_LIMIT_NEAR,
        occurrence=Occurrence(key=f"snapshots:{count}", time=now, seen_at=now),
        summary=f"a disk of {vm_name} has {count} snapshots; backups are refused at {limit} (SNAPSHOT_LIMIT)",
        error_code="SnapshotLimitNear", error_title="A disk is near its snapshot limit",
        recommendations=(f"Run retention: 'vmsnap retention run --vm {vm_name}'.",
                         "Shorten the policy's retention, or raise SNAPSHOT_LIMIT if storage allows more.")))


def _snapshot_limit_cleared(svc: LimitClearedNeeds, vm_name: str, limit: int) -> bool:
    """Whether every page-blob disk of the VM is below the threshold now (after retention ran)."""
    try:
        vm = svc.inventory.get_vm(vm_name)
        counts = [svc.snapshots.count_snapshots(d.blob_url.split("?", 1)[0]) or 0 for d in vm.disks
                  if "/providers/" not in d.blob_url.lower()]
    except (NotFoundError, TransientError, PermanentError):
        return False
    return all(count < near_limit(limit) for count in counts)


# --- retention -----------------------------------------------------------------------------------------

def after_retention(svc: AfterRetentionNeeds, result: RetentionResult, *, shard: str | None = None) -> list[Alert]:
    """A finished retention run resolves the RetentionFailed alert of every VM it did not leave unfinished
    (its Failed Retention jobs raise them, through the feed), and the SnapshotLimitNear alert of every VM
    whose disks it brought below the threshold. ``shard``: the run covered that shard's VMs only (a
    part of the timer's fanned-out run), so only their alerts are looked at."""
    unfinished = {p.vm_name.lower() for p in result.plan.problems
                  if p.kind in (ProblemKind.DEFERRED, ProblemKind.FAILED)}
    now = svc.clock.now()
    done = []
    for alert in svc.alerts.list(status=AlertStatus.ACTIVE):
        if shard is not None and shard_of(alert.item) != shard:
            continue
        if alert.kind is AlertKind.RETENTION_FAILED and alert.item.lower() not in unfinished:
            done += resolve_alerts(svc, alert.item, (AlertKind.RETENTION_FAILED,), time=now, by="retention",
                                   note=f"retention of {alert.item} finished at {now.isoformat(timespec='seconds')}")
        elif alert.kind is AlertKind.SNAPSHOT_LIMIT_NEAR and _snapshot_limit_cleared(
                svc, alert.item, svc.settings.snapshot_limit):
            done += resolve_alerts(svc, alert.item, (AlertKind.SNAPSHOT_LIMIT_NEAR,), time=now, by="retention",
                                   note=f"after retention every disk of {alert.item} is below "
                                        f"{svc.settings.snapshot_limit * 9 // 10} snapshots")
    return done


def after_retention_part(svc: AfterRetentionNeeds, outcome: PartOutcome) -> list[Alert]:
    """``after_retention`` for one part of the timer's run, once that part finished: its shard's VMs
    only (the status blobs' part and an unfinished part resolve nothing)."""
    if outcome.state != "finished" or outcome.request.part == BLOBS:
        return []
    return after_retention(svc, outcome.result, shard=outcome.request.part)
