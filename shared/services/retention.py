"""Retention: decide what expires (shared/domain/retention.py), delete its snapshots (blob snapshots,
or the VM restore point of a managed-disk VM) and mark the points Deleted; delete the snapshots or
restore points of failed and superseded attempts; purge soft-deleted items;
delete status/log blobs of final jobs once old enough. ``plan`` is the same computation, changing nothing.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Callable, Iterable, TypeVar

from shared.domain import remediation
from shared.domain.inventory import BackupMethod
from shared.domain.jobs import MAX_ERRORS, Job, JobError, JobPhase, JobStatus, job_id_for
from shared.domain.policy import Policy
from shared.domain.protection import ProtectedItem, ProtectionState
from shared.domain.recovery import (SUCCESSFUL, PointState, RecoveryPoint, SnapshotMethod, point_from_job,
                                    recovery_point_name)
from shared.domain.restore_point import attempt_restore_point_name
from shared.domain.retention import Decision, Rule, decide
from shared.domain.task import Trigger
from shared.errors import NotFoundError, TransientError, VmsnapError
from shared.ports import JobQuery
from shared.redaction import redact
from shared.services.ingestion import parse_blob_name
from shared.services.point_data import missing_data
from shared.services.recovery import record_recovery_point
from shared.services.restore_point_backup import vm_resource_id

log = logging.getLogger(__name__)

T = TypeVar("T")

RETENTION_OPERATION = "Retention"
CLAIM_TIMEOUT = timedelta(hours=1)
# How far back job records are read for points to backfill and attempt snapshots to delete. Retention
# runs daily, so a month covers a long outage of the timer.
JOB_LOOKBACK = timedelta(days=35)
DELETE_WORKERS = 8


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
    method: SnapshotMethod = SnapshotMethod.BLOB_SNAPSHOT


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


def plan_retention(svc: Any, vm_name: str | None = None) -> RetentionPlan:
    """Exactly what ``run_retention`` would do now, and why; changes nothing (it reads what it checks)."""
    plan = RetentionPlan()
    now = svc.clock.now()
    jobs = _recent_jobs(svc, vm_name, now)
    _plan_points(svc, vm_name, now, plan, jobs, record=False)
    plan.attempt_snapshots = _attempt_snapshots(svc, jobs, now, plan)
    if vm_name is None:
        plan.status_blobs = _expired_status_blobs(svc, now)
    return plan


def run_retention(svc: Any, vm_name: str | None = None) -> RetentionResult:
    """Enforce retention now (for one VM, or all); see the module docstring for the guarantees."""
    now = svc.clock.now()
    jobs = _recent_jobs(svc, vm_name, now)
    result = RetentionResult(plan=RetentionPlan())
    plan = result.plan
    work_by_vm = _plan_points(svc, vm_name, now, plan, jobs, record=True, result=result)
    result.backfilled = list(plan.backfill)
    # VMs are independent: their deletions overlap, so a run is bound by storage, not by round trips.
    with ThreadPoolExecutor(DELETE_WORKERS) as pool:
        for _ in pool.map(lambda item: _isolated(plan, item[0], lambda: _delete_points(
                svc, item[0], item[1], now, result)), work_by_vm.items()):
            pass
    plan.attempt_snapshots = _attempt_snapshots(svc, jobs, now, plan)
    for action in plan.attempt_snapshots:
        _isolated(plan, action.vm_name, lambda: _delete_artifact(
            svc, action.method, action.snapshot, result, f"job {action.job_id} ({action.rule.value})"))
    if vm_name is None:
        plan.status_blobs = _expired_status_blobs(svc, now)
        for blob in plan.status_blobs:
            if svc.status_archive.delete_blob(blob.name):
                result.blobs_deleted += 1
    _record_problems(svc, plan.problems, now)
    log.info("retention%s: examined %s point(s), deleted %s point(s), %s snapshot(s) (%s already gone), "
             "%s status blob(s); %s claim(s) lost to another run; %s point(s) backfilled; %s point(s) found "
             "Unavailable; %s problem(s) reported",
             f" of VM {vm_name}" if vm_name else "", plan.examined, len(result.points_deleted),
             result.snapshots_deleted, result.snapshots_gone, result.blobs_deleted, result.lost_claims,
             len(result.backfilled), len(result.marked_unavailable), len(plan.problems))
    return result


# --- points -----------------------------------------------------------------------------------

def _plan_points(svc: Any, vm_name: str | None, now: datetime, plan: RetentionPlan, jobs: list[Job], *,
                 record: bool, result: RetentionResult | None = None) -> dict[str, _VmWork]:
    """Fill ``plan.points``; returns the work of each VM that has some. Each VM on its own: what goes
    wrong with one is reported in ``plan.problems`` and the others go on."""
    items = _items(svc, vm_name)
    policies = {p.name.lower(): p for p in svc.policies.list()}
    recorded: dict[str, list[tuple[Job, RecoveryPoint]]] = {}
    for job in jobs:
        point = point_from_job(job)
        if point is not None:
            recorded.setdefault(point.vm_name.lower(), []).append((job, point))
    work: dict[str, _VmWork] = {}
    for key, points in _with_missing(svc.recovery_points.scan(vm_name), recorded):
        backfill = recorded.pop(key, [])
        vm = points[0].vm_name if points else backfill[0][1].vm_name if backfill else key
        planned = _isolated(plan, vm, lambda: _plan_vm(svc, points, backfill, items.get(key), policies, now, plan,
                                                         record=record, result=result))
        if planned is not None and (planned.going or planned.stale):
            work[vm] = planned
    return work


def _with_missing(groups: Iterable[list[RecoveryPoint]],
                  recorded: dict[str, list[tuple[Job, RecoveryPoint]]]) -> Iterable[tuple[str, list[RecoveryPoint]]]:
    """(VM key, its points) from the scan, then the VMs with recent successful jobs but no point yet."""
    for points in groups:
        yield points[0].vm_name.lower(), points
    for key in list(recorded):
        yield key, []


def _plan_vm(svc: Any, points: list[RecoveryPoint], backfill: list[tuple[Job, RecoveryPoint]],
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
            record_recovery_point(svc, job)
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
        plan.points.extend(PointAction(p.vm_name, p.name, p.created_at, Rule(p.deleted_by or Rule.INSTANT_RESTORE),
                                       "finishing a deletion an earlier run left unfinished", p.artifacts)
                           for p in stale)
    return _VmWork(going, stale)


def _confirm_latest(svc: Any, vm: str, points: list[RecoveryPoint], decisions: list[Decision],
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


def _record_problems(svc: Any, problems: list[RetentionProblem], now: datetime) -> None:
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
                  trigger=Trigger.SCHEDULED.value, operation=RETENTION_OPERATION, end_time=now, phase=JobPhase.DONE,
                  status=JobStatus.FAILED if any(p.kind in _UNFINISHED for p in found)
                  else JobStatus.COMPLETED_WITH_WARNINGS, errors=errors[:MAX_ERRORS])
        try:
            svc.jobs.create_if_absent(job)
        except VmsnapError as exc:
            log.error("VM %s: could not record its Retention job (%s); its problems are in this log", vm, exc)


def _action(decision: Decision) -> PointAction:
    p = decision.point
    return PointAction(p.vm_name, p.name, p.created_at, decision.rule, decision.reason, p.artifacts)


def _delete_points(svc: Any, vm: str, work: _VmWork, now: datetime, result: RetentionResult) -> None:
    claims = [d.point.claimed(d.rule.value, now) for d in work.going]
    claimed, lost = svc.recovery_points.save_many(claims + [p.claimed(p.deleted_by or "", now) for p in work.stale])
    with result.lock:
        result.lost_claims += len(lost)
    if lost:
        log.info("VM %s: %s point(s) claimed by another retention run first: %s", vm, len(lost), ", ".join(lost))
    finished = []
    for point in claimed:
        for artifact in point.artifacts:
            _delete_artifact(svc, point.method, artifact, result, f"point {point.name} of VM {vm} ({point.deleted_by})")
        finished.append(point.deleted(now))
    saved, not_saved = svc.recovery_points.save_many(finished)
    with result.lock:
        result.points_deleted.extend(p.name for p in saved)
    if not_saved:   # only another run taking over a claim older than CLAIM_TIMEOUT gets here
        log.warning("VM %s: point(s) %s changed while their snapshots were deleted", vm, ", ".join(not_saved))


def _delete_artifact(svc: Any, method: SnapshotMethod, artifact: str, result: RetentionResult, why: str) -> None:
    """Delete a blob snapshot, or a VM restore point (its disk restore points go with it); never more."""
    if method is SnapshotMethod.RESTORE_POINT:
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


def _items(svc: Any, vm_name: str | None) -> dict[str, ProtectedItem]:
    if vm_name is not None:
        item = svc.protected_items.get(vm_name)
        return {item.vm_name.lower(): item} if item else {}
    return {item.vm_name.lower(): item for page in svc.protected_items.pages() for item in page}


# --- attempts and status blobs ------------------------------------------------------------------

def _recent_jobs(svc: Any, vm_name: str | None, now: datetime) -> list[Job]:
    jobs: list[Job] = []
    token = None
    while True:
        page = svc.jobs.query(JobQuery(vm_name=vm_name, operation="Backup", since=now - JOB_LOOKBACK,
                                       page_size=1000, continuation=token))
        jobs.extend(page.jobs)
        token = page.continuation
        if not token:
            return jobs


def _attempt_snapshots(svc: Any, jobs: list[Job], now: datetime, plan: RetentionPlan) -> list[SnapshotAction]:
    """Snapshots stamped with a final job's id that no recovery point holds (each job on its own: one
    that cannot be looked at now is reported in ``plan`` and left for the next run).

    The job record keeps only its last attempt's disks, so each disk blob's snapshots are listed and
    matched by the ``jobId`` metadata the command stamps on them (shared/domain/command.py); a
    snapshot without it was not made by this service and is never touched. A restore-point job's
    attempts are found by name instead (attempt_restore_point_name).
    """
    actions: list[SnapshotAction] = []
    for job in jobs:
        # A job done by its one and only attempt left no other snapshots; one whose earlier attempt
        # ended it may have a later attempt's (overtaken) snapshots to delete.
        if not job.is_terminal or (job.status in SUCCESSFUL and job.attempt == 1 and not job.attempts):
            continue
        actions.extend(_isolated(plan, job.vm_name, lambda: _job_attempt_snapshots(svc, job)) or [])
    return actions


def _job_attempt_snapshots(svc: Any, job: Job) -> list[SnapshotAction]:
    # Not recorded yet (a dry run before the backfill): the job's own snapshots still count as held.
    point = svc.recovery_points.get(job.vm_name, recovery_point_name(job.job_id)) or point_from_job(job)
    held = set(point.artifacts) if point is not None and point.state is not PointState.DELETED else set()
    rule = Rule.SUPERSEDED_ATTEMPT if job.status in SUCCESSFUL else Rule.FAILED_ATTEMPT
    if job.backup_method == BackupMethod.RESTORE_POINT.value:
        return [SnapshotAction(job.vm_name, job.job_id, found, rule, SnapshotMethod.RESTORE_POINT)
                for found in _attempt_restore_points(svc, job) if found not in held]
    return [SnapshotAction(job.vm_name, job.job_id, snap.url, rule)
            for disk in job.disks for snap in svc.snapshots.list_snapshots(disk.blob_url)
            if snap.metadata.get("jobId") == job.job_id and snap.url not in held]


def _attempt_restore_points(svc: Any, job: Job) -> list[str]:
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


def _expired_status_blobs(svc: Any, now: datetime) -> list[BlobAction]:
    """Status and log blobs of final (or unknown) jobs, last written longer ago than the setting."""
    cutoff = now - svc.settings.status_blob_retention
    by_job: dict[str, list[tuple[str, datetime]]] = {}
    for blob in svc.status_archive.list_blobs():
        job_id = blob.name.split("/", 1)[0] if "/" in blob.name else None
        by_job.setdefault(job_id or blob.name, []).append((blob.name, blob.last_modified))
    actions: list[BlobAction] = []
    for key, blobs in by_job.items():
        if max(when for _, when in blobs) > cutoff:
            continue
        parsed = parse_blob_name(f"{key}/1.Status.txt")
        job = svc.jobs.get(parsed[0]) if parsed else None
        if job is not None and not job.is_terminal:
            continue
        actions.extend(BlobAction(name, job.job_id if job else None) for name, _ in sorted(blobs))
    return actions
