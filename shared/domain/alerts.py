"""Alerts: one per (item, kind), Active until the next success resolves it, later occurrences counted on
it; what a finished job means for them; their delivery state (the document a webhook receives:
shared/domain/alert_schema.py). Pure data and transitions (docs/monitoring.md).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum

from shared.clock import utc
from shared.domain import remediation
from shared.domain.jobs import Job, JobError, JobStatus
from shared.domain.recovery import SUCCESSFUL
from shared.redaction import redact

MAX_OCCURRENCES = 20        # the newest occurrences kept on an alert (its count keeps them all)
MAX_TEXT = 500
# Delivery retries: 10 s, 20 s, 40 s ... at most 10 minutes apart, for a day; then the alert says Failed.
FIRST_RETRY = timedelta(seconds=10)
MAX_RETRY = timedelta(minutes=10)
GIVE_UP_AFTER = timedelta(hours=24)
LEASE = timedelta(seconds=60)   # one sender at a time: longer than a webhook call may take


class AlertKind(str, Enum):
    BACKUP_FAILED = "BackupFailed"
    RESTORE_FAILED = "RestoreFailed"
    BACKUP_MISSED = "BackupMissed"
    RPO_BREACH = "RpoBreach"
    POINT_UNAVAILABLE = "PointUnavailable"
    SNAPSHOT_LIMIT_NEAR = "SnapshotLimitNear"
    RETENTION_FAILED = "RetentionFailed"
    RESTORE_TEST_FAILED = "RestoreTestFailed"

    @property
    def severity(self) -> str:
        """Azure Monitor's Sev0 (critical) .. Sev4 (verbose); Azure Backup sends job failures as Sev1."""
        return "Sev2" if self in (AlertKind.SNAPSHOT_LIMIT_NEAR, AlertKind.RETENTION_FAILED,
                                  AlertKind.BACKUP_MISSED) else "Sev1"

    @property
    def resolved_by(self) -> str:
        """What resolves an alert of this kind by itself (docs/monitoring.md)."""
        return _RESOLVED_BY[self]


_RESOLVED_BY = {
    AlertKind.BACKUP_FAILED: "the item's next successful backup",
    AlertKind.BACKUP_MISSED: "the item's next successful backup",
    AlertKind.RPO_BREACH: "the item's next successful backup",
    AlertKind.POINT_UNAVAILABLE: "the item's next successful backup",
    AlertKind.RESTORE_FAILED: "the item's next successful restore",
    AlertKind.SNAPSHOT_LIMIT_NEAR: "a retention run that leaves every disk below nine tenths of the limit",
    AlertKind.RETENTION_FAILED: "the next retention run that finishes for the item",
    AlertKind.RESTORE_TEST_FAILED: "the item's next passing restore test",
}
# A successful backup resolves these kinds of its item.
BACKUP_RESOLVES = (AlertKind.BACKUP_FAILED, AlertKind.BACKUP_MISSED, AlertKind.RPO_BREACH,
                   AlertKind.POINT_UNAVAILABLE)


class AlertStatus(str, Enum):
    ACTIVE = "Active"
    RESOLVED = "Resolved"

    @property
    def condition(self) -> str:
        """The common alert schema's monitorCondition."""
        return "Fired" if self is AlertStatus.ACTIVE else "Resolved"


class DeliveryState(str, Enum):
    PENDING = "Pending"             # a notification is owed and not tried yet
    RETRYING = "Retrying"           # the webhook failed; tried again at nextAttemptAt
    DELIVERED = "Delivered"         # every notification owed so far was accepted
    FAILED = "Failed"               # given up after GIVE_UP_AFTER of failures
    NOT_CONFIGURED = "NotConfigured"    # no webhook setting: nothing to send to (until one is set)


@dataclass(frozen=True)
class Occurrence:
    """One thing that raised (or re-raised) an alert: a job, a missed slot, a check."""

    key: str                    # job id, or ``slot:<iso>``, or what a check names: an occurrence counts once
    time: datetime              # what it is about: the job's slot, the missed slot, the check's time
    seen_at: datetime
    job_id: str | None = None
    error_code: str | None = None


