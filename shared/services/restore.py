# Over 400 lines on purpose: request and worker share one per-disk state machine and its resume rules.
"""Restore as a service job: ``request_restore`` validates, creates the Restore (or RestoreTest) job and
queues its task, and returns; ``run_restore`` (the restore worker) performs it from the job's per-disk
state, so a redelivery, a killed host or a continuation resumes where the last one stopped.

A blob-snapshot point's disks are copied server-side into page blobs (a target container, or the VM's
own blobs with OriginalLocation after a safety snapshot of each); a restore-point point's disks become
new managed disks (``createOption: Restore``), which OriginalLocation then swaps into the stopped VM after
a disk snapshot of each disk they replace. Everything a job creates carries its id (blob metadata, disk
and snapshot tag): a resumed job replaces only its own partial copies, and a failed one removes what it
made and gives the VM its own disks back.
"""
from __future__ import annotations

import contextvars
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Callable, Protocol, TypeVar

from shared.domain import remediation
from shared.domain.bloburl import container_and_name
from shared.domain.job_transitions import mark_failed
from shared.domain.jobs import DiskResult, Job, JobError, JobPhase, JobStatus, job_id_for
from shared.domain.recovery import DiskSnapshot, PointState, RecoveryPoint
from shared.domain.inventory import BackupMethod, Vm
from shared.domain.restore import (HEARTBEAT, OWNER_KEY, RESTORE, RESTORE_TEST, Check, DiskState, RestoreMode,
                                   RestoreSpec, RestoreTask, mark_completed, mark_progress, mark_restore_failed,
                                   resumable, with_disk)
from shared.domain.restore_point import (ManagedDiskState, VmDisks, is_stopped, resource_group_of,
                                         restored_disk_id)
from shared.domain.task import Trigger
from shared.errors import ConflictError, NotFoundError, PermanentError, TransientError, ValidationError
from shared.ports import JobQuery, RestorePointRefused
from shared.services.point_data import missing_data
from shared.services.needs import (HasClock, HasDiskCopier, HasFilesystems, HasInventory, HasJobs, HasProtectedItems,
                                   HasRecoveryPoints, HasRestorePoints, HasRestoreQueue, HasSnapshots)

log = logging.getLogger(__name__)

_Found = TypeVar("_Found")     # what a read finds


class RequestRestoreNeeds(HasClock, HasDiskCopier, HasInventory, HasJobs, HasRecoveryPoints, HasRestorePoints,
                          HasRestoreQueue, Protocol):
    """What request_restore() reads."""


class PlanRestoreNeeds(HasInventory, HasJobs, HasRecoveryPoints, HasRestorePoints, Protocol):
    """What plan_restore() reads."""


class CreateRestoreJobNeeds(HasClock, HasDiskCopier, HasJobs, Protocol):
    """What create_restore_job() reads."""


class QueueRestoreNeeds(HasClock, HasJobs, HasRestoreQueue, Protocol):
    """What queue_restore() reads."""


class RunRestoreNeeds(HasClock, HasDiskCopier, HasFilesystems, HasInventory, HasJobs, HasProtectedItems,
                      HasRecoveryPoints, HasRestorePoints, HasRestoreQueue, HasSnapshots, Protocol):
    """What run_restore() reads."""


class CheckOriginalLocationNeeds(HasInventory, HasJobs, HasRestorePoints, Protocol):
    """What _check_original_location() reads."""

# A worker keeps a restore this long, then hands it on as a continuation task (a new message), so no
# invocation outlives the platform's lock renewal or function timeout however large the disks.
SLICE = timedelta(minutes=4)
POLL_SECONDS = 1.0
_CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
# ARM's rule for resource group names: 1-90 letters, digits, '_', '-', '.', '(' or ')', not ending in '.'.
_RESOURCE_GROUP = re.compile(r"^[-\w.()]{1,90}(?<!\.)$")
_DISK_NAME_MAX = 80             # managed disks and snapshots alike

_DISK_ADVICE = {
    remediation.RESTORE_TARGET_EXISTS: ["Restore into another resource group (--target-resource-group), or delete "
                                        "that disk first: a managed disk this service did not make is never "
                                        "replaced."],
    remediation.RESTORE_COPY_FAILED: [
        "Check that the recovery point still exists ('vmsnap recoverypoint show') and that the service may write "
        "disks in the target resource group (Microsoft.Compute/disks/write), then retry the restore.",
        "A disk is restored in its disk restore point's region: Azure reports a source in another region as "
        "not found."],
}


# --- the request: validate, create the job, queue its task ------------------------------------------------

def request_restore(svc: RequestRestoreNeeds, vm_name: str, rp_name: str, target_container: str | None = None, *,
                    target_resource_group: str | None = None, lun: int | None = None,
                    mode: RestoreMode = RestoreMode.ALTERNATE, confirmed: bool = False) -> Job:
    """Create the Restore job and queue its task; returns the job (InProgress, Queued) at once.

    Bad input (unknown point, wrong or bad target, unknown LUN, OriginalLocation while the VM runs or
    without ``confirmed``) raises before any job exists."""
    point, disks, spec = plan_restore(svc, vm_name, rp_name, target_container, target_resource_group, lun, mode,
                                      confirmed)
    job = create_restore_job(svc, point, disks, spec, operation=RESTORE)
    return queue_restore(svc, job)


