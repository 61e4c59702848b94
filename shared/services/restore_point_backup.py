"""Use cases of the restore-point backup method (managed-disk VMs): start an attempt's restore point
from the worker without waiting, and follow restore points from a timer until their jobs finish.

The worker calls ``start_restore_point`` where the extension path would build a command; the timer
calls ``track_restore_points``. Both speak the same job transitions as the status blob path.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from shared.domain import remediation
from shared.domain.inventory import BackupMethod, Disk, Vm
from shared.domain.job_transitions import MAX_ATTEMPTS, mark_attempt_failed, mark_failed, next_attempt_at
from shared.domain.jobs import Consistency, Job, JobError, JobPhase, JobStatus
from shared.domain.restore_point import (ArmFailure, RestorePointState, apply_restore_point,
                                         collection_name, mark_create_operation, mark_restore_point_requested,
                                         mark_restore_point_timed_out, refusal_error, restore_point_deadline,
                                         restore_point_name, restore_point_request)
from shared.domain.recovery import SUCCESSFUL
from shared.domain.task import SnapshotTask, Trigger
from shared.errors import NotFoundError, PermanentError, TransientError, ValidationError
from shared.ports import JobQuery, RestorePointRefused
from shared.services.recovery import record_recovery_point
from shared.services.needs import (HasClock, HasInventory, HasJobs, HasPolicies, HasProtectedItems, HasRecoveryPoints,
                                   HasRestorePoints, HasSettings, HasTaskQueue)

log = logging.getLogger(__name__)


class BackupByRestorePointNeeds(HasJobs, HasPolicies, HasProtectedItems, HasRestorePoints, HasTaskQueue, Protocol):
    """What backup_by_restore_point(), start_restore_point() read."""


class PreviewRestorePointNeeds(HasPolicies, HasProtectedItems, Protocol):
    """What preview_restore_point() reads."""


class TrackRestorePointsNeeds(HasClock, HasInventory, HasJobs, HasProtectedItems, HasRecoveryPoints,
                              HasRestorePoints, HasSettings, HasTaskQueue, Protocol):
    """What track_restore_points() reads."""


class VmResourceIdNeeds(HasInventory, HasProtectedItems, Protocol):
    """What vm_resource_id() reads."""


class RefusedNeeds(HasJobs, HasRestorePoints, HasTaskQueue, Protocol):
    """What _refused() reads."""


class TrackNeeds(HasInventory, HasJobs, HasProtectedItems, HasRecoveryPoints, HasRestorePoints, HasTaskQueue,
                 Protocol):
    """What _track() reads."""


class WhyItFailedNeeds(HasInventory, HasProtectedItems, HasRestorePoints, Protocol):
    """What _why_it_failed() reads."""


class RetryNeeds(HasJobs, HasTaskQueue, Protocol):
    """What _retry() reads."""

# Jobs are looked up by slot time; nothing InProgress can be older than this and still matter.
LOOKBACK = timedelta(days=3)


@dataclass(frozen=True)
class Started:
    job: Job
    task_id: str
    failed: bool = False        # the restore point was refused: the job is Failed
    superseded: bool = False    # the job moved on meanwhile: nothing was created
    retrying: bool = False      # refused for a reason that may pass: the next attempt is queued


def vm_reference(svc: HasProtectedItems, vm_name: str) -> str:
    """The VM's ARM id when its protected item knows it (one GET, never a subscription-wide listing),
    else its name."""
    item = svc.protected_items.get(vm_name)
    return item.resource_id if item is not None and item.resource_id else vm_name


def backup_by_restore_point(svc: BackupByRestorePointNeeds, job: Job, task: SnapshotTask, vm: Vm, now: datetime,
                            ids: str) -> Started | None:
    """The worker's choice of method: None for page-blob VMs (the extension command goes on), else
    the restore point started (or the job failed, for a VM whose disks mix both kinds)."""
    try:
        method = vm.backup_method()
    except ValidationError as exc:
        fix = remediation.for_service_error(remediation.RP_DISK_NOT_SUPPORTED)
        return Started(_fail(svc, job, JobError.from_remediation(fix, detail=str(exc)), now, ids), job.expected_task_id,
                       failed=True)
    if method is BackupMethod.EXTENSION_COMMAND:
        return None
    return start_restore_point(svc, job, task, vm, now, ids)


def start_restore_point(svc: BackupByRestorePointNeeds, job: Job, task: SnapshotTask, vm: Vm, now: datetime,
                        ids: str) -> Started:
    """Start this attempt's restore point; returns as soon as ARM has accepted it.

    A redelivered task of an attempt already started reuses its name, so it finds that restore point
    instead of making a second one. TransientError (ARM throttling past the client's retries, an
    outage) propagates: the platform redelivers the message.
    """
    # Only the retry policy starts a new attempt (it queues attempt + 1); a delivery claims the
    # job's current one, and a redelivery of a claimed attempt finds its restore point by name.
    same_attempt = job.backup_method is BackupMethod.RESTORE_POINT and job.phase is not JobPhase.QUEUED
    attempt = job.attempt
    task_id = job.task_id if same_attempt and job.task_id else f"{task.job_id}_{attempt}"
    included, excluded = _disks_to_back_up(svc, vm)

    def claim(current: Job) -> Job | None:
        if current.is_terminal or current.attempt != attempt or (
                current.phase is not JobPhase.QUEUED and current.task_id != task_id):
            return None
        return mark_restore_point_requested(current, attempt=attempt, task_id=task_id, disks=included, now=now)

    job = svc.jobs.update(job.job_id, claim)
    if job.task_id != task_id or job.is_terminal:
        log.warning("%s: the job moved on meanwhile (%s, task %s); no restore point started", ids,
                    job.status.value, job.task_id)
        return Started(job, task_id, superseded=True)
    consistency = _consistency(svc, job.policy_name)
    resource_id = vm.resource_id or ""
    try:
        svc.restore_points.ensure_collection(resource_id, vm.location or "")
        state = svc.restore_points.begin_create(resource_id, restore_point_name(task_id), consistency=consistency,
                                                exclude_disk_ids=[d.resource for d in excluded])
    except RestorePointRefused as exc:
        failure = ArmFailure(exc.arm_code, exc.arm_message, exc.status)
        return _refused(svc, job, task_id, failure, resource_id, consistency, now, ids)
    except PermanentError as exc:
        error = refusal_error(ArmFailure("", str(exc)))
        return Started(_fail(svc, job, error, now, ids), task_id, failed=True)
    if state.operation:
        job = svc.jobs.update(job.job_id, lambda current: mark_create_operation(current, task_id, state.operation))
    log.info("%s: restore point %s of VM %s is %s (%s, %d disk(s), %d excluded)", ids, state.name, vm.name,
             state.provisioning_state, consistency.value, len(included), len(excluded))
    return Started(job, task_id)


def _refused(svc: RefusedNeeds, job: Job, task_id: str, failure: ArmFailure, vm_id: str, consistency: Consistency,
             now: datetime, ids: str) -> Started:
    """ARM refused the create: retried when the refusal may pass (its code, or a code vmsnap does not
    know), failed with its advice otherwise."""
    crash = consistency is Consistency.CRASH
    error = refusal_error(failure, power_state=None if crash else _power_state(svc, vm_id, ids), crash=crash)
    if error.retryable and job.attempt < MAX_ATTEMPTS:
        _retry(svc, job, error, restore_point_name(task_id), now, ids)
        return Started(svc.jobs.get(job.job_id) or job, task_id, retrying=True)
    return Started(_fail(svc, job, error, now, ids), task_id, failed=True)


def _power_state(svc: HasRestorePoints, vm_id: str, ids: str) -> str | None:
    """The VM's power state, asked only once something failed; None when it cannot be read now."""
    try:
        power: str | None = svc.restore_points.vm_power_state(vm_id)
        return power
    except (TransientError, PermanentError) as exc:
        log.info("%s: the VM's power state is not readable now: %s", ids, exc)
        return None