@dataclass(frozen=True)
class Signal:
    """Something that raises an alert of ``kind`` on ``item``, with what to tell the operator."""

    item: str
    kind: AlertKind
    occurrence: Occurrence
    summary: str
    error_code: str | None = None
    error_title: str = ""
    recommendations: tuple[str, ...] = ()
    policy_name: str | None = None
    target_id: str | None = None    # the VM's ARM resource id when known


@dataclass(frozen=True)
class Delivery:
    state: DeliveryState = DeliveryState.PENDING
    notified: str | None = None     # the last monitorCondition delivered: None, Fired or Resolved
    attempts: int = 0               # failed attempts since the last success
    first_failure_at: datetime | None = None
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    lease_until: datetime | None = None


@dataclass(frozen=True)
class Alert:
    name: str
    item: str
    kind: AlertKind
    status: AlertStatus
    fired_at: datetime
    last_seen: datetime
    count: int
    summary: str
    latest_time: datetime           # the newest occurrence's time: a success older than it resolves nothing
    error_code: str | None = None
    error_title: str = ""
    recommendations: tuple[str, ...] = ()
    occurrences: tuple[Occurrence, ...] = ()
    policy_name: str | None = None
    target_id: str | None = None
    resolved_at: datetime | None = None
    resolved_time: datetime | None = None   # what resolved it is about (the successful job's slot)
    resolved_by: str | None = None          # a job id, or "operator"
    resolution: str | None = None
    delivery: Delivery = field(default_factory=Delivery)
    version: str | None = field(default=None, compare=False)   # the store's ETag

    @property
    def severity(self) -> str:
        return self.kind.severity

    @property
    def is_active(self) -> bool:
        return self.status is AlertStatus.ACTIVE

    @property
    def owed(self) -> str | None:
        """The monitorCondition a webhook should get next, or None: Fired first, then Resolved."""
        if self.delivery.state in (DeliveryState.FAILED, DeliveryState.NOT_CONFIGURED):
            return None
        if self.delivery.notified is None:
            return "Fired"
        if self.delivery.notified == "Fired" and not self.is_active:
            return "Resolved"
        return None

    @property
    def parked(self) -> bool:
        """Recorded while no webhook was set, with something a webhook set later should still get: the Fired
        notice of an alert still active, or the Resolved notice of one whose Fired notice a receiver got. (An
        alert that fired and resolved unseen is history, not news: it is not sent late.)"""
        if self.delivery.state is not DeliveryState.NOT_CONFIGURED:
            return False
        return self.is_active or self.delivery.notified == "Fired"


# --- names ------------------------------------------------------------------------------------------

_NAME = re.compile(r"^(?P<kind>[A-Za-z]+)-(?P<item>.+)-(?P<time>\d{8}T\d{9}Z)$")


def alert_name(item: str, kind: AlertKind, fired_at: datetime) -> str:
    """``<kind>-<item>-<fired, UTC to the millisecond>``: readable, and it says where the alert is stored."""
    stamp = utc(fired_at)
    return f"{kind.value}-{item}-{stamp:%Y%m%dT%H%M%S}{stamp.microsecond // 1000:03d}Z"


def parse_alert_name(name: str) -> tuple[AlertKind, str, datetime] | None:
    """(kind, item, fired time) of a name made by ``alert_name``; None for any other string."""
    match = _NAME.match(name or "")
    if not match:
        return None
    try:
        kind = AlertKind(match.group("kind"))
        text = match.group("time")
        fired = datetime.strptime(text[:15], "%Y%m%dT%H%M%S").replace(microsecond=int(text[15:18]) * 1000)
    except ValueError:
        return None
    return kind, match.group("item"), utc(fired)


# --- transitions ------------------------------------------------------------------------------------

