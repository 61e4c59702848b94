# Over 400 lines on purpose: run and dry run (`plan`) are one computation; apart, the plan could drift.
"""Retention: decide what expires (shared/domain/retention.py), delete its snapshots (blob snapshots,
or the VM restore point of a managed-disk VM) and mark the points Deleted; delete the snapshots or
restore points of failed and superseded attempts; purge soft-deleted items;
delete status/log blobs of final jobs once old enough. ``plan`` is the same computation, changing nothing.

The fleet is read a part at a time: each shard's VMs a page at a time (the page's items, its jobs in
one query, each VM's points), then the status container a listing page at a time, so each job row is
read once per run. ``run_retention`` and ``plan_retention`` go through every part in-process (the
operator's ``vmsnap retention run|plan``); the timer's run (``start_retention``) hands the parts to
``retain_part``, which keeps a cursor per part and stops after a bounded time, sending itself a
continuation, so no invocation runs long whatever the fleet's size (docs/recovery-points.md).

Never leaves a VM without a restorable point: before it deletes anything of a protected VM it confirms
that the newest point it keeps still has all its data; a point whose data is gone becomes Unavailable
(with the reason), the next one is confirmed instead, and a VM whose point cannot be confirmed now
(storage or Compute unreachable) loses nothing in this run. Each VM is planned and deleted on its own:
an odd record or an error is reported for that VM (the run's problems, the log, and a Retention job of
the VM) and the rest of the fleet proceeds.

Safe to run twice at once: a point is claimed (Available -> Deleting, guarded by its ETag) before its
snapshots go, so only the run that claimed it deletes them; a 404 on delete counts as done; a claim
left by a run that died is taken over once it is older than CLAIM_TIMEOUT.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Callable, Iterator, Protocol, TypeVar

from shared.domain import remediation
from shared.domain.inventory import BackupMethod
from shared.domain.job_transitions import MAX_ERRORS
from shared.domain.jobs import Job, JobError, JobPhase, JobStatus, job_id_for
from shared.domain.policy import Policy
from shared.domain.protection import ProtectedItem, ProtectionState
from shared.domain.recovery import SUCCESSFUL, PointState, RecoveryPoint, Rule, point_from_job, recovery_point_name
from shared.domain.restore_point import attempt_restore_point_name
from shared.domain.retention import Decision, decide
from shared.domain.retention_progress import BLOBS, PARTS, RetentionProgress, RetentionRequest
from shared.domain.shards import SHARDS
from shared.domain.task import Trigger, parse_blob_name
from shared.errors import NotFoundError, TransientError, VmsnapError
from shared.ports import JobQuery, StatusBlobInfo
from shared.redaction import redact
from shared.services.point_data import missing_data, request_digests
from shared.services.recovery import record_recovery_point
from shared.services.restore_point_backup import vm_resource_id
from shared.services.needs import (HasClock, HasDigestQueue, HasInventory, HasJobs, HasPolicies, HasProgress,
                                   HasProtectedItems, HasRecoveryPoints, HasRestorePoints, HasRetentionProgress,
                                   HasRetentionQueue, HasSettings, HasSnapshots, HasStatusArchive)

log = logging.getLogger(__name__)


class PlanRetentionNeeds(HasClock, HasDigestQueue, HasInventory, HasJobs, HasPolicies, HasProtectedItems,
                         HasRecoveryPoints, HasRestorePoints, HasSettings, HasSnapshots, HasStatusArchive, Protocol):
    """What plan_retention(), run_retention(), _whole_run() read."""


class StartRetentionNeeds(HasClock, HasDigestQueue, HasInventory, HasJobs, HasPolicies, HasProgress,
                          HasProtectedItems, HasRecoveryPoints, HasRestorePoints, HasRetentionProgress,
                          HasRetentionQueue, HasSettings, HasSnapshots, HasStatusArchive, Protocol):
    """What start_retention() reads."""


class RetainPartNeeds(HasClock, HasDigestQueue, HasInventory, HasJobs, HasPolicies, HasProtectedItems,
                      HasRecoveryPoints, HasRestorePoints, HasRetentionProgress, HasRetentionQueue, HasSettings,
                      HasSnapshots, HasStatusArchive, Protocol):
    """What retain_part() reads."""


class TakeNeeds(HasRetentionProgress, HasSettings, Protocol):
    """What _take() reads."""


class RetainPageNeeds(HasDigestQueue, HasInventory, HasJobs, HasProtectedItems, HasRecoveryPoints, HasRestorePoints,
                      HasSettings, HasSnapshots, Protocol):
    """What _retain_page(), _retain_vms() read."""


class RetainVmNeeds(HasDigestQueue, HasInventory, HasProtectedItems, HasRecoveryPoints, HasRestorePoints, HasSettings,
                    HasSnapshots, Protocol):
    """What _retain_vm(), _plan_vm() read."""


class ConfirmLatestNeeds(HasInventory, HasProtectedItems, HasRecoveryPoints, HasRestorePoints, HasSnapshots, Protocol):
    """What _confirm_latest() reads."""


class DeletePointsNeeds(HasRecoveryPoints, HasRestorePoints, HasSnapshots, Protocol):
    """What _delete_points() reads."""


class DeleteArtifactNeeds(HasRestorePoints, HasSnapshots, Protocol):
    """What _delete_artifact() reads."""


class AttemptSnapshotsNeeds(HasInventory, HasProtectedItems, HasRestorePoints, HasSnapshots, Protocol):
    """What _attempt_snapshots(), _job_attempt_snapshots() read."""


class AttemptRestorePointsNeeds(HasInventory, HasProtectedItems, HasRestorePoints, Protocol):
    """What _attempt_restore_points() reads."""


class RetainStatusBlobsNeeds(HasJobs, HasSettings, HasStatusArchive, Protocol):
    """What _retain_status_blobs() reads."""

T = TypeVar("T")

RETENTION_OPERATION = "Retention"
CLAIM_TIMEOUT = timedelta(hours=1)
# How far back job records are read for points to backfill and attempt snapshots to delete: all of it
# by an operator's run, at most this by the timer's (which reads from where its last run settled).
# Retention runs daily, so a month covers a long outage of the timer.
JOB_LOOKBACK = timedelta(days=35)
# Besides the scheduler's catch-up (a job created late for a slot that long ago), how far before the
# last run's settled instant the next run reads jobs again.
JOB_MARGIN = timedelta(hours=3)
DELETE_WORKERS = 8
PAGE_SIZE = 250         # VMs of a shard settled between two saves of its cursor
# An invocation of the timer's run takes no new page after this long; with a page's own bound (PAGE_SIZE
# VMs), no invocation outlives its Service Bus lock renewal (host.json) or the Functions time limit.
INVOCATION_BUDGET = timedelta(minutes=2)


@dataclass(frozen=True)
class PointAction:
    vm_name: str
    point_name: str
    created_at: datetime
    rule: Rule
    reason: str
    snapshots: tuple[str, ...]      # blob snapshot URLs, or the VM restore point's id


@dataclass(frozen=True)
class SnapshotAction:
    """A snapshot (or restore point) of an attempt that left no recovery point."""

    vm_name: str
    job_id: str
    snapshot: str                   # a blob snapshot URL, or a VM restore point's id
    rule: Rule
    method: BackupMethod = BackupMethod.EXTENSION_COMMAND
    slot: datetime | None = field(default=None, compare=False)     # its job's


@dataclass(frozen=True)
class BlobAction:
    name: str
    job_id: str | None
    rule: Rule = Rule.STATUS_BLOB


class ProblemKind(str, Enum):
    """Why retention reports a VM (each names a remediation: shared/domain/remediation.py)."""

    DATA_MISSING = "PointDataMissing"       # a point's data is gone: it became Unavailable
    FUTURE_TIME = "TimeInFuture"            # a point stamped in the future: kept, never the latest
    DEFERRED = "Deferred"                   # its latest point could not be confirmed now: nothing deleted
    FAILED = "Failed"                       # an unexpected error stopped this VM's retention

    @property
    def error_code(self) -> str:
        return {ProblemKind.DATA_MISSING: remediation.RP_DATA_MISSING,
                ProblemKind.FUTURE_TIME: remediation.RETENTION_TIME_INVALID,
                ProblemKind.DEFERRED: remediation.RETENTION_NOT_CONFIRMED,
                ProblemKind.FAILED: remediation.RETENTION_ITEM_FAILED}[self]


_UNFINISHED = frozenset({ProblemKind.DEFERRED, ProblemKind.FAILED})


@dataclass(frozen=True)
class RetentionProblem:
    vm_name: str
    kind: ProblemKind
    reason: str
    point_name: str | None = None


@dataclass
class RetentionPlan:
    points: list[PointAction] = field(default_factory=list)
    attempt_snapshots: list[SnapshotAction] = field(default_factory=list)
    status_blobs: list[BlobAction] = field(default_factory=list)
    backfill: list[str] = field(default_factory=list)      # job ids whose point is missing
    problems: list[RetentionProblem] = field(default_factory=list)
    examined: int = 0                                      # points looked at
    kept: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def report(self, problem: RetentionProblem) -> None:
        with self.lock:
            self.problems.append(problem)


@dataclass
class RetentionResult:
    plan: RetentionPlan
    points_deleted: list[str] = field(default_factory=list)     # point names this run marked Deleted
    snapshots_deleted: int = 0      # blob snapshots and restore points deleted by this run's own calls
    snapshots_gone: int = 0         # already gone (another run, or by hand): counted as done
    lost_claims: int = 0            # points another run claimed first
    blobs_deleted: int = 0
    backfilled: list[str] = field(default_factory=list)
    marked_unavailable: list[str] = field(default_factory=list)     # point names this run found broken
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


@dataclass(frozen=True)
class _VmWork:
    """What a run deletes for one VM: the expired points, and claims an earlier run left unfinished."""

    going: list[Decision]
    stale: list[RecoveryPoint]


def plan_retention(svc: PlanRetentionNeeds, vm_name: str | None = None) -> RetentionPlan:
    """Exactly what ``run_retention`` would do now, and why; changes nothing (it reads what it checks)."""
    return _whole_run(svc, vm_name, record=False).plan


def run_retention(svc: PlanRetentionNeeds, vm_name: str | None = None) -> RetentionResult:
    """Enforce retention now (for one VM, or all), in this process; see the module docstring for the
    guarantees. Reads every job of the lookback, whatever the timer's runs settled."""
    return _whole_run(svc, vm_name, record=True)