def plan_restore(svc: PlanRestoreNeeds, vm_name: str, rp_name: str, container: str | None, resource_group: str | None,
                 lun: int | None, mode: RestoreMode, confirmed: bool = False, *,
                 plan_name: str | None = None, probe_file: str | None = None,
                 keep_until: datetime | None = None) -> tuple[RecoveryPoint, list[DiskSnapshot], RestoreSpec]:
    """The point, its disks to restore and the job's request, or the one-line error that refuses it."""
    _check_names(container, resource_group)
    point = _restorable_point(svc, vm_name, rp_name, lun)
    managed = point.method is BackupMethod.RESTORE_POINT
    disks = [d for d in point.disks if lun is None or d.lun == lun]
    if not disks:
        raise ValidationError(f"recovery point {rp_name} has no disk with LUN {lun}; its LUNs are "
                              f"{', '.join(str(d.lun) for d in point.disks)}", field="disk")
    host_only = [(d.lun, d.direct_drive.id) for d in disks if d.direct_drive is not None and not d.is_blob_snapshot]
    if host_only and not managed:
        raise ValidationError(f"disk LUN {host_only[0][0]} of recovery point {rp_name} was snapshotted by the "
                              f"Azure host (Direct Drive snapshot {host_only[0][1]}), which this service cannot "
                              f"copy; restore that disk through Azure, or pick its other disks with --disk",
                              field="disk")
    if mode is RestoreMode.ORIGINAL:
        _check_original_location(svc, point, container, resource_group, confirmed)
        target, kind = "original", "original"
    elif managed:
        if container is not None or resource_group is None:
            raise ValidationError(f"recovery point {point.name} is a restore point of managed disks: restore "
                                  f"it into a resource group with --target-resource-group",
                                  field="target_resource_group")
        target, kind = resource_group, "resourceGroup"
        # Read before any job exists: a Compute endpoint that cannot be used (no credential, nothing
        # listening) is reported to the operator, not recorded as a failed restore.
        svc.restore_points.get_disk(disks[0].source)
    else:
        if resource_group is not None or container is None:
            raise ValidationError(f"recovery point {point.name} holds page-blob snapshots: restore it into a "
                                  f"container with --target-container", field="target_container")
        target, kind = container, "container"
    spec = RestoreSpec(rp_name=point.name, target=target, target_kind=kind, mode=mode, lun=lun, plan_name=plan_name,
                       probe_file=probe_file, keep_until=keep_until)
    return point, disks, spec


def _check_original_location(svc: CheckOriginalLocationNeeds, point: RecoveryPoint, container: str | None,
                             resource_group: str | None, confirmed: bool) -> None:
    """OriginalLocation replaces the VM's own disks (its blobs; for managed disks, the disks at its LUNs):
    only with the VM stopped, no backup of it running, and the operator's --yes."""
    if container is not None or resource_group is not None:
        raise ValidationError("OriginalLocation restores over the VM's own disks: give no --target-container or "
                              "--target-resource-group", field="restore_mode")
    vm = svc.inventory.get_vm(point.vm_name)
    if point.method is BackupMethod.RESTORE_POINT and not vm.resource_id:
        raise ValidationError(f"VM {vm.name} has no resource id in the inventory, so its disks cannot be "
                              f"replaced; restore to AlternateLocation (--target-resource-group)", field="restore_mode")
    power = vm_power_state(svc, vm)
    if not is_stopped(power):
        said = power.rsplit("/", 1)[-1] if power else "in an unknown power state"
        where = "--target-resource-group" if point.method is BackupMethod.RESTORE_POINT else "--target-container"
        raise ConflictError(f"VM {vm.name} is {said}: OriginalLocation replaces its disks, so it must be stopped "
                            f"(deallocated) first; or restore to AlternateLocation ({where})")
    running = svc.jobs.query(JobQuery(vm_name=vm.name, status=JobStatus.IN_PROGRESS, operation="Backup",
                                       page_size=1)).jobs
    if running:
        raise ConflictError(f"a backup of VM {vm.name} is in progress (job {running[0].job_id}); restore over its "
                            f"disks once it ends ('vmsnap job wait --name {running[0].job_id}')")
    if not confirmed:
        raise ValidationError(f"OriginalLocation replaces the disks of VM {vm.name} with the point's (a safety "
                              f"snapshot of each is kept); add --yes to go ahead", field="yes")


def vm_power_state(svc: HasRestorePoints, vm: Vm) -> str | None:
    """The VM's ``PowerState/<x>``: from its instance view (Compute API) when it has a resource id, else
    as the inventory records it (local VMs: the ``powerState`` tag)."""
    if vm.resource_id:
        state: str | None = svc.restore_points.vm_power_state(vm.resource_id)
        return state
    tagged = (vm.tags or {}).get("powerState")
    return f"PowerState/{tagged}" if tagged and "/" not in tagged else tagged