def preview_restore_point(svc: PreviewRestorePointNeeds, vm: Vm, task: SnapshotTask) -> dict[str, object]:
    """What a backup-now of a managed-disk VM would ask ARM for (``--dry-run``); creates nothing."""
    included, excluded = _disks_to_back_up(svc, vm)
    item = svc.protected_items.get(vm.name)
    policy = item.policy_name if item is not None else task.policy_name
    consistency = _consistency(svc, policy)
    collection = f"{(vm.resource_id or '').split('/providers/', 1)[0]}/providers/Microsoft.Compute/" \
                 f"restorePointCollections/{collection_name(vm.name)}"
    request = restore_point_request(consistency, [d.resource for d in excluded])
    return {"backupMethod": BackupMethod.RESTORE_POINT.value,
            "restorePointCollection": {"id": collection, "location": vm.location,
                                       "properties": {"source": {"id": vm.resource_id}}},
            "restorePoint": {"id": f"{collection}/restorePoints/{restore_point_name(task.task_id)}", **request},
            "disks": [{"lun": d.lun, "id": d.resource} for d in included]}


@dataclass
class TrackResult:
    examined: int = 0
    finished: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)


def track_restore_points(svc: TrackRestorePointsNeeds, *, page_size: int = 200) -> TrackResult:
    """Read the restore point of every InProgress restore-point job and move the job on; a restore
    point past its window fails its job with advice, a retryable failure queues the next attempt."""
    now = svc.clock.now()
    result = TrackResult()
    query = JobQuery(status=JobStatus.IN_PROGRESS, since=now - LOOKBACK - svc.settings.catch_up, page_size=page_size)
    while True:
        page = svc.jobs.query(query)
        for job in page.jobs:
            if job.backup_method is not BackupMethod.RESTORE_POINT or job.phase is JobPhase.QUEUED:
                continue
            result.examined += 1
            try:
                _track(svc, job, now, result)
            except TransientError as exc:
                # The next tick reads it again; the window still bounds how long that can go on.
                log.warning("job %s task %s: restore point not readable now: %s", job.job_id, job.task_id, exc)
                result.unreachable.append(job.job_id)
        if not page.continuation:
            return result
        query = replace(query, continuation=page.continuation)