def _whole_run(svc: PlanRetentionNeeds, vm_name: str | None, *, record: bool) -> RetentionResult:
    now = svc.clock.now()
    since = now - JOB_LOOKBACK
    result = RetentionResult(plan=RetentionPlan())
    policies = _policies(svc)
    if vm_name is not None:
        item = svc.protected_items.get(vm_name)
        jobs = _jobs(svc, JobQuery(vm_name=vm_name, operation="Backup", since=since, page_size=1000))
        _retain_vms(svc, {vm_name.lower(): item} if item else {vm_name.lower(): None}, jobs, policies, now, result,
                    record=record)
    else:
        for shard in SHARDS:
            for page in _shard_pages(svc, shard, None, PAGE_SIZE):
                _retain_page(svc, shard, page, since, policies, now, result, record=record)
        for listed in svc.status_archive.list_pages():
            _retain_status_blobs(svc, listed.blobs, now, result, record=record)
    result.backfilled = list(result.plan.backfill)
    if record:
        _log_result(result, f" of VM {vm_name}" if vm_name else "")
    return result


def _log_result(result: RetentionResult, what: str) -> None:
    plan = result.plan
    log.info("retention%s: examined %s point(s), deleted %s point(s), %s snapshot(s) (%s already gone), "
             "%s status blob(s); %s claim(s) lost to another run; %s point(s) backfilled; %s point(s) found "
             "Unavailable; %s problem(s) reported", what, plan.examined, len(result.points_deleted),
             result.snapshots_deleted, result.snapshots_gone, result.blobs_deleted, result.lost_claims,
             len(result.backfilled), len(result.marked_unavailable), len(plan.problems))