def create_restore_job(svc: CreateRestoreJobNeeds, point: RecoveryPoint, disks: list[DiskSnapshot],
                       spec: RestoreSpec, *, operation: str) -> Job:
    now = svc.clock.now()
    job_id = job_id_for(point.vm_name, now, f"{operation}|{point.name}|{spec.target}|{spec.lun}|{spec.mode.value}")
    targets = [_target_of(svc, point, d, spec, job_id) for d in disks]
    where = {"container": f"container {spec.target}", "resourceGroup": f"resource group {spec.target}",
             "original": "the VM's own disks"}[spec.target_kind]
    job = Job(job_id=job_id, vm_name=point.vm_name, slot=now, start_time=now, trigger=Trigger.ON_DEMAND,
              operation=operation,
              phase=JobPhase.QUEUED, policy_name=point.policy_name, restore=spec,
              retain_until=spec.keep_until,
              disks=[DiskResult(lun=d.lun, blob_url=target, snapshot_uri=d.snapshot) for d, target in zip(disks, targets)],
              notes=[f"{operation.lower()} of recovery point {point.name} ({point.created_at.isoformat()}) into {where}"
                     f" ({spec.mode.value})"])
    if not svc.jobs.create_if_absent(job):
        raise ConflictError(f"this restore was started a moment ago as job {job.job_id}; wait for it with "
                            f"'vmsnap job wait --name {job.job_id}'")
    log.info("job %s: %s of point %s of VM %s into %s requested (%s disk(s))", job.job_id, operation, point.name,
             point.vm_name, where, len(disks))
    return job


def queue_restore(svc: QueueRestoreNeeds, job: Job) -> Job:
    """Send the job's restore task; a queue that cannot take it fails the job (nothing was created)."""
    try:
        svc.restore_queue.send(RestoreTask(job.job_id, job.vm_name))
    except TransientError as exc:
        error = JobError.from_remediation(remediation.for_service_error(remediation.TASK_NOT_QUEUED), detail=str(exc))
        svc.jobs.update(job.job_id, lambda j: mark_failed(j, error, svc.clock.now()))
        raise TransientError(f"the restore could not be queued (job {job.job_id} Failed): {exc}") from exc
    return job


def _target_of(svc: HasDiskCopier, point: RecoveryPoint, disk: DiskSnapshot, spec: RestoreSpec, job_id: str) -> str:
    managed = point.method is BackupMethod.RESTORE_POINT
    if spec.target_kind == "original" and not managed:
        return disk.source
    if managed:
        # OriginalLocation: a new disk next to the one it will replace, named for this job (a later restore
        # of the same point must not find the disk the VM then runs on).
        group = spec.target if spec.target_kind == "resourceGroup" else resource_group_of(disk.source)
        job = job_id if spec.plan_name is not None or spec.target_kind == "original" else None
        label = "restore" if spec.target_kind == "original" else "drill"
        return restored_disk_id(disk.snapshot, group, restored_disk_name(disk, point, job=job, label=label))
    return str(svc.disk_copier.target_url(spec.target, _blob_name(disk)))


def restored_disk_name(disk: DiskSnapshot, point: RecoveryPoint, *, job: str | None = None,
                       label: str = "drill") -> str:
    """A restored managed disk's name: its source disk's, then the point's (so a second restore of the
    same point into the same group finds the first instead of replacing it); a drill's, or an
    OriginalLocation restore's, adds its label and job instead."""
    return _name_with(_blob_name(disk), f"-{point.name}" if job is None else f"-{label}-{job[-12:]}")


def safety_snapshot_id(replaced_disk_id: str, job_id: str) -> str:
    """The disk snapshot an OriginalLocation restore takes of a disk before it replaces it: next to the disk,
    named after it and the job (a resumed job finds its own)."""
    name = _name_with(replaced_disk_id.rstrip("/").rsplit("/", 1)[-1], f"-safety-{job_id[-12:]}")
    return f"{replaced_disk_id[:replaced_disk_id.lower().index('/providers/')]}/providers/Microsoft.Compute/" \
           f"snapshots/{name}"


def _name_with(base: str, suffix: str) -> str:
    return base[:_DISK_NAME_MAX - len(suffix)] + suffix


def _check_names(container: str | None, resource_group: str | None) -> None:
    if container is not None and not _CONTAINER.match(container):
        raise ValidationError(f"{container!r} is not a container name: use 3-63 lower-case letters, "
                              f"digits and single hyphens", field="target_container")
    if resource_group is not None and not _RESOURCE_GROUP.match(resource_group):
        raise ValidationError(f"{resource_group!r} is not a resource group name: use 1-90 letters, digits, "
                              f"'_', '-', '.', '(' or ')', not ending in '.'", field="target_resource_group")