def _track(svc: TrackNeeds, job: Job, now: datetime, result: TrackResult) -> None:
    ids = f"job {job.job_id} task {job.expected_task_id}"
    try:
        state = svc.restore_points.get(vm_resource_id(svc, job.vm_name), restore_point_name(job.expected_task_id))
    except NotFoundError as exc:       # the VM left the inventory meanwhile
        fix = remediation.for_service_error(remediation.VM_NOT_FOUND)
        _fail(svc, job, JobError.from_remediation(fix, detail=str(exc)), now, ids)
        result.finished.append(job.job_id)
        return
    except RestorePointRefused as exc:
        _fail(svc, job, refusal_error(ArmFailure(exc.arm_code, exc.arm_message, exc.status)), now, ids)
        result.finished.append(job.job_id)
        return
    unfinished = state is None or state.provisioning_state.lower() == "creating"
    if unfinished and now >= restore_point_deadline(job):
        disposal = _dispose_of_unfinished(svc, state, ids)
        updated = svc.jobs.update(job.job_id, lambda current: mark_restore_point_timed_out(current, state, now,
                                                                                          disposal))
        log.warning("%s: restore point never finished; job %s", ids, updated.status.value)
        result.finished.append(job.job_id)
        return
    if state is None:
        return      # accepted by ARM but not readable yet
    failure, power_state = _why_it_failed(svc, job, state, ids)
    preview = apply_restore_point(job, state, now, failure, power_state)
    if preview is not None and preview.status is JobStatus.FAILED and preview.errors[0].retryable \
            and job.attempt < MAX_ATTEMPTS:
        _retry(svc, job, preview.errors[0], state.name, now, ids)
        result.retrying.append(job.job_id)
        return
    updated = svc.jobs.update(job.job_id, lambda current: apply_restore_point(current, state, now, failure,
                                                                              power_state))
    if updated.is_terminal:
        log.info("%s: restore point %s %s; job %s", ids, state.name, state.provisioning_state, updated.status.value)
        result.finished.append(job.job_id)
    # Also for a job another tick finished first: recording is idempotent, and a tick that died
    # between the two writes leaves the point to this one (or to retention's backfill).
    if updated.status in SUCCESSFUL:
        record_recovery_point(svc, updated)


