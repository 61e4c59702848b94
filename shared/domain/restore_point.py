"""The restore-point backup method, pure: names, what a restore point's state means for its job (the
same transitions as a status report), and which remediation an ARM error calls for."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Sequence

from shared.clock import utc
from shared.domain import remediation
from shared.domain.inventory import BackupMethod, Disk
from shared.domain.jobs import (MAX_ERRORS, Consistency, DiskResult, Job, JobError, JobPhase, JobStatus,
                                mark_dispatched, mark_failed)

COLLECTION_PREFIX = "vmsnap-"
# Restore points normally finish in minutes; one still Creating after this is stuck. It is shorter than
# the stale-job sweep's deadline, so the restore point's own advice reaches the job first.
RESTORE_POINT_WINDOW = timedelta(minutes=120)
EXTENSION_STATUS_PREFIX = "VMSnapshotExtension/"


class ConsistencyMode(str, Enum):
    APPLICATION = "ApplicationConsistent"
    CRASH = "CrashConsistent"


@dataclass(frozen=True)
class InstanceStatus:
    code: str
    level: str = "Info"
    message: str | None = None


@dataclass(frozen=True)
class DiskRestorePointState:
    id: str                         # the disk restore point's ARM id
    disk_id: str | None             # the managed disk it is a snapshot of
    replication: str | None = None  # ReplicationState/<x> code, when the instance view was read
    completion_percent: int | None = None

    @property
    def replicated(self) -> bool:
        return (self.replication or "").lower() == "replicationstate/succeeded"

    @property
    def copying(self) -> bool:
        # Only a copy known to be under way holds the job back; an absent or unknown state does not.
        return "inprogress" in (self.replication or "").lower()

    @property
    def replication_failed(self) -> bool:
        return (self.replication or "").lower() == "replicationstate/failed"


@dataclass(frozen=True)
class RestorePointState:
    """What the Compute API says about one restore point (read with ``$expand=instanceView``)."""

    name: str
    id: str
    provisioning_state: str             # Creating | Succeeded | Failed | Deleting
    consistency_mode: str | None = None
    time_created: datetime | None = None
    disks: tuple[DiskRestorePointState, ...] = ()
    statuses: tuple[InstanceStatus, ...] = ()
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class ManagedDiskState:
    """What the Compute API says about a managed disk: enough to place a restore and verify it.

    ``content_sha256``/``source_sha256``: digests of the disk's bytes now and of the disk restore point
    it was restored from, when the endpoint exposes them (only the local endpoint does, as tags)."""

    id: str
    size_bytes: int | None
    location: str | None = None
    provisioning_state: str | None = None
    content_sha256: str | None = None
    source_sha256: str | None = None


def restored_disk_id(disk_restore_point_id: str, resource_group: str, name: str) -> str:
    """The id of a disk named ``name`` in ``resource_group``, in the subscription of the disk restore point."""
    subscription = disk_restore_point_id[:disk_restore_point_id.lower().find("/resourcegroups/")]
    return f"{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/disks/{name}"


def collection_name(vm_name: str) -> str:
    """The restore point collection vmsnap keeps for a VM, in the VM's resource group."""
    return f"{COLLECTION_PREFIX}{vm_name}"[:80]


def restore_point_name(task_id: str) -> str:
    """One restore point per attempt, named after its task id: a redelivered task finds it by name."""
    return task_id


def attempt_restore_point_name(job_id: str, attempt: int) -> str:
    """The restore point of a job's attempt ``attempt`` (its task id: ``<job id>_<attempt>``)."""
    return restore_point_name(f"{job_id}_{attempt}")


def mark_restore_point_requested(job: Job, *, attempt: int, task_id: str, disks: Sequence[Disk],
                                 now: datetime) -> Job | None:
    """The job once its attempt's restore point is requested: Dispatched, without status or log blob."""
    return mark_dispatched(job, attempt=attempt, task_id=task_id, status_blob="", log_blob="", now=now,
                           disks=[DiskResult(lun=d.lun, blob_url=d.resource) for d in disks],
                           backup_method=BackupMethod.RESTORE_POINT.value)


def apply_restore_point(job: Job, state: RestorePointState, now: datetime) -> Job | None:
    """The job after reading its attempt's restore point, or None when nothing changes.

    Creating (or Succeeded while a disk is still copying) is Running; Succeeded is Completed, with
    warnings when the platform reported one (a failed pre-script: file-system consistent); Failed is
    Failed with the remediation its error calls for. Another attempt's restore point changes nothing.
    """
    if job.is_terminal or state.name != job.expected_task_id:
        return None
    disks = _disk_results(job.disks, state)
    provisioning = state.provisioning_state.lower()
    if provisioning == "failed" or provisioning == "deleting":
        failed = mark_failed(job, failure_error(state), now)
        if failed is None:
            return None
        # A failed restore point is no recovery point for any disk, whatever its copies did.
        failed.disks = [replace(d, status="Failed", error=d.error or "the restore point failed") for d in disks]
        return failed
    if provisioning != "succeeded" or any(d.copying for d in state.disks):
        changed = replace(job, phase=JobPhase.RUNNING, disks=disks, last_report_at=job.last_report_at or utc(now))
        return None if changed == job else changed
    warnings = [_warning(status) for status in state.statuses if status.level.lower() == "warning"]
    if any(d.status == "Failed" for d in disks):
        warnings.append(JobError.from_remediation(remediation.for_service_error(remediation.RP_REPLICATION_FAILED)))
    changed = replace(
        job, status=JobStatus.COMPLETED_WITH_WARNINGS if warnings else JobStatus.COMPLETED, phase=JobPhase.DONE,
        consistency=_consistency(state.consistency_mode), disks=disks, errors=warnings[:MAX_ERRORS],
        end_time=max(utc(now), job.start_time), last_report_at=utc(now))
    return changed