def _restorable_point(svc: HasRecoveryPoints, vm_name: str, rp_name: str, lun: int | None) -> RecoveryPoint:
    """The point to restore from: Available, or Unavailable when one disk (``lun``) is asked for, since
    the snapshots that remain of a point whose data is partly gone can still be restored one by one."""
    point: RecoveryPoint | None = svc.recovery_points.get(vm_name, rp_name)
    if point is None:
        raise NotFoundError(f"recovery point {rp_name!r} of VM {vm_name!r} not found; list them with "
                            f"'vmsnap recoverypoint list --vm {vm_name}'")
    if point.state is PointState.UNAVAILABLE and lun is None:
        raise ConflictError(f"recovery point {rp_name} of VM {vm_name} is Unavailable: {point.unavailable_reason}; "
                            f"restore another point ('vmsnap recoverypoint list --vm {vm_name}'), or one disk whose "
                            f"snapshot remains with --disk <LUN>")
    if not point.state.holds_data:
        rule = point.deleted_by.value if point.deleted_by else "no rule recorded"
        raise NotFoundError(f"recovery point {rp_name} of VM {vm_name} was deleted ({rule}); "
                            f"pick another with 'vmsnap recoverypoint list --vm {vm_name}'")
    return point


# --- the worker ------------------------------------------------------------------------------------------

class RestoreFailure(Exception):
    """Ends a restore: its error code and what happened (rolled back and recorded by ``run_restore``)."""

    def __init__(self, code: str, detail: str, advice: list[str] | None = None):
        super().__init__(detail)
        self.code, self.detail, self.advice = code, detail, advice


def run_restore(svc: RunRestoreNeeds, task: RestoreTask, *, budget: timedelta = SLICE,
                poll_seconds: float = POLL_SECONDS, sleep: Callable[[float], None] = time.sleep,
                after_copy: Callable[[Job], None] | None = None) -> Job | None:
    """Perform (or resume) the restore job of ``task`` until it ends or ``budget`` is spent, then queue a
    continuation. Returns the job as this worker left it; None for a task whose job does not exist.
    TransientError propagates: the platform redelivers the task and the next worker resumes.
    ``after_copy`` is called once the copies are done, before verification (tests hold a worker there)."""
    job: Job | None = svc.jobs.get(task.job_id)
    ids = f"job {task.job_id} (restore task {task.message_id})"
    if job is None or job.restore is None:
        log.error("%s: no restore job of that id; task dropped", ids)
        return None
    if not resumable(job):
        log.info("%s: already %s; nothing to do", ids, job.status.value)
        return job
    worker = _Worker(svc, job, ids, poll_seconds=poll_seconds, sleep=sleep, after_copy=after_copy)
    try:
        return worker.run(task, time.monotonic() + budget.total_seconds())
    except RestoreFailure as failure:
        return worker.fail(failure)
    except (PermanentError, ConflictError, RestorePointRefused) as exc:
        return worker.fail(RestoreFailure(remediation.RESTORE_FAILED, str(exc)))