def _why_it_failed(svc: WhyItFailedNeeds, job: Job, state: RestorePointState,
                   ids: str) -> tuple[ArmFailure | None, str | None]:
    """For a Failed restore point: the error of the operation that created it, and (for an application-
    consistent one) the VM's power state. Nothing is read for a restore point that did not fail."""
    if state.provisioning_state.lower() != "failed":
        return None, None
    failure = None
    if job.arm_operation:
        try:
            failure = svc.restore_points.operation_failure(job.arm_operation)
        except (TransientError, PermanentError) as exc:
            log.info("%s: the create operation of restore point %s is not readable now: %s", ids, state.name, exc)
    return failure, None if state.crash_consistent else _power_state(svc, vm_resource_id(svc, job.vm_name), ids)


def _dispose_of_unfinished(svc: HasRestorePoints, state: RestorePointState | None, ids: str) -> str:
    """Delete a restore point still unfinished past its window: it is worthless and counts against the
    VM's limit. What became of it, for the job; TransientError leaves the job to the next tick."""
    if state is None:
        return ""
    try:
        deleted = svc.restore_points.delete(state.id)
    except RestorePointRefused as exc:
        log.warning("%s: Azure refused to delete unfinished restore point %s: %s", ids, state.name, exc)
        return f"Azure refused to delete it ({exc.arm_code or exc.status}): delete it by hand"
    log.info("%s: unfinished restore point %s %s", ids, state.name, "deleted" if deleted else "was gone already")
    return "it was deleted" if deleted else "it was gone already"


def _retry(svc: RetryNeeds, job: Job, error: JobError, name: str, now: datetime, ids: str) -> None:
    """Queue attempt + 1 after the retry pause (sent first: a crash before the record repeats the
    send, which duplicate detection drops), then record the failed attempt and the retry on the job."""
    at = next_attempt_at(job, now)
    if at is None:
        svc.jobs.update(job.job_id, lambda current: mark_attempt_failed(
            current, attempt=job.attempt, error=error, now=now, retry_at=None))
        return
    task = SnapshotTask(job_id=job.job_id, attempt=job.attempt + 1, vm_name=job.vm_name, slot=job.slot,
                        trigger=job.trigger, policy_name=job.policy_name, retain_until=job.retain_until,
                        not_before=at)
    svc.task_queue.send([task])
    svc.jobs.update(job.job_id, lambda current: mark_attempt_failed(
        current, attempt=job.attempt, error=error, now=now, retry_at=at)
        if current.task_id == job.task_id else None)
    log.warning("%s: restore point %s failed with %s, which may pass; attempt %s queued for %s", ids, name,
                error.error_code, task.attempt, at.isoformat())


def vm_resource_id(svc: VmResourceIdNeeds, vm_name: str) -> str:
    """The VM's ARM id: from its protected item (no Compute call each tick), else the inventory."""
    reference = vm_reference(svc, vm_name)
    if reference.lower().startswith("/subscriptions/"):
        return reference
    return str(svc.inventory.get_vm(reference).resource_id or "")


def _disks_to_back_up(svc: HasProtectedItems, vm: Vm) -> tuple[list[Disk], list[Disk]]:
    """(included, excluded) disks: the protected item's LUNs, when it names them, choose."""
    item = svc.protected_items.get(vm.name)
    luns = set(item.disk_luns) if item is not None and item.disk_luns else {d.lun for d in vm.disks}
    return [d for d in vm.disks if d.lun in luns], [d for d in vm.disks if d.lun not in luns]


def _consistency(svc: HasPolicies, policy_name: str | None) -> Consistency:
    """What the policy asks for (ApplicationConsistent without a policy)."""
    if not policy_name:
        return Consistency.APPLICATION
    try:
        return Consistency(svc.policies.get(policy_name).restore_point_consistency)
    except NotFoundError:
        return Consistency.APPLICATION


def _fail(svc: HasJobs, job: Job, error: JobError, now: datetime, ids: str) -> Job:
    failed: Job = svc.jobs.update(job.job_id, lambda current: mark_failed(current, error, now))
    log.error("%s: job failed: %s %s", ids, error.error_code, error.error_string)
    return failed