def failure_error(state: RestorePointState) -> JobError:
    """The job error of a Failed restore point: an extension failure keeps the extension's own advice."""
    for status in state.statuses:
        fix = _extension_remediation(status.code)
        if fix is not None and status.level.lower() == "error":
            return JobError.from_remediation(fix, detail=state.error_message or status.message)
    if state.provisioning_state.lower() == "deleting":
        return JobError.from_remediation(remediation.for_service_error(remediation.RP_FAILED),
                                         detail=f"restore point {state.name} is being deleted")
    return arm_error(state.error_code or "", state.error_message or "")


def arm_error(code: str, message: str, status: int | None = None) -> JobError:
    """The job error for an ARM error answer (code and message as ARM gave them)."""
    return JobError.from_remediation(remediation.for_service_error(remediation_for_arm(code, message, status)),
                                     detail=f"{code}: {message}" if code else message or None)


def remediation_for_arm(code: str, message: str, status: int | None = None) -> str:
    """Which catalogue entry an ARM error of a restore point call belongs to."""
    low_code, text = code.lower(), message.lower()
    if status == 429 or low_code in ("toomanyrequests", "throttled") or "throttl" in low_code:
        return remediation.RP_THROTTLED
    if low_code == remediation.RP_LIMIT_REACHED.lower() or "restore points" in text and "limit" in text:
        return remediation.RP_LIMIT_REACHED
    if status in (401, 403) or low_code in ("authorizationfailed", "linkedauthorizationfailed"):
        return remediation.RP_NOT_AUTHORIZED
    if "not running" in text or "deallocated" in text or "powerstate/stopped" in text:
        return remediation.RP_VM_NOT_RUNNING
    if "extension" in low_code or "vmagent" in low_code or "agent" in low_code:
        return remediation.RP_EXTENSION_NOT_READY
    if "disk" in text and any(word in text for word in ("not supported", "unsupported", "ephemeral", "shared")):
        return remediation.RP_DISK_NOT_SUPPORTED
    return remediation.RP_FAILED


def restore_point_deadline(job: Job) -> datetime:
    return (job.dispatched_at or job.start_time) + RESTORE_POINT_WINDOW


def mark_restore_point_timed_out(job: Job, state: RestorePointState | None, now: datetime) -> Job | None:
    """Fail a restore-point job whose restore point is still unfinished past its window."""
    if job.is_terminal or utc(now) < restore_point_deadline(job):
        return None
    detail = (f"restore point {job.expected_task_id} was never created" if state is None else
              f"restore point {state.name} still {state.provisioning_state} since "
              f"{(state.time_created or job.dispatched_at or job.start_time).isoformat(timespec='seconds')}")
    failed = mark_failed(job, JobError.from_remediation(remediation.for_service_error(remediation.RP_TIMED_OUT),
                                                        detail=detail), now)
    if failed is not None:
        failed.disks = [replace(d, status="Failed", error=d.error or "no result before the timeout")
                        if d.status == "Pending" else d for d in failed.disks]
    return failed


def _disk_results(disks: Sequence[DiskResult], state: RestorePointState) -> list[DiskResult]:
    by_disk = {(d.disk_id or "").lower(): d for d in state.disks}
    results = []
    for disk in disks:
        point = by_disk.get(disk.blob_url.lower())
        if point is None:
            results.append(replace(disk))
        elif point.replicated:
            results.append(replace(disk, status="Completed", snapshot_uri=point.id, error=None))
        elif point.replication_failed:
            results.append(replace(disk, status="Failed", snapshot_uri=point.id,
                                   error="the disk restore point's copy failed"))
        elif state.provisioning_state.lower() == "succeeded" and not point.copying:
            results.append(replace(disk, status="Completed", snapshot_uri=point.id, error=None))
        else:
            results.append(replace(disk, snapshot_uri=point.id))
    return results


def _consistency(mode: str | None) -> Consistency | None:
    try:
        return Consistency(mode) if mode else None
    except ValueError:
        return None


def _extension_remediation(code: str) -> remediation.Remediation | None:
    if not code.startswith(EXTENSION_STATUS_PREFIX):
        return None
    return remediation.for_extension_name(code[len(EXTENSION_STATUS_PREFIX):])


def _warning(status: InstanceStatus) -> JobError:
    fix = _extension_remediation(status.code)
    if fix is not None:
        return JobError.from_remediation(fix, detail=status.message)
    return JobError(error_code=status.code, error_title="The restore point reported a warning",
                    error_string=status.message or status.code)