class _Worker:
    """One invocation's work on one restore job; writes the job after every step it takes."""

    def __init__(self, svc: RunRestoreNeeds, job: Job, ids: str, *, poll_seconds: float,
                 sleep: Callable[[float], None], after_copy: Callable[[Job], None] | None):
        assert job.restore is not None
        self.svc, self.job, self.ids, self.spec = svc, job, ids, job.restore
        self.poll_seconds, self.sleep, self.after_copy = poll_seconds, sleep, after_copy
        self.point: RecoveryPoint | None = svc.recovery_points.get(job.vm_name, job.restore.rp_name)
        self.managed = self.point is not None and self.point.method is BackupMethod.RESTORE_POINT
        # OriginalLocation of managed disks: restored disks first, then swapped in for the VM's own.
        self.swaps = self.managed and self.spec.mode is RestoreMode.ORIGINAL
        self._saved_at = 0.0

    # --- the course of a restore ---------------------------------------------------------------------
    def run(self, task: RestoreTask, deadline: float) -> Job:
        if self.point is None:
            raise RestoreFailure(remediation.RESTORE_SOURCE_MISSING, f"recovery point {self.spec.rp_name} of VM "
                                                                     f"{self.job.vm_name} no longer exists")
        for disk in self.job.disks:
            if disk.status in (DiskState.PENDING, DiskState.COPYING, DiskState.FAILED):
                self._start(disk)
        while any(d.status == DiskState.COPYING for d in self.job.disks):
            for disk in [d for d in self.job.disks if d.status == DiskState.COPYING]:
                self._follow(disk)
            if any(d.status == DiskState.COPYING for d in self.job.disks):
                if time.monotonic() > deadline:
                    return self._continue(task)
                self.sleep(self.poll_seconds)
        if self.after_copy is not None:
            self.after_copy(self.job)
        for disk in [d for d in self.job.disks if d.status == DiskState.COPIED]:
            self._verify(disk)
        if self.swaps:
            self._replace_vm_disks()
        size = sum(d.bytes_total or 0 for d in self.job.disks)
        checks = []
        if self.job.operation == RESTORE_TEST:
            from shared.services.restore_testing import validate

            checks = validate(self.svc, self.job, self.point.job_id)
            failed = [c for c in checks if not c.passed]
            if failed:
                return self._drill_failed(checks, failed)
        note = ("verified: each restored disk exists with its source disk's size (and, where the endpoint exposes "
                "them, equal content digests)" if self.managed else
                "verified: each restored blob's allocated pages equal its snapshot's (parallel ranged reads)")
        if self.swaps:
            note += ("; the VM now runs on the restored disks. The disks they replaced stay, detached, and a "
                     "safety snapshot of each was taken (both named per disk): delete them once the VM is good")
        done: Job = self.svc.jobs.update(self.job.job_id, lambda j: mark_completed(
            j, self.job.disks, self.svc.clock.now(), size=size, note=note, checks=checks))
        log.info("%s: completed, %s disk(s), %s bytes verified", self.ids, len(self.job.disks), size)
        self.job = done
        return done

    def _drill_failed(self, checks: list[Check], failed: list[Check]) -> Job:
        """A drill whose restore worked but whose validation did not: Failed with its checks; what it
        restored stays for the keep window (to look at), then goes like a passed drill's."""
        error = JobError.from_remediation(remediation.for_service_error(remediation.RESTORE_TEST_FAILED),
                                          detail="; ".join(f"{c.name}: {c.detail}" for c in failed))
        done: Job = self.svc.jobs.update(self.job.job_id, lambda j: mark_restore_failed(
            j, error, self.job.disks, self.svc.clock.now(), checks=checks))
        log.error("%s: drill failed: %s", self.ids, error.error_string)
        self.job = done
        return done

    def _continue(self, task: RestoreTask) -> Job:
        """Hand the rest to a new invocation: the copies go on server-side meanwhile."""
        self._save(force=True)
        self.svc.restore_queue.send(task.next_step(), not_before=self.svc.clock.now() + timedelta(seconds=5))
        log.info("%s: copies still running; continued as step %s", self.ids, task.step + 1)
        return self.job

    def _start(self, disk: DiskResult) -> None:
        if self.managed:
            self._start_disk(disk)
        else:
            self._start_blob(disk)

    def _start_blob(self, disk: DiskResult) -> None:
        container, name = _split(disk.blob_url)
        copier = self.svc.disk_copier
        found = copier.inspect(container, name)
        mine = found.exists and found.owner == self.job.job_id
        if mine and found.copy_status in ("pending", "success"):
            # This job's copy is there (a killed worker started it): follow it, never start it again.
            self._update(disk.lun, status=DiskState.COPYING.value, bytes_total=found.bytes_total)
            return
        replacing = found.exists and not mine
        if replacing and self.spec.mode is not RestoreMode.ORIGINAL:
            raise RestoreFailure(remediation.RESTORE_TARGET_EXISTS, f"{container} already holds {name}, which this "
                                                                    f"restore did not make")
        if replacing and disk.safety_copy is None:
            safety = copier.safety_snapshot(container, name, self.job.job_id)
            self._update(disk.lun, safety_copy=safety)
            log.info("%s: LUN %s: safety snapshot %s taken before replacing it", self.ids, disk.lun, safety)
        try:
            # Replace only what may be replaced: this job's own failed copy, or (OriginalLocation) the VM's disk.
            copier.start_copy(disk.snapshot_uri or "", container, name, owner=self.job.job_id,
                              replace=found.exists)
        except ConflictError as exc:      # made by someone else since the look above
            raise RestoreFailure(remediation.RESTORE_TARGET_EXISTS, str(exc)) from exc
        except NotFoundError as exc:
            self._source_missing(disk, str(exc))
        self._update(disk.lun, status=DiskState.COPYING.value, bytes_done=0)
        self._save(force=True)

    def _follow(self, disk: DiskResult) -> None:
        if self.managed:
            return      # a disk create is waited for in _start_disk
        container, name = _split(disk.blob_url)
        found = self.svc.disk_copier.inspect(container, name)
        if not found.exists or found.owner != self.job.job_id:
            raise RestoreFailure(remediation.RESTORE_COPY_FAILED, f"{container}/{name} was removed or replaced "
                                                                  f"while it was being copied")
        if found.copy_status in (None, "success"):
            self._update(disk.lun, status=DiskState.COPIED.value, bytes_total=found.bytes_total,
                         bytes_done=found.bytes_total)
            self._save(force=True)
        elif found.copy_status == "pending":
            self._update(disk.lun, bytes_done=found.bytes_done, bytes_total=found.bytes_total)
            self._save()
        else:
            raise RestoreFailure(remediation.RESTORE_COPY_FAILED, f"copy into {container}/{name} ended "
                                                                  f"{found.copy_status}: {found.description}")

    def _verify(self, disk: DiskResult) -> None:
        if self.managed:
            self._verify_disk(disk)
            return
        # Verifying a large disk takes a while: keep writing heartbeats so the sweep sees a live restore.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify") as pool:
            pending = pool.submit(contextvars.copy_context().run, self.svc.disk_copier.verify, disk.snapshot_uri or "",
                                  disk.blob_url)
            while True:
                try:
                    result = pending.result(timeout=HEARTBEAT.total_seconds())
                    break
                except FutureTimeout:
                    self._save(force=True)
        if not result.equal:
            raise RestoreFailure(remediation.RESTORE_VERIFY_FAILED, f"LUN {disk.lun}: {result.detail}")
        self._update(disk.lun, status=DiskState.VERIFIED.value, bytes_total=result.length, bytes_done=result.length)
        self._save(force=True)
        log.info("%s: LUN %s verified (%s bytes compared of %s; snapshot digest %s)", self.ids, disk.lun,
                 result.compared_bytes, result.length, result.digest or "not used")

    # --- managed disks -----------------------------------------------------------------------------
    def _start_disk(self, disk: DiskResult) -> None:
        compute = self.svc.restore_points
        source_id = self._source_of(disk)
        found: ManagedDiskState | None = compute.get_disk(disk.blob_url)
        if found is not None and found.owner != self.job.job_id:
            raise RestoreFailure(remediation.RESTORE_TARGET_EXISTS, f"{disk.blob_url} already exists",
                                 _DISK_ADVICE[remediation.RESTORE_TARGET_EXISTS])
        if found is not None and (found.provisioning_state or "").lower() == "failed":
            compute.delete_disk(disk.blob_url)      # this job's failed create: replaced
            found = None
        source = compute.get_disk(source_id) if source_id else None
        total = source.size_bytes if source is not None else None
        self._update(disk.lun, status=DiskState.COPYING.value, bytes_total=total, bytes_done=0)
        self._save(force=True)
        if found is None:
            location = source.location if source is not None and source.location else self._vm_location()
            try:
                compute.restore_disk(disk.snapshot_uri or "", disk.blob_url, location=location,
                                     tags={"vmsnaprestorejob": self.job.job_id})
            except RestorePointRefused as exc:
                existing = compute.get_disk(disk.blob_url)
                if existing is not None and existing.owner != self.job.job_id:
                    raise RestoreFailure(remediation.RESTORE_TARGET_EXISTS, f"LUN {disk.lun}: {exc}",
                                         _DISK_ADVICE[remediation.RESTORE_TARGET_EXISTS]) from exc
                if exc.arm_code == "ResourceGroupNotFound":     # the target's group, not the point's data
                    raise RestoreFailure(remediation.RESTORE_GROUP_MISSING, f"LUN {disk.lun}: {exc}") from exc
                if exc.status == 404:
                    self._source_missing(disk, str(exc))
                raise RestoreFailure(remediation.RESTORE_COPY_FAILED, f"LUN {disk.lun}: {exc}",
                                     _DISK_ADVICE[remediation.RESTORE_COPY_FAILED]) from exc
        self._update(disk.lun, status=DiskState.COPIED.value, bytes_done=total)
        self._save(force=True)
        log.info("%s: LUN %s restored as %s", self.ids, disk.lun, disk.blob_url)

    def _verify_disk(self, disk: DiskResult) -> None:
        compute = self.svc.restore_points
        source_id = self._source_of(disk)
        source = compute.get_disk(source_id) if source_id else None
        restored = compute.get_disk(disk.blob_url)
        problem = _disk_problem(restored, source)
        if restored is None or problem:
            raise RestoreFailure(remediation.RESTORE_VERIFY_FAILED, f"LUN {disk.lun} ({disk.blob_url}): {problem}")
        size = restored.size_bytes or 0
        self._update(disk.lun, status=DiskState.VERIFIED.value, bytes_total=size, bytes_done=size)
        self._save(force=True)

    # --- OriginalLocation of managed disks: swap the restored disks in ---------------------------------
    def _replace_vm_disks(self) -> None:
        """Each verified restored disk takes its LUN in the stopped VM, after a safety snapshot of the disk it
        replaces, in one update of the VM. A resumed worker reads the VM first: a disk already in place is not
        swapped again, a safety snapshot already taken is not taken again."""
        vm_id = self._vm_id()
        vm = self._vm_disks(vm_id)
        waiting = [d for d in self.job.disks if not _same(vm.disk_at(d.lun), d.blob_url)]
        if not waiting:
            self._await_update(vm_id, vm)       # this job's swap was sent before: see it end
            return
        for disk in waiting:
            current = vm.disk_at(disk.lun)
            if current is None or (disk.replaced and not _same(disk.replaced, current)):
                raise RestoreFailure(remediation.RESTORE_SWAP_FAILED, f"the VM's disk at LUN {disk.lun} changed "
                                                                      f"during the restore ({disk.replaced} was "
                                                                      f"there, now {current})")
            self._update(disk.lun, replaced=current)
        self._save(force=True)
        if not vm.stopped:
            raise RestoreFailure(remediation.RESTORE_VM_RUNNING, f"VM {self.job.vm_name} is "
                                                                 f"{(vm.power_state or 'in an unknown state').rsplit('/', 1)[-1]}"
                                                                 f"; its disks were not replaced")
        for disk in waiting:
            self._take_safety_snapshot(next(d for d in self.job.disks if d.lun == disk.lun))
        try:
            self.svc.restore_points.swap_disks(vm_id, {d.lun: d.blob_url for d in waiting})
        except RestorePointRefused as exc:
            raise RestoreFailure(remediation.RESTORE_SWAP_FAILED, str(exc)) from exc
        log.info("%s: VM %s runs on the restored disks (LUN %s)", self.ids, self.job.vm_name,
                 ", ".join(str(d.lun) for d in waiting))

    def _take_safety_snapshot(self, disk: DiskResult) -> None:
        compute = self.svc.restore_points
        assert disk.replaced is not None
        snapshot_id = safety_snapshot_id(disk.replaced, self.job.job_id)
        found = self._settled(lambda: compute.get_snapshot(snapshot_id))
        if found is not None and found.owner != self.job.job_id:
            raise RestoreFailure(remediation.RESTORE_TARGET_EXISTS, f"a snapshot {snapshot_id} exists that this "
                                                                    f"restore did not take")
        if found is not None and (found.provisioning_state or "").lower() != "succeeded":
            compute.delete_snapshot(snapshot_id)        # this job's failed snapshot: taken again
            found = None
        if found is None:
            source = compute.get_disk(disk.replaced)
            if source is None:
                raise RestoreFailure(remediation.RESTORE_SWAP_FAILED, f"the VM's disk {disk.replaced} is gone")
            try:
                compute.snapshot_disk(disk.replaced, snapshot_id, location=source.location or self._vm_location(),
                                      tags={OWNER_KEY: self.job.job_id})
            except RestorePointRefused as exc:
                raise RestoreFailure(remediation.RESTORE_SWAP_FAILED, f"LUN {disk.lun}: no safety snapshot: "
                                                                      f"{exc}") from exc
            log.info("%s: LUN %s: safety snapshot %s taken of %s", self.ids, disk.lun, snapshot_id, disk.replaced)
        self._update(disk.lun, safety_copy=snapshot_id)
        self._save(force=True)

    def _await_update(self, vm_id: str, vm: VmDisks) -> None:
        """A VM update this job started (a worker was killed while it ran): wait for its end, which decides."""
        settled = self._settled(lambda: self._vm_disks(vm_id), vm)
        if settled is None or settled.failed:
            raise RestoreFailure(remediation.RESTORE_SWAP_FAILED, f"the update of VM {self.job.vm_name} that puts "
                                                                  f"the restored disks in failed")

    def _settled(self, read: Callable[[], _Found | None], first: _Found | None = None) -> _Found | None:
        """What ``read`` gives once it is no longer updating (a snapshot being taken, a VM being updated),
        writing heartbeats meanwhile."""
        found = first if first is not None else read()
        while found is not None and (getattr(found, "provisioning_state", None) or "").lower() in ("updating",
                                                                                                     "creating"):
            self._save()
            self.sleep(self.poll_seconds)
            found = read()
        return found

    def _vm_id(self) -> str:
        vm_id = self.svc.inventory.get_vm(self.job.vm_name).resource_id
        if not vm_id:
            raise RestoreFailure(remediation.RESTORE_FAILED, f"VM {self.job.vm_name} has no resource id")
        return str(vm_id)

    def _vm_disks(self, vm_id: str) -> VmDisks:
        vm: VmDisks | None = self.svc.restore_points.vm_disks(vm_id)
        if vm is None:
            raise RestoreFailure(remediation.RESTORE_FAILED, f"VM {self.job.vm_name} no longer exists")
        return vm

    def _source_of(self, disk: DiskResult) -> str | None:
        assert self.point is not None
        return next((d.source for d in self.point.disks if d.lun == disk.lun), None)

    def _vm_location(self) -> str:
        location = self.svc.inventory.get_vm(self.job.vm_name).location
        if not location:
            raise RestoreFailure(remediation.RESTORE_FAILED, f"the location of VM {self.job.vm_name} is unknown, "
                                                             f"and so is where to restore its disks")
        return str(location)

    # --- failure and rollback ----------------------------------------------------------------------
    def _source_missing(self, disk: DiskResult, detail: str) -> None:
        """The point's data is gone: the point becomes Unavailable with the reason, the restore fails."""
        assert self.point is not None
        reason = missing_data(self.svc, self.point)
        if reason is None:      # the snapshot is there: the copy failed for another reason
            raise RestoreFailure(remediation.RESTORE_COPY_FAILED, f"LUN {disk.lun}: {detail}")
        now = self.svc.clock.now()
        current = self.svc.recovery_points.get(self.point.vm_name, self.point.name)
        if current is not None and current.state is PointState.AVAILABLE:
            saved, lost = self.svc.recovery_points.save_many([current.unavailable(reason, now)])
            if saved:
                log.warning("%s: recovery point %s is Unavailable: %s", self.ids, current.name, reason)
        raise RestoreFailure(remediation.RESTORE_SOURCE_MISSING, f"LUN {disk.lun}: {reason}")

    def fail(self, failure: RestoreFailure) -> Job:
        """Remove what this job created (put the VM's disks back from their safety copies), then fail it."""
        removed, problems = self._roll_back()
        said = "; ".join(part for part in (
            f"removed what it created: {', '.join(removed)}" if removed else "it had created nothing",
            f"could not remove: {', '.join(problems)}" if problems else "") if part)
        fix = remediation.for_service_error(failure.code)
        error = JobError.from_remediation(fix, detail=failure.detail)
        if failure.advice:
            error.recommendations = list(failure.advice)
        log.error("%s: restore failed: %s %s; %s", self.ids, failure.code, failure.detail, said)
        failed: Job = self.svc.jobs.update(self.job.job_id, lambda j: mark_restore_failed(
            j, error, self.job.disks, self.svc.clock.now(), note=f"the restore failed; {said}"))
        self.job = failed
        return failed

    def _roll_back(self) -> tuple[list[str], list[str]]:
        removed: list[str] = []
        problems: list[str] = []
        if self.swaps:
            try:
                removed += self._swap_back()
            except (TransientError, PermanentError, RestorePointRefused, RestoreFailure) as exc:
                # The VM may still run on restored disks: they, and the safety snapshots, stay.
                problems.append(f"the VM's own disks could not be put back ({exc}): the restored disks and the "
                                f"safety snapshots stay")
                return removed, problems
        for disk in self.job.disks:
            if disk.status == DiskState.PENDING:
                continue
            try:
                what = self._undo(disk)
            except (TransientError, PermanentError, RestorePointRefused) as exc:
                problems.append(f"LUN {disk.lun} ({exc})")
                continue
            if what:
                removed.append(what)
                self._update(disk.lun, status=DiskState.REMOVED.value)
        if self.spec.target_kind == "container" and removed:
            self.svc.disk_copier.delete_container_if_empty(self.spec.target)
        return removed, problems

    def _swap_back(self) -> list[str]:
        """Give the VM back the disks this job swapped out (the restore failed once they were in)."""
        compute = self.svc.restore_points
        vm_id = self._vm_id()
        vm = compute.vm_disks(vm_id)
        back = {d.lun: str(d.replaced) for d in self.job.disks
                if d.replaced and vm is not None and _same(vm.disk_at(d.lun), d.blob_url)}
        if not back:
            return []
        self._settled(lambda: compute.vm_disks(vm_id), vm)     # an update under way ends first
        compute.swap_disks(vm_id, back)
        log.warning("%s: VM %s has its own disks back (LUN %s)", self.ids, self.job.vm_name,
                    ", ".join(str(lun) for lun in sorted(back)))
        return [f"put the VM's own disk back at LUN {lun} ({disk.rsplit('/', 1)[-1]})"
                for lun, disk in sorted(back.items())]

    def _undo(self, disk: DiskResult) -> str | None:
        if self.managed:
            return self._undo_disk(disk)
        container, name = _split(disk.blob_url)
        if self.spec.mode is RestoreMode.ORIGINAL:
            if disk.safety_copy and self.svc.disk_copier.inspect(container, name).owner == self.job.job_id:
                self.svc.disk_copier.restore_from(disk.safety_copy)
                return f"{container}/{name} (put back from its safety snapshot)"
            return None
        if self.svc.disk_copier.delete_owned(container, name, self.job.job_id):
            return f"{container}/{name}"
        return None

    def _undo_disk(self, disk: DiskResult) -> str | None:
        """Delete this job's restored disk and, once the VM has its own disk back, its safety snapshot."""
        compute = self.svc.restore_points
        gone = []
        for resource_id, read, delete in ((disk.blob_url, compute.get_disk, compute.delete_disk),
                                          (disk.safety_copy, compute.get_snapshot, compute.delete_snapshot)):
            if not resource_id:
                continue
            found = read(resource_id)
            if found is not None and found.owner == self.job.job_id and delete(resource_id):
                gone.append(str(resource_id).rsplit("/", 1)[-1])
        return ", ".join(gone) or None

    # --- the job record ------------------------------------------------------------------------------
    def _update(self, lun: int, **changes: object) -> None:
        self.job = replace(self.job, disks=with_disk(self.job.disks, lun, **changes))

    def _save(self, *, force: bool = False) -> None:
        """Write the disks' state; a pending copy's progress at most every few seconds, always a heartbeat."""
        now = time.monotonic()
        if not force and now - self._saved_at < min(5.0, HEARTBEAT.total_seconds()):
            return
        self._saved_at = now
        disks = self.job.disks
        saved = self.svc.jobs.update(self.job.job_id, lambda j: mark_progress(j, disks, self.svc.clock.now()))
        if not resumable(saved):
            # Stopped or failed elsewhere meanwhile: what this worker does next must not pretend otherwise.
            raise RestoreFailure(remediation.RESTORE_FAILED, f"the job became {saved.status.value} meanwhile")
        self.job = replace(saved, disks=disks)


def _disk_problem(restored: ManagedDiskState | None, source: ManagedDiskState | None) -> str | None:
    """Why a restored disk is not a faithful restore, or None."""
    if restored is None:
        return "the restored disk does not exist"
    if source is not None and source.size_bytes is not None and restored.size_bytes != source.size_bytes:
        return f"the restored disk has {restored.size_bytes} bytes, its source {source.size_bytes}"
    if restored.content_sha256 and restored.source_sha256 and restored.content_sha256 != restored.source_sha256:
        return (f"its content (sha256 {restored.content_sha256[:12]}...) differs from the disk restore point's "
                f"(sha256 {restored.source_sha256[:12]}...)")
    return None


def _split(url: str) -> tuple[str, str]:
    return container_and_name(url)


def _same(resource_id: str | None, other: str | None) -> bool:
    """ARM ids compare without regard to case."""
    return bool(resource_id and other) and str(resource_id).lower() == str(other).lower()


def _blob_name(disk: DiskSnapshot) -> str:
    """The restored blob keeps the disk blob's name, so it can stand in for a lost disk."""
    return disk.source.split("?", 1)[0].rstrip("/").split("/")[-1]

