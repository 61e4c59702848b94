"""Retention: decide what expires (shared/domain/retention.py), delete its snapshots (blob snapshots,
or the VM restore point of a managed-disk VM) and mark the points Deleted; delete the snapshots or
restore points of failed and superseded attempts; purge soft-deleted items;
delete status/log blobs of final jobs once old enough. ``plan`` is the same computation, changing nothing.

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
from typing import Any, Iterable

from shared.domain.inventory import BackupMethod
from shared.domain.jobs import Job
from shared.domain.policy import Policy
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import (SUCCESSFUL, PointState, RecoveryPoint, SnapshotMethod, point_from_job,
                                    recovery_point_name)
from shared.domain.restore_point import attempt_restore_point_name
from shared.domain.retention import Decision, Rule, decide
from shared.errors import NotFoundError
from shared.ports import JobQuery
from shared.services.ingestion import parse_blob_name
from shared.services.recovery import record_recovery_point
from shared.services.restore_point_backup import vm_resource_id

log = logging.getLogger(__name__)

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


@dataclass
class RetentionPlan:
    points: list[PointAction] = field(default_factory=list)
    attempt_snapshots: list[SnapshotAction] = field(default_factory=list)
    status_blobs: list[BlobAction] = field(default_factory=list)
    backfill: list[str] = field(default_factory=list)      # job ids whose point is missing
    examined: int = 0                                      # points looked at
    kept: int = 0


@dataclass
class RetentionResult:
    plan: RetentionPlan
    points_deleted: list[str] = field(default_factory=list)     # point names this run marked Deleted
    snapshots_deleted: int = 0      # blob snapshots and restore points deleted by this run's own calls
    snapshots_gone: int = 0         # already gone (another run, or by hand): counted as done
    lost_claims: int = 0            # points another run claimed first
    blobs_deleted: int = 0
    backfilled: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


def plan_retention(svc: Any, vm_name: str | None = None) -> RetentionPlan:
    """Exactly what ``run_retention`` would do now, and why; changes nothing."""
    plan = RetentionPlan()
    now = svc.clock.now()
    jobs = _recent_jobs(svc, vm_name, now)
    _plan_points(svc, vm_name, now, plan, jobs, record=False)
    plan.attempt_snapshots = _attempt_snapshots(svc, jobs, now)
    if vm_name is None:
        plan.status_blobs = _expired_status_blobs(svc, now)
    return plan


def run_retention(svc: Any, vm_name: str | None = None) -> RetentionResult:
    """Enforce retention now (for one VM, or all); see the module docstring for the guarantees."""
    now = svc.clock.now()
    jobs = _recent_jobs(svc, vm_name, now)
    result = RetentionResult(plan=RetentionPlan())
    plan = result.plan
    decisions_by_vm = _plan_points(svc, vm_name, now, plan, jobs, record=True)
    result.backfilled = list(plan.backfill)
    # VMs are independent: their deletions overlap, so a run is bound by storage, not by round trips.
    with ThreadPoolExecutor(DELETE_WORKERS) as pool:
        for _ in pool.map(lambda work: _delete_points(svc, work[0], work[1][0], work[1][1], now, result),
                          decisions_by_vm.items()):
            pass
    plan.attempt_snapshots = _attempt_snapshots(svc, jobs, now)
    for action in plan.attempt_snapshots:
        _delete_artifact(svc, action.method, action.snapshot, result, f"job {action.job_id} ({action.rule.value})")
    if vm_name is None:
        plan.status_blobs = _expired_status_blobs(svc, now)
        for blob in plan.status_blobs:
            if svc.status_archive.delete_blob(blob.name):
                result.blobs_deleted += 1
    log.info("retention%s: examined %s point(s), deleted %s point(s), %s snapshot(s) (%s already gone), "
             "%s status blob(s); %s claim(s) lost to another run; %s point(s) backfilled",
             f" of VM {vm_name}" if vm_name else "", plan.examined, len(result.points_deleted),
             result.snapshots_deleted, result.snapshots_gone, result.blobs_deleted, result.lost_claims,
             len(result.backfilled))
    return result


# --- points -----------------------------------------------------------------------------------

def _plan_points(svc: Any, vm_name: str | None, now: datetime, plan: RetentionPlan, jobs: list[Job], *,
                 record: bool) -> dict[str, tuple[list[Decision], list[RecoveryPoint]]]:
    """Fill ``plan.points``; returns, per VM with work, (deletions decided, stale claims to finish).

    A successful recent job whose point is missing is backfilled first (``record``) or, in a dry
    run, counted as if it were: a point whose recording was lost still counts and can be restored.
    """
    items = _items(svc, vm_name)
    policies = {p.name.lower(): p for p in svc.policies.list()}
    recorded: dict[str, list[tuple[Job, RecoveryPoint]]] = {}
    for job in jobs:
        point = point_from_job(job)
        if point is not None:
            recorded.setdefault(point.vm_name.lower(), []).append((job, point))
    work: dict[str, tuple[list[Decision], list[RecoveryPoint]]] = {}
    for key, points in _with_missing(svc.recovery_points.scan(vm_name), recorded):
        names = {p.name for p in points}
        missing = [(job, point) for job, point in recorded.pop(key, []) if point.name not in names]
        for job, point in missing:
            plan.backfill.append(job.job_id)
            if record:
                log.warning("job %s: recovery point %s of VM %s was missing; recording it", job.job_id,
                            point.name, point.vm_name)
                record_recovery_point(svc, job)
        points = points + [point for _, point in missing]
        if not points:
            continue
        vm = points[0].vm_name
        item = items.get(vm.lower())
        policy: Policy | None = policies.get(item.policy_name.lower()) if item else None
        decisions = decide(points, policy, now, state=item.state if item else None,
                           purge_after=item.purge_after if item else None)
        plan.examined += len(points)
        going = [d for d in decisions if not d.keep]
        plan.kept += len(decisions) - len(going)
        stale = [p for p in points if p.state is PointState.DELETING and p.state_changed_at is not None
                 and now - p.state_changed_at >= CLAIM_TIMEOUT]
        plan.points.extend(_action(d) for d in going)
        plan.points.extend(PointAction(p.vm_name, p.name, p.created_at, Rule(p.deleted_by or Rule.INSTANT_RESTORE),
                                       "finishing a deletion an earlier run left unfinished", p.artifacts)
                           for p in stale)
        if going or stale:
            work[vm] = (going, stale)
    return work


def _with_missing(groups: Iterable[list[RecoveryPoint]],
                  recorded: dict[str, list[tuple[Job, RecoveryPoint]]]) -> Iterable[tuple[str, list[RecoveryPoint]]]:
    """(VM key, its points) from the scan, then the VMs with recent successful jobs but no point yet."""
    for points in groups:
        yield points[0].vm_name.lower(), points
    for key in list(recorded):
        yield key, []


def _action(decision: Decision) -> PointAction:
    p = decision.point
    return PointAction(p.vm_name, p.name, p.created_at, decision.rule, decision.reason, p.artifacts)


def _delete_points(svc: Any, vm: str, going: list[Decision], stale: list[RecoveryPoint], now: datetime,
                   result: RetentionResult) -> None:
    claims = [d.point.claimed(d.rule.value, now) for d in going]
    claimed, lost = svc.recovery_points.save_many(claims + [p.claimed(p.deleted_by or "", now) for p in stale])
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


def _attempt_snapshots(svc: Any, jobs: list[Job], now: datetime) -> list[SnapshotAction]:
    """Snapshots stamped with a final job's id that no recovery point holds.

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
        # Not recorded yet (a dry run before the backfill): the job's own snapshots still count as held.
        point = svc.recovery_points.get(job.vm_name, recovery_point_name(job.job_id)) or point_from_job(job)
        held = set(point.artifacts) if point is not None and point.state is not PointState.DELETED else set()
        rule = Rule.SUPERSEDED_ATTEMPT if job.status in SUCCESSFUL else Rule.FAILED_ATTEMPT
        if job.backup_method == BackupMethod.RESTORE_POINT.value:
            actions.extend(SnapshotAction(job.vm_name, job.job_id, found, rule, SnapshotMethod.RESTORE_POINT)
                           for found in _attempt_restore_points(svc, job) if found not in held)
            continue
        for disk in job.disks:
            for snap in svc.snapshots.list_snapshots(disk.blob_url):
                if snap.metadata.get("jobId") == job.job_id and snap.url not in held:
                    actions.append(SnapshotAction(job.vm_name, job.job_id, snap.url, rule))
    return actions


def _attempt_restore_points(svc: Any, job: Job) -> list[str]:
    """The ids of the restore points this job's attempts left that still exist.

    One still being created is left for a later run: ARM refuses to delete it while it is in progress."""
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
