"""Restore, as a job with operation ``Restore`` in the job table, verified after: a blob-snapshot point's
disks are copied into a target container (server-side, snapshot -> new page blob, byte for byte); a
restore-point point's disks become new managed disks in a target resource group (``createOption:
Restore`` from each disk restore point; the new disk must exist with its source's size).

Never overwrites an existing blob unless asked, nor ever an existing managed disk; ``lun`` restores one
disk (e.g. in place of a lost one). Every failure ends the job Failed with an error code, what happened
and what to do.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any, Callable

from shared.domain.jobs import DiskResult, Job, JobError, JobPhase, JobStatus, job_id_for, mark_failed
from shared.domain.recovery import DiskSnapshot, PointState, RecoveryPoint, SnapshotMethod
from shared.domain.restore_point import ManagedDiskState, restored_disk_id
from shared.errors import ConflictError, NotFoundError, TransientError, ValidationError, VmsnapError
from shared.ports import RestorePointRefused

log = logging.getLogger(__name__)

COPY_TIMEOUT = timedelta(hours=6)   # Azure's own threshold for a restore that needs a look
_CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
# ARM's rule for resource group names: 1-90 letters, digits, '_', '-', '.', '(' or ')', not ending in '.'.
_RESOURCE_GROUP = re.compile(r"^[-\w.()]{1,90}(?<!\.)$")
_DISK_NAME_MAX = 80

TARGET_EXISTS = "UserErrorRestoreTargetExists"
COPY_FAILED = "RestoreCopyFailed"
VERIFY_FAILED = "RestoreVerificationFailed"
RESTORE_FAILED = "RestoreFailed"

_ADVICE = {
    TARGET_EXISTS: ("A blob with the disk's name already exists in the target container",
                    ["Restore into a new container, or pass --overwrite to replace the blob."]),
    COPY_FAILED: ("Storage could not copy the snapshot into the target blob",
                  ["Check that the snapshot still exists ('vmsnap recoverypoint show') and retry the restore."]),
    VERIFY_FAILED: ("The restored blob differs from its snapshot",
                    ["Do not use the restored blob; restore again into a new container."]),
    RESTORE_FAILED: ("The restore could not finish",
                     ["Check that storage is reachable, then retry the restore."]),
}
_DISK_ADVICE = {
    TARGET_EXISTS: ["Restore into another resource group (--target-resource-group), or delete that disk first: "
                    "an existing managed disk is never replaced."],
    COPY_FAILED: ["Check that the recovery point still exists ('vmsnap recoverypoint show') and that the "
                  "service may write disks in the target resource group (Microsoft.Compute/disks/write), "
                  "then retry the restore.",
                  "A disk is restored in its disk restore point's region: Azure reports a source in another "
                  "region as not found."],
    VERIFY_FAILED: ["Do not use the restored disk; delete it and restore again."],
    RESTORE_FAILED: ["Check that the Compute API is reachable, then retry the restore."],
}


def restore_disks(svc: Any, vm_name: str, rp_name: str, target_container: str | None = None, *,
                  target_resource_group: str | None = None, lun: int | None = None, overwrite: bool = False,
                  poll_interval: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> Job:
    """Run a restore to its end and return its job (Completed or Failed).

    The point's method picks the target: a container for blob snapshots, a resource group for restore
    points. Bad input (unknown point, wrong or bad target, unknown LUN) raises before any job is created.
    """
    _check_names(target_container, target_resource_group)
    point = _restorable_point(svc, vm_name, rp_name, lun)
    managed = point.method is SnapshotMethod.RESTORE_POINT
    target = _target(point, target_container, target_resource_group, overwrite)
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
    sources: list[ManagedDiskState | None] = []
    if managed:
        targets = [restored_disk_id(d.snapshot, target, restored_disk_name(d, point)) for d in disks]
        where = f"resource group {target}"
        # Read before any job exists: a Compute endpoint that cannot be used (no credential, nothing
        # listening) is reported to the operator, not recorded as a failed restore. None: the disk is gone.
        sources = [svc.restore_points.get_disk(d.source) for d in disks]
    else:
        targets = [svc.disk_copier.target_url(target, _blob_name(d)) for d in disks]
        where = f"container {target}"
    job = _create_job(svc, point, disks, targets, where, lun)
    ids = f"job {job.job_id} (restore of point {point.name} of VM {point.vm_name})"
    try:
        if managed:
            return _run_managed(svc, job, point, disks, targets, sources, ids=ids)
        return _run(svc, job, disks, target, overwrite=overwrite, poll_interval=poll_interval,
                    sleep=sleep, ids=ids)
    except VmsnapError as exc:
        log.error("%s: failed: %s", ids, exc)
        return _fail(svc, job, RESTORE_FAILED, str(exc), _DISK_ADVICE[RESTORE_FAILED] if managed else None)


def restored_disk_name(disk: DiskSnapshot, point: RecoveryPoint) -> str:
    """A restored managed disk's name: its source disk's, then the point's (so a second restore of the
    same point into the same group finds the first instead of replacing it)."""
    suffix = f"-{point.name}"
    return _blob_name(disk)[:_DISK_NAME_MAX - len(suffix)] + suffix


def _check_names(container: str | None, resource_group: str | None) -> None:
    if container is not None and not _CONTAINER.match(container):
        raise ValidationError(f"{container!r} is not a container name: use 3-63 lower-case letters, "
                              f"digits and single hyphens", field="target_container")
    if resource_group is not None and not _RESOURCE_GROUP.match(resource_group):
        raise ValidationError(f"{resource_group!r} is not a resource group name: use 1-90 letters, digits, "
                              f"'_', '-', '.', '(' or ')', not ending in '.'", field="target_resource_group")


def _target(point: RecoveryPoint, container: str | None, resource_group: str | None, overwrite: bool) -> str:
    """The restore's target for this point's method, or ValidationError saying which one it needs."""
    if point.method is SnapshotMethod.RESTORE_POINT:
        if container is not None or resource_group is None:
            raise ValidationError(f"recovery point {point.name} is a restore point of managed disks: restore "
                                  f"it into a resource group with --target-resource-group",
                                  field="target_resource_group")
        if overwrite:
            raise ValidationError("--overwrite does not apply to managed disks: an existing disk is never "
                                  "replaced; restore into another resource group", field="overwrite")
        return resource_group
    if resource_group is not None or container is None:
        raise ValidationError(f"recovery point {point.name} holds page-blob snapshots: restore it into a "
                              f"container with --target-container", field="target_container")
    return container


def _restorable_point(svc: Any, vm_name: str, rp_name: str, lun: int | None) -> RecoveryPoint:
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
        raise NotFoundError(f"recovery point {rp_name} of VM {vm_name} was deleted ({point.deleted_by}); "
                            f"pick another with 'vmsnap recoverypoint list --vm {vm_name}'")
    return point


def _create_job(svc: Any, point: RecoveryPoint, disks: list[DiskSnapshot], targets: list[str], where: str,
                lun: int | None) -> Job:
    now = svc.clock.now()
    job = Job(job_id=job_id_for(point.vm_name, now, f"Restore|{point.name}|{where}|{lun}"),
              vm_name=point.vm_name, slot=now, start_time=now, trigger="OnDemand", operation="Restore",
              phase=JobPhase.RUNNING, policy_name=point.policy_name,
              disks=[DiskResult(lun=d.lun, blob_url=target, snapshot_uri=d.snapshot)
                     for d, target in zip(disks, targets)],
              notes=[f"restore of recovery point {point.name} ({point.created_at.isoformat()}) into {where}"])
    if not svc.jobs.create_if_absent(job):
        raise ConflictError(f"this restore was started a moment ago as job {job.job_id}; wait for it with "
                            f"'vmsnap job wait --name {job.job_id}'")
    log.info("job %s: restore of point %s of VM %s into %s started (%s disk(s))", job.job_id, point.name,
             point.vm_name, where, len(disks))
    return job


def _run_managed(svc: Any, job: Job, point: RecoveryPoint, disks: list[DiskSnapshot], targets: list[str],
                 sources: list[ManagedDiskState | None], *, ids: str) -> Job:
    """A managed disk per disk restore point, one after the other (each create waits), then verified.

    A restore failing part way keeps the disks it made already: a restore never deletes a disk."""
    compute = svc.restore_points
    taken = [target for target in targets if compute.get_disk(target) is not None]
    if taken:
        return _fail(svc, job, TARGET_EXISTS, f"{', '.join(taken)} already exist(s)", _DISK_ADVICE[TARGET_EXISTS])
    for disk, target, source in zip(disks, targets, sources):
        location = source.location if source is not None and source.location else _vm_location(svc, point.vm_name)
        try:
            compute.restore_disk(disk.snapshot, target, location=location)
        except (RestorePointRefused, TransientError) as exc:
            # Refused (a conflict) or busy (a create of that name running): someone else's disk if it is there.
            if compute.get_disk(target) is not None:
                code = TARGET_EXISTS
            elif isinstance(exc, TransientError):
                raise
            else:
                code = COPY_FAILED
            return _fail(svc, job, code, f"LUN {disk.lun}: {exc}", _DISK_ADVICE[code])
        log.info("%s: LUN %s restored as %s", ids, disk.lun, target)
    total = 0
    for disk, target, source in zip(disks, targets, sources):
        restored = compute.get_disk(target)
        problem = _disk_problem(restored, source)
        if restored is None or problem:
            return _fail(svc, job, VERIFY_FAILED, f"LUN {disk.lun} ({target}): {problem}", _DISK_ADVICE[VERIFY_FAILED])
        total += restored.size_bytes or 0
    return _complete(svc, job, [replace(d, status="Completed") for d in job.disks], total,
                     "verified: each restored disk exists with its source disk's size (and, where the "
                     "endpoint exposes them, equal content digests)", ids)


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


def _vm_location(svc: Any, vm_name: str) -> str:
    location = svc.inventory.get_vm(vm_name).location
    if not location:
        raise NotFoundError(f"the location of VM {vm_name} is unknown, and so is where to restore its disks")
    return str(location)


def _run(svc: Any, job: Job, disks: list[DiskSnapshot], container: str, *, overwrite: bool, poll_interval: float,
         sleep: Callable[[float], None], ids: str) -> Job:
    copier = svc.disk_copier
    if not overwrite:
        taken = [_blob_name(d) for d in disks if copier.exists(container, _blob_name(d))]
        if taken:
            return _fail(svc, job, TARGET_EXISTS, f"{container} already holds {', '.join(taken)}")
    for disk in disks:
        try:
            copier.start_copy(disk.snapshot, container, _blob_name(disk), overwrite=overwrite)
        except ConflictError as exc:     # created by someone else since the check above
            return _fail(svc, job, TARGET_EXISTS, str(exc))
        except NotFoundError as exc:
            return _fail(svc, job, COPY_FAILED, str(exc))
    deadline = time.monotonic() + COPY_TIMEOUT.total_seconds()
    pending = {_blob_name(d) for d in disks}
    while pending:
        for name in sorted(pending):
            progress = copier.copy_progress(container, name)
            if progress.status == "success":
                pending.discard(name)
            elif progress.status != "pending":
                return _fail(svc, job, COPY_FAILED, f"copy into {container}/{name} ended {progress.status}: "
                                                    f"{progress.description}")
        if pending:
            if time.monotonic() > deadline:
                return _fail(svc, job, COPY_FAILED, f"copies into {container} still pending after {COPY_TIMEOUT}")
            sleep(poll_interval)
    total = 0
    results = []
    for disk, result in zip(disks, job.disks):
        source = copier.digest(disk.snapshot)
        copied = copier.digest(result.blob_url)
        if source != copied:
            return _fail(svc, job, VERIFY_FAILED, f"LUN {disk.lun}: the copy has {copied[0]} bytes (sha256 "
                                                  f"{copied[1][:12]}...), the snapshot {source[0]} bytes "
                                                  f"(sha256 {source[1][:12]}...)")
        total += source[0]
        results.append(replace(result, status="Completed"))
    return _complete(svc, job, results, total, "verified: each restored blob's length and sha256 equal its "
                                               "snapshot's", ids)


def _complete(svc: Any, job: Job, results: list[DiskResult], total: int, note: str, ids: str) -> Job:
    now = svc.clock.now()
    # A job someone else finished meanwhile (stopped, swept) keeps its ending: a record never goes back.
    done = svc.jobs.update(job.job_id, lambda j: None if j.is_terminal else replace(
        j, status=JobStatus.COMPLETED, phase=JobPhase.DONE, end_time=max(now, j.start_time), disks=results,
        backup_size_bytes=total, notes=j.notes + [note]))
    log.info("%s: completed, %s disk(s), %s bytes verified", ids, len(results), total)
    return done  # type: ignore[no-any-return]


def _fail(svc: Any, job: Job, code: str, detail: str, advice: list[str] | None = None) -> Job:
    title, default_advice = _ADVICE[code]
    error = JobError(error_code=code, error_title=title, error_string=f"{title}. Reported: {detail}",
                     recommendations=list(advice or default_advice))
    now = svc.clock.now()
    failed = svc.jobs.update(job.job_id, lambda j: mark_failed(j, error, now))
    log.error("job %s: restore failed: %s %s", job.job_id, code, detail)
    return failed  # type: ignore[no-any-return]


def _blob_name(disk: DiskSnapshot) -> str:
    """The restored blob keeps the disk blob's name, so it can stand in for a lost disk."""
    return disk.source.split("?", 1)[0].rstrip("/").split("/")[-1]
