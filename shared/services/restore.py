"""Restore: copy the disks of a recovery point into a target container (server-side, snapshot -> new
page blob), as a job with operation ``Restore`` in the job table, verified byte for byte after the copy.

Never overwrites an existing blob unless asked; ``lun`` restores one disk (e.g. in place of a lost one).
Every failure ends the job Failed with an error code, what happened and what to do.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any, Callable

from shared.domain.jobs import DiskResult, Job, JobError, JobPhase, JobStatus, job_id_for, mark_failed
from shared.domain.recovery import DiskSnapshot, PointState, RecoveryPoint
from shared.errors import ConflictError, NotFoundError, ValidationError, VmsnapError

log = logging.getLogger(__name__)

COPY_TIMEOUT = timedelta(hours=6)   # Azure's own threshold for a restore that needs a look
_CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")

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


def restore_disks(svc: Any, vm_name: str, rp_name: str, target_container: str, *, lun: int | None = None,
                  overwrite: bool = False, poll_interval: float = 1.0,
                  sleep: Callable[[float], None] = time.sleep) -> Job:
    """Run a restore to its end and return its job (Completed or Failed).

    Bad input (unknown point, bad container name, unknown LUN) raises before any job is created.
    """
    if not _CONTAINER.match(target_container or ""):
        raise ValidationError(f"{target_container!r} is not a container name: use 3-63 lower-case letters, "
                              f"digits and single hyphens", field="target_container")
    point = _available_point(svc, vm_name, rp_name)
    disks = [d for d in point.disks if lun is None or d.lun == lun]
    if not disks:
        raise ValidationError(f"recovery point {rp_name} has no disk with LUN {lun}; its LUNs are "
                              f"{', '.join(str(d.lun) for d in point.disks)}", field="disk")
    job = _create_job(svc, point, disks, target_container, lun)
    ids = f"job {job.job_id} (restore of point {point.name} of VM {point.vm_name})"
    try:
        return _run(svc, job, disks, target_container, overwrite=overwrite, poll_interval=poll_interval,
                    sleep=sleep, ids=ids)
    except VmsnapError as exc:
        log.error("%s: failed: %s", ids, exc)
        return _fail(svc, job, RESTORE_FAILED, str(exc))


def _available_point(svc: Any, vm_name: str, rp_name: str) -> RecoveryPoint:
    point: RecoveryPoint | None = svc.recovery_points.get(vm_name, rp_name)
    if point is None:
        raise NotFoundError(f"recovery point {rp_name!r} of VM {vm_name!r} not found; list them with "
                            f"'vmsnap recoverypoint list --vm {vm_name}'")
    if point.state is not PointState.AVAILABLE:
        raise NotFoundError(f"recovery point {rp_name} of VM {vm_name} was deleted ({point.deleted_by}); "
                            f"pick another with 'vmsnap recoverypoint list --vm {vm_name}'")
    return point


def _create_job(svc: Any, point: RecoveryPoint, disks: list[DiskSnapshot], container: str,
                lun: int | None) -> Job:
    now = svc.clock.now()
    job = Job(job_id=job_id_for(point.vm_name, now, f"Restore|{point.name}|{container}|{lun}"),
              vm_name=point.vm_name, slot=now, start_time=now, trigger="OnDemand", operation="Restore",
              phase=JobPhase.RUNNING, policy_name=point.policy_name,
              disks=[DiskResult(lun=d.lun, blob_url=svc.disk_copier.target_url(container, _blob_name(d)),
                                snapshot_uri=d.snapshot) for d in disks],
              notes=[f"restore of recovery point {point.name} ({point.created_at.isoformat()}) into container "
                     f"{container}"])
    if not svc.jobs.create_if_absent(job):
        raise ConflictError(f"this restore was started a moment ago as job {job.job_id}; wait for it with "
                            f"'vmsnap job wait --name {job.job_id}'")
    log.info("job %s: restore of point %s of VM %s into %s started (%s disk(s))", job.job_id, point.name,
             point.vm_name, container, len(disks))
    return job


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
    now = svc.clock.now()
    # A job someone else finished meanwhile (stopped, swept) keeps its ending: a record never goes back.
    done = svc.jobs.update(job.job_id, lambda j: None if j.is_terminal else replace(
        j, status=JobStatus.COMPLETED, phase=JobPhase.DONE, end_time=max(now, j.start_time), disks=results,
        backup_size_bytes=total,
        notes=j.notes + ["verified: each restored blob's length and sha256 equal its snapshot's"]))
    log.info("%s: completed, %s disk(s), %s bytes verified", ids, len(results), total)
    return done  # type: ignore[no-any-return]


def _fail(svc: Any, job: Job, code: str, detail: str) -> Job:
    title, advice = _ADVICE[code]
    error = JobError(error_code=code, error_title=title, error_string=f"{title}. Reported: {detail}",
                     recommendations=list(advice))
    now = svc.clock.now()
    failed = svc.jobs.update(job.job_id, lambda j: mark_failed(j, error, now))
    log.error("job %s: restore failed: %s %s", job.job_id, code, detail)
    return failed  # type: ignore[no-any-return]


def _blob_name(disk: DiskSnapshot) -> str:
    """The restored blob keeps the disk blob's name, so it can stand in for a lost disk."""
    return disk.source.split("?", 1)[0].rstrip("/").split("/")[-1]