# --- the timer's run: parts, cursors, a time budget per invocation -------------------------------

@dataclass
class PartOutcome:
    """What one invocation did with one part of a run."""

    request: RetentionRequest
    state: str              # "finished", "continued" (a continuation was sent), or "stale" (a later run has it)
    pages: int              # pages settled by this invocation
    result: RetentionResult
    seconds: float


@dataclass
class RetentionStart:
    """The timer's run: the parts it settled itself, and the requests it handed to the retention queue."""

    run: datetime
    outcomes: list[PartOutcome] = field(default_factory=list)
    sent: list[RetentionRequest] = field(default_factory=list)


def start_retention(svc: StartRetentionNeeds, *, fan_out: bool | None = None, budget: timedelta | None = None,
                    monotonic: Callable[[], float] = time.monotonic, page_size: int | None = None) -> RetentionStart:
    """The timer: a run named by now over every part. A large fleet (``PLANNER_FAN_OUT_ITEMS``, counted
    by the scheduler) is handed to the retention workers, a request per part; a smaller one is settled
    here, part after part, and what the budget leaves is handed over too."""
    run = svc.clock.now()
    start = RetentionStart(run)
    requests = [RetentionRequest(part, run) for part in PARTS]
    if fan_out is None:
        threshold = svc.settings.fan_out_items
        fan_out = threshold > 0 and sum(p.items for p in svc.progress.all()) >= threshold
    began = monotonic()
    for n, request in enumerate(requests):
        left = (INVOCATION_BUDGET if budget is None else budget) - timedelta(seconds=monotonic() - began)
        if fan_out or left <= timedelta(0):
            start.sent = requests[n:]
            svc.retention_queue.send(start.sent)
            break
        start.outcomes.append(retain_part(svc, request, budget=left, monotonic=monotonic, page_size=page_size))
    log.info("retention run %s: %s part(s) settled here, %s handed to the retention queue", run.isoformat(),
             len(start.outcomes), len(start.sent))
    return start