def raised(current: Alert | None, signal: Signal, now: datetime) -> Alert | None:
    """The (item, kind)'s alert after ``signal``, or None when nothing changes.

    Active: a new occurrence adds to its count and last-seen time; one already counted changes nothing.
    Resolved (or none): a new alert fires, unless the occurrence is older than what resolved the last
    one (a late report of a failure that a newer success already answered)."""
    occurrence = signal.occurrence
    if current is not None and any(o.key == occurrence.key for o in current.occurrences):
        return None
    if current is not None and current.is_active:
        return replace(current, count=current.count + 1, last_seen=utc(now), summary=_text(signal.summary),
                       error_code=signal.error_code or current.error_code,
                       error_title=_text(signal.error_title) or current.error_title,
                       recommendations=_texts(signal.recommendations) or current.recommendations,
                       latest_time=max(current.latest_time, utc(occurrence.time)),
                       occurrences=(current.occurrences + (occurrence,))[-MAX_OCCURRENCES:],
                       target_id=signal.target_id or current.target_id,
                       policy_name=signal.policy_name or current.policy_name)
    if current is not None and current.resolved_time is not None and utc(occurrence.time) < current.resolved_time:
        return None
    fired = utc(now)
    if current is not None and alert_name(signal.item, signal.kind, fired) == current.name:
        fired += timedelta(milliseconds=1)      # fired again within the millisecond it resolved in
    return Alert(name=alert_name(signal.item, signal.kind, fired), item=signal.item, kind=signal.kind,
                 status=AlertStatus.ACTIVE, fired_at=fired, last_seen=fired, count=1,
                 summary=_text(signal.summary), latest_time=utc(occurrence.time), error_code=signal.error_code,
                 error_title=_text(signal.error_title), recommendations=_texts(signal.recommendations),
                 occurrences=(occurrence,), policy_name=signal.policy_name, target_id=signal.target_id)


def resolved(current: Alert | None, *, time: datetime, by: str, note: str, now: datetime,
             force: bool = False) -> Alert | None:
    """The alert once what resolves it happened (about ``time``: a success's slot), or None when it
    does not apply: no active alert, or a success older than the alert's newest occurrence (unless an
    operator resolves it, ``force``)."""
    if current is None or not current.is_active or (not force and utc(time) < current.latest_time):
        return None
    return replace(current, status=AlertStatus.RESOLVED, resolved_at=utc(now), resolved_time=utc(time),
                   resolved_by=by, resolution=_text(note))


def leased(current: Alert, now: datetime) -> Alert | None:
    """The alert with its delivery claimed by this sender for LEASE; None when another holds it or
    nothing is owed or due."""
    delivery = current.delivery
    if current.owed is None or (delivery.lease_until is not None and delivery.lease_until > utc(now)):
        return None
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > utc(now):
        return None
    return replace(current, delivery=replace(delivery, lease_until=utc(now) + LEASE))


def delivered(current: Alert, condition: str, now: datetime) -> Alert:
    """The alert once the webhook accepted ``condition``."""
    after = replace(current.delivery, notified=condition, attempts=0, first_failure_at=None, last_error=None,
                    last_attempt_at=utc(now), next_attempt_at=None, lease_until=None)
    state = DeliveryState.DELIVERED
    if replace(current, delivery=after).owed is not None:
        state = DeliveryState.PENDING
    return replace(current, delivery=replace(after, state=state))


def delivery_failed(current: Alert, error: str, now: datetime) -> Alert:
    """The alert once the webhook failed: tried again after a growing pause, given up after a day."""
    now = utc(now)
    before = current.delivery
    attempts = before.attempts + 1
    first = before.first_failure_at or now
    pause = min(FIRST_RETRY * 2 ** (attempts - 1), MAX_RETRY)
    state = DeliveryState.FAILED if now - first >= GIVE_UP_AFTER else DeliveryState.RETRYING
    return replace(current, delivery=replace(before, state=state, attempts=attempts, first_failure_at=first,
                                             last_attempt_at=now, next_attempt_at=now + pause,
                                             last_error=_text(error), lease_until=None))