def retain_part(svc: RetainPartNeeds, request: RetentionRequest, *, budget: timedelta | None = None,
                monotonic: Callable[[], float] = time.monotonic, page_size: int | None = None) -> PartOutcome:
    """Settle one part of a run from where the run left it, page after page (``page_size`` VMs); after
    ``budget`` (INVOCATION_BUDGET) it sends the run a continuation and returns. A request of a run that no
    longer holds the part does nothing."""
    began = monotonic()
    budget = INVOCATION_BUDGET if budget is None else budget
    run, part = request.run, request.part
    result = RetentionResult(plan=RetentionPlan())
    outcome = PartOutcome(request, "stale", 0, result, 0.0)
    progress = _take(svc, request)
    if progress is None:
        log.info("retention run %s, part %s: a later run holds or finished it; nothing to do", run.isoformat(), part)
        return outcome
    now = svc.clock.now()
    cursor = progress.cursor
    since = progress.since or run - JOB_LOOKBACK        # fixed when the run took the part

    def pages() -> Iterator[tuple[str | None, datetime | None]]:
        """Settles the part's next page, then yields the cursor after it and its oldest unsettled slot."""
        if part == BLOBS:
            for listed in svc.status_archive.list_pages(cursor):
                _retain_status_blobs(svc, listed.blobs, now, result, record=True)
                yield listed.marker, None
            return
        policies = _policies(svc)
        for page in _shard_pages(svc, part, cursor, page_size or PAGE_SIZE):
            yield page.through, _retain_page(svc, part, page, since, policies, now, result, record=True)

    for after, unsettled in pages():
        outcome.pages += 1
        progress = svc.retention_progress.update(part, lambda p: p.advanced(run, after, unsettled), current=progress)
        if progress.run != run:
            log.info("retention run %s, part %s: a later run took the part over; stopping", run.isoformat(), part)
            break
        if after is not None and monotonic() - began >= budget.total_seconds():
            svc.retention_queue.send([RetentionRequest(part, run, progress.pages)])
            outcome.state = "continued"
            break
    else:
        progress = svc.retention_progress.update(part, lambda p: p.done(run), current=progress)
        outcome.state = "finished"
    result.backfilled = list(result.plan.backfill)
    outcome.seconds = monotonic() - began
    _log_result(result, f" run {run.isoformat()}, part {part} ({outcome.state} after {outcome.pages} page(s), "
                        f"{outcome.seconds:.1f} s)")
    return outcome


def _take(svc: TakeNeeds, request: RetentionRequest) -> RetentionProgress | None:
    """The part's progress once the request's run holds it, or None when a later run does."""
    current = svc.retention_progress.get(request.part)
    since = current.window_start(request.run, lookback=JOB_LOOKBACK, margin=_margin(svc))
    if current.begin(request.run, since) is None:
        return None
    taken: RetentionProgress = svc.retention_progress.update(
        request.part, lambda p: p.begin(request.run, since) or p, current=current)
    return taken if taken.run == request.run else None


def _margin(svc: HasSettings) -> timedelta:
    margin: timedelta = svc.settings.catch_up + JOB_MARGIN
    return margin


# --- a page of a shard ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Page:
    """A page of a shard's items, and the VM names whose jobs go with it: after ``after`` (None: from
    the first) up to ``through`` (None: to the last, so jobs of VMs without an item are read too)."""

    items: dict[str, ProtectedItem]
    after: str | None
    through: str | None


def _shard_pages(svc: HasProtectedItems, shard: str, after: str | None, page_size: int) -> Iterator[_Page]:
    lower = after
    for items in svc.protected_items.pages(page_size, shard=shard, after=after):
        through = items[-1].vm_name.lower()
        yield _Page({item.vm_name.lower(): item for item in items}, lower, through)
        lower = through
    yield _Page({}, lower, None)


def _retain_page(svc: RetainPageNeeds, shard: str, page: _Page, since: datetime, policies: dict[str, Policy],
                 now: datetime, result: RetentionResult, *, record: bool) -> datetime | None:
    """Retention of a page's VMs: their jobs in one query, each VM's points, each VM on its own. Returns
    the oldest slot of a job left unsettled (still running, or its clean-up not done)."""
    jobs = _jobs(svc, JobQuery(shard=shard, operation="Backup", since=since, vms_after=page.after,
                               vms_through=page.through, page_size=1000))
    items: dict[str, ProtectedItem | None] = dict(page.items)
    return min(_retain_vms(svc, items, jobs, policies, now, result, record=record), default=None)


def _retain_vms(svc: RetainPageNeeds, items: dict[str, ProtectedItem | None], jobs: list[Job],
                policies: dict[str, Policy], now: datetime, result: RetentionResult, *, record: bool) -> list[datetime]:
    """Each VM of ``items`` and of ``jobs`` on its own, side by side; records the problems found as
    Retention jobs. Returns the slots of the jobs left unsettled: every job of a VM whose retention
    failed, else those ``_retain_vm`` names."""
    plan = result.plan
    by_vm: dict[str, list[Job]] = {}
    for job in jobs:
        by_vm.setdefault(job.vm_name.lower(), []).append(job)
    keys = sorted(set(items) | set(by_vm))
    before = len(plan.problems)

    def one(key: str) -> list[datetime]:
        item, own = items.get(key), by_vm.get(key, [])
        vm = item.vm_name if item else own[0].vm_name if own else key
        left = _isolated(plan, vm, lambda: _retain_vm(svc, vm, item, own, policies, now, result, record=record))
        return [job.slot for job in own] if left is None else left

    # VMs are independent: their reads and deletions overlap, so a page is bound by storage, not round trips.
    with ThreadPoolExecutor(DELETE_WORKERS) as pool:
        unsettled = [slot for slots in pool.map(one, keys) for slot in slots]
    if record:
        _record_problems(svc, plan.problems[before:], now)
    return unsettled


def _retain_vm(svc: RetainVmNeeds, vm: str, item: ProtectedItem | None, jobs: list[Job], policies: dict[str, Policy],
               now: datetime, result: RetentionResult, *, record: bool) -> list[datetime]:
    """One VM: its points, and its jobs' attempts. Returns the slots of its jobs a later run must read
    again: still running, or whose attempts' snapshots could not be listed or deleted now."""
    points = svc.recovery_points.list_for_vm(vm)
    recorded = [(job, point) for job in jobs if (point := point_from_job(job)) is not None]
    work = _plan_vm(svc, points, recorded, item, policies, now, result.plan, record=record, result=result)
    if record and work is not None and (work.going or work.stale):
        _delete_points(svc, vm, work, now, result)
    unsettled = [job.slot for job in jobs if not job.is_terminal and job.slot <= now]
    actions, unlisted = _attempt_snapshots(svc, jobs, {point.name: point for point in points}, result.plan)
    unsettled += unlisted
    with result.plan.lock:
        result.plan.attempt_snapshots.extend(actions)
    if record:
        for action in actions:
            deleted = _isolated(result.plan, vm, lambda: _delete_artifact(
                svc, action.method, action.snapshot, result, f"job {action.job_id} ({action.rule.value})"))
            if not deleted and action.slot is not None:
                unsettled.append(action.slot)
    return unsettled


def _policies(svc: HasPolicies) -> dict[str, Policy]:
    return {p.name.lower(): p for p in svc.policies.list()}


def _jobs(svc: HasJobs, query: JobQuery) -> list[Job]:
    jobs: list[Job] = []
    while True:
        page = svc.jobs.query(query)
        jobs.extend(page.jobs)
        if not page.continuation:
            return jobs
        query = replace(query, continuation=page.continuation)


# --- points -----------------------------------------------------------------------------------