def not_configured(current: Alert) -> Alert | None:
    """The alert when no webhook is configured (nothing is sent until one is); None if it says so already."""
    if current.delivery.state is DeliveryState.NOT_CONFIGURED or current.owed is None:
        return None
    return replace(current, delivery=replace(current.delivery, state=DeliveryState.NOT_CONFIGURED, lease_until=None))


def unparked(current: Alert | None) -> Alert | None:
    """A parked alert once a webhook is set: owed its notice again, at once; None if it is not parked."""
    if current is None or not current.parked:
        return None
    return replace(current, delivery=replace(current.delivery, state=DeliveryState.PENDING, next_attempt_at=None,
                                             lease_until=None))


# --- what a finished job means ------------------------------------------------------------------------

@dataclass(frozen=True)
class JobVerdict:
    """The alerts a job raises and the kinds of its item it resolves (at the job's slot)."""

    signals: tuple[Signal, ...] = ()
    resolves: tuple[AlertKind, ...] = ()


# The alert a failed restore or restore drill raises (and its success resolves), and how a job's operation
# reads in an alert's summary.
_RESTORE_KINDS = {"Restore": AlertKind.RESTORE_FAILED, "RestoreTest": AlertKind.RESTORE_TEST_FAILED}
_OPERATION_WORDS = {"Backup": "backup", "Restore": "restore", "RestoreTest": "restore drill",
                    "Retention": "retention"}


def job_verdict(job: Job, now: datetime) -> JobVerdict:
    """What a final job means for its item's alerts (anything else: nothing)."""
    if not job.is_terminal:
        return JobVerdict()
    if job.operation == "Backup":
        if job.status in SUCCESSFUL:
            return JobVerdict(resolves=BACKUP_RESOLVES)
        if job.status is JobStatus.FAILED:
            return JobVerdict(signals=(_job_signal(job, AlertKind.BACKUP_FAILED, now),))
    if job.operation in _RESTORE_KINDS:
        kind = _RESTORE_KINDS[job.operation]
        if job.status in SUCCESSFUL:
            return JobVerdict(resolves=(kind,))
        if job.status is JobStatus.FAILED:
            # A restore (or drill) that found the point's data gone made the point Unavailable: say so too.
            gone = [e for e in job.errors if e.error_code == remediation.RESTORE_SOURCE_MISSING]
            return JobVerdict(signals=(_job_signal(job, kind, now),
                                       *(_job_signal(job, AlertKind.POINT_UNAVAILABLE, now, e) for e in gone[:1])))
    if job.operation == "Retention":
        signals = []
        if job.status is JobStatus.FAILED:
            signals.append(_job_signal(job, AlertKind.RETENTION_FAILED, now))
        missing = [e for e in job.errors if e.error_code == remediation.RP_DATA_MISSING]
        if missing:
            signals.append(_job_signal(job, AlertKind.POINT_UNAVAILABLE, now, missing[0]))
        return JobVerdict(signals=tuple(signals))
    return JobVerdict()


def _job_signal(job: Job, kind: AlertKind, now: datetime, error: JobError | None = None) -> Signal:
    error = error or (job.errors[0] if job.errors else None)
    what = _OPERATION_WORDS.get(job.operation, job.operation.lower())
    reason = f"{error.error_code}: {error.error_title or error.error_string}" if error else "no error recorded"
    summary = (f"a recovery point of {job.vm_name} lost its data (found by {what} job {job.job_id}): {reason}"
               if kind is AlertKind.POINT_UNAVAILABLE else
               f"{what} job {job.job_id} of {job.vm_name} failed: {reason}")
    return Signal(item=job.vm_name, kind=kind,
                  occurrence=Occurrence(key=job.job_id, time=utc(job.slot), seen_at=utc(now), job_id=job.job_id,
                                        error_code=error.error_code if error else None),
                  summary=summary, error_code=error.error_code if error else None,
                  error_title=error.error_title if error else "",
                  recommendations=tuple(error.recommendations) if error else (), policy_name=job.policy_name)


def _text(value: str | None) -> str:
    text = str(redact(value or ""))
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 3] + "..."


def _texts(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(_text(v) for v in values)