def _plan_vm(svc: RetainVmNeeds, points: list[RecoveryPoint], backfill: list[tuple[Job, RecoveryPoint]],
             item: ProtectedItem | None, policies: dict[str, Policy], now: datetime, plan: RetentionPlan, *,
             record: bool, result: RetentionResult | None) -> _VmWork | None:
    """One VM's decisions. A successful recent job whose point is missing is backfilled first
    (``record``) or, in a dry run, counted as if it were: a point whose recording was lost still counts
    and can be restored."""
    names = {p.name for p in points}
    missing = [(job, point) for job, point in backfill if point.name not in names]
    for job, point in missing:
        with plan.lock:
            plan.backfill.append(job.job_id)
        if record:
            log.warning("job %s: recovery point %s of VM %s was missing; recording it", job.job_id,
                        point.name, point.vm_name)
            recorded = record_recovery_point(svc, job)
            if recorded is not None:
                request_digests(svc, recorded)      # as ingestion does: its first restore reads its copy only
    points = points + [point for _, point in missing]
    if not points:
        return None
    vm = points[0].vm_name
    policy: Policy | None = policies.get(item.policy_name.lower()) if item else None
    state, purge_after = (item.state, item.purge_after) if item else (None, None)
    decisions = decide(points, policy, now, state=state, purge_after=purge_after)
    for d in decisions:
        if d.rule is Rule.FUTURE_TIME:
            plan.report(RetentionProblem(vm, ProblemKind.FUTURE_TIME, f"recovery point {d.point.name} (job "
                                         f"{d.point.job_id}) is stamped {d.point.created_at.isoformat()}, in the "
                                         f"future: kept, and never counted as the VM's latest point",
                                         d.point.name))
    if state is ProtectionState.PROTECTED and any(not d.keep for d in decisions):
        confirmed = _confirm_latest(svc, vm, points, decisions, policy, now, plan, record=record, result=result)
        if confirmed is None:
            return None
        points, decisions = confirmed
    going = [d for d in decisions if not d.keep]
    stale = [p for p in points if p.state is PointState.DELETING and p.state_changed_at is not None
             and now - p.state_changed_at >= CLAIM_TIMEOUT]
    with plan.lock:
        plan.examined += len(points)
        plan.kept += len(decisions) - len(going)
        plan.points.extend(_action(d) for d in going)
        plan.points.extend(PointAction(p.vm_name, p.name, p.created_at, p.deleted_by or Rule.INSTANT_RESTORE,
                                       "finishing a deletion an earlier run left unfinished", p.artifacts)
                           for p in stale)
    return _VmWork(going, stale)


def _confirm_latest(svc: ConfirmLatestNeeds, vm: str, points: list[RecoveryPoint], decisions: list[Decision],
                    policy: Policy | None, now: datetime, plan: RetentionPlan, *, record: bool,
                    result: RetentionResult | None) -> tuple[list[RecoveryPoint], list[Decision]] | None:
    """The VM's points and decisions once the newest trusted point is known to have all its data.

    A point found broken becomes Unavailable (``record``; in a dry run only in this plan) and the
    decisions are made again, so the next point becomes the one kept and is checked in turn. None when a
    point cannot be checked now: the VM then loses nothing in this run."""
    while True:
        trusted = [p for p in points if p.state is PointState.AVAILABLE and not p.is_from_the_future(now)]
        if not trusted:
            return points, decisions        # nothing restorable left to protect
        newest = max(trusted, key=lambda p: (p.created_at, p.name))
        try:
            gone = missing_data(svc, newest)
        except (TransientError, NotFoundError) as exc:
            plan.report(RetentionProblem(vm, ProblemKind.DEFERRED, f"recovery point {newest.name}, the newest "
                                         f"one kept, could not be checked ({redact(str(exc))}); nothing of the "
                                         f"VM was deleted in this run", newest.name))
            return None
        if gone is None:
            return points, decisions
        broken = newest.unavailable(f"{gone} (found by retention on {now.isoformat(timespec='seconds')})", now)
        if record:
            saved, _ = svc.recovery_points.save_many([broken])
            if saved and result is not None:
                broken = saved[0]
                with result.lock:
                    result.marked_unavailable.append(broken.name)
        log.error("VM %s: recovery point %s (job %s) is Unavailable: %s", vm, newest.name, newest.job_id, gone)
        plan.report(RetentionProblem(vm, ProblemKind.DATA_MISSING, f"recovery point {newest.name} (job "
                                     f"{newest.job_id}): {gone}; it is Unavailable and no longer counts as the "
                                     f"VM's latest point", newest.name))
        points = [broken if p.name == newest.name else p for p in points]
        decisions = decide(points, policy, now, state=ProtectionState.PROTECTED)


def _isolated(plan: RetentionPlan, vm: str, work: Callable[[], T]) -> T | None:
    """``work`` for one VM; an error is that VM's problem, reported with its traceback, not the run's."""
    try:
        return work()
    except TransientError as exc:
        log.warning("VM %s: retention left for the next run: %s", vm, exc)
        plan.report(RetentionProblem(vm, ProblemKind.DEFERRED, f"storage or the Compute API did not answer "
                                     f"({redact(str(exc))}); the next run tries again"))
    except Exception as exc:    # a bulkhead: one VM's odd record must not stop the fleet's retention
        log.exception("VM %s: retention failed; the other VMs go on", vm)
        plan.report(RetentionProblem(vm, ProblemKind.FAILED, f"{type(exc).__name__}: {redact(str(exc))}"))
    return None


def _record_problems(svc: HasJobs, problems: list[RetentionProblem], now: datetime) -> None:
    """A Retention job per VM with problems, saying what went wrong and what to do (``vmsnap job list
    --operation Retention``): Failed when the VM's retention did not finish, CompletedWithWarnings when
    it went round an odd point."""
    by_vm: dict[str, list[RetentionProblem]] = {}
    for problem in problems:
        by_vm.setdefault(problem.vm_name, []).append(problem)
    for vm, found in by_vm.items():
        errors = [JobError.from_remediation(remediation.for_service_error(p.kind.error_code), detail=p.reason)
                  for p in found]
        job = Job(job_id=job_id_for(vm, now, RETENTION_OPERATION), vm_name=vm, slot=now, start_time=now,
                  trigger=Trigger.SCHEDULED, operation=RETENTION_OPERATION, end_time=now, phase=JobPhase.DONE,
                  status=JobStatus.FAILED if any(p.kind in _UNFINISHED for p in found)
                  else JobStatus.COMPLETED_WITH_WARNINGS, errors=errors[:MAX_ERRORS])
        try:
            svc.jobs.create_if_absent(job)
        except VmsnapError as exc:
            log.error("VM %s: could not record its Retention job (%s); its problems are in this log", vm, exc)


def _action(decision: Decision) -> PointAction:
    p = decision.point
    return PointAction(p.vm_name, p.name, p.created_at, decision.rule, decision.reason, p.artifacts)


def _delete_points(svc: DeletePointsNeeds, vm: str, work: _VmWork, now: datetime, result: RetentionResult) -> None:
    claims = [d.point.claimed(d.rule, now) for d in work.going]
    claims += [p.claimed(p.deleted_by or Rule.INSTANT_RESTORE, now) for p in work.stale]
    claimed, lost = svc.recovery_points.save_many(claims)
    with result.lock:
        result.lost_claims += len(lost)
    if lost:
        log.info("VM %s: %s point(s) claimed by another retention run first: %s", vm, len(lost), ", ".join(lost))
    finished = []
    for point in claimed:
        for artifact in point.artifacts:
            rule = point.deleted_by.value if point.deleted_by else ""
            _delete_artifact(svc, point.method, artifact, result, f"point {point.name} of VM {vm} ({rule})")
        finished.append(point.deleted(now))
    saved, not_saved = svc.recovery_points.save_many(finished)
    with result.lock:
        result.points_deleted.extend(p.name for p in saved)
    if not_saved:   # only another run taking over a claim older than CLAIM_TIMEOUT gets here
        log.warning("VM %s: point(s) %s changed while their snapshots were deleted", vm, ", ".join(not_saved))


def _delete_artifact(svc: DeleteArtifactNeeds, method: BackupMethod, artifact: str, result: RetentionResult,
                     why: str) -> bool:
    """Delete a blob snapshot, or a VM restore point (its disk restore points go with it); never more.
    True once it is gone (deleted now, or before)."""
    if method is BackupMethod.RESTORE_POINT:
        what, deleted = "restore point", svc.restore_points.delete(artifact)
    else:
        what, deleted = "snapshot", svc.snapshots.delete_snapshot(artifact)
    with result.lock:
        if deleted:
            result.snapshots_deleted += 1
        else:
            result.snapshots_gone += 1
    if deleted:
        log.info("deleted %s %s of %s", what, artifact, why)
    else:
        log.info("%s %s of %s was already gone", what, artifact, why)
    return True


# --- attempts and status blobs ------------------------------------------------------------------

def _attempt_snapshots(svc: AttemptSnapshotsNeeds, jobs: list[Job], stored: dict[str, RecoveryPoint],
                       plan: RetentionPlan) -> tuple[list[SnapshotAction], list[datetime]]:
    """Snapshots stamped with a final job's id that no recovery point holds, and the slots of the jobs
    whose snapshots could not be looked at now (each job on its own: one that fails is reported in
    ``plan`` and left for the next run). ``stored``: the VM's points as read, by name.

    The job record keeps only its last attempt's disks, so each disk blob's snapshots are listed and
    matched by the ``jobId`` metadata the command stamps on them (shared/domain/command.py); a
    snapshot without it was not made by this service and is never touched. A restore-point job's
    attempts are found by name instead (attempt_restore_point_name).
    """
    actions: list[SnapshotAction] = []
    unlisted: list[datetime] = []
    for job in jobs:
        # A job done by its one and only attempt left no other snapshots; one whose earlier attempt
        # ended it may have a later attempt's (overtaken) snapshots to delete.
        if not job.is_terminal or (job.status in SUCCESSFUL and job.attempt == 1 and not job.attempts):
            continue
        point = stored.get(recovery_point_name(job.job_id))
        found = _isolated(plan, job.vm_name, lambda: _job_attempt_snapshots(svc, job, point))
        if found is None:
            unlisted.append(job.slot)
        actions.extend(found or [])
    return actions, unlisted


def _job_attempt_snapshots(svc: AttemptSnapshotsNeeds, job: Job, stored: RecoveryPoint | None) -> list[SnapshotAction]:
    # Not recorded yet (a dry run before the backfill): the job's own snapshots still count as held.
    point = stored or point_from_job(job)
    held = set(point.artifacts) if point is not None and point.state is not PointState.DELETED else set()
    rule = Rule.SUPERSEDED_ATTEMPT if job.status in SUCCESSFUL else Rule.FAILED_ATTEMPT
    if job.backup_method is BackupMethod.RESTORE_POINT:
        return [SnapshotAction(job.vm_name, job.job_id, found, rule, BackupMethod.RESTORE_POINT, job.slot)
                for found in _attempt_restore_points(svc, job) if found not in held]
    return [SnapshotAction(job.vm_name, job.job_id, snap.url, rule, slot=job.slot)
            for disk in job.disks for snap in svc.snapshots.list_snapshots(disk.blob_url)
            if snap.metadata.get("jobId") == job.job_id and snap.url not in held]


def _attempt_restore_points(svc: AttemptRestorePointsNeeds, job: Job) -> list[str]:
    """The ids of the restore points this job's attempts left that still exist.

    One still being created is left alone: its job is still being decided, and the restore-point timer deletes
    one that never finishes (shared/services/restore_point_backup.py)."""
    try:
        vm_id = vm_resource_id(svc, job.vm_name)
    except NotFoundError:
        log.info("job %s: VM %s is gone; its attempts' restore points went with it", job.job_id, job.vm_name)
        return []
    found = []
    for attempt in range(1, job.attempt + 1):
        state = svc.restore_points.get(vm_id, attempt_restore_point_name(job.job_id, attempt))
        if state is None:
            continue
        if state.provisioning_state.lower() == "creating":
            log.info("job %s: restore point %s is still being created; a later run deletes it", job.job_id,
                     state.name)
            continue
        found.append(state.id)
    return found


def _retain_status_blobs(svc: RetainStatusBlobsNeeds, blobs: list[StatusBlobInfo], now: datetime,
                         result: RetentionResult, *, record: bool) -> None:
    """Of a listing page: the status and log blobs of final (or unknown) jobs, last written longer ago
    than the setting. Their jobs are read together (one query per job partition).

    A job's blobs are judged together; one whose blobs a page boundary splits is judged in each page
    on the blobs it holds there, which is harmless: its job is final (or unknown) either way."""
    cutoff = now - svc.settings.status_blob_retention
    by_job: dict[str, list[tuple[str, datetime]]] = {}
    for blob in blobs:
        job_id = blob.name.split("/", 1)[0] if "/" in blob.name else None
        by_job.setdefault(job_id or blob.name, []).append((blob.name, blob.last_modified))
    expired = {key: found for key, found in by_job.items() if max(when for _, when in found) <= cutoff}
    ids = {key: parsed[0] for key in expired if (parsed := parse_blob_name(f"{key}/1.Status.txt"))}
    jobs = svc.jobs.get_many(list(ids.values())) if ids else {}
    actions: list[BlobAction] = []
    for key, found in expired.items():
        job = jobs.get(ids[key]) if key in ids else None
        if job is not None and not job.is_terminal:
            continue
        actions.extend(BlobAction(name, job.job_id if job else None) for name, _ in sorted(found))
    result.plan.status_blobs.extend(actions)
    if record:
        for action in actions:
            if svc.status_archive.delete_blob(action.name):
                result.blobs_deleted += 1
