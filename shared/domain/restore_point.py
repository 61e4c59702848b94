"""The restore-point backup method, pure: names, the create request, what a restore point's state means
for its job (the same transitions as a status report), and which remediation an ARM error calls for:
decided by ARM's error code and HTTP status, never by the wording of a message."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Mapping, Sequence

from shared.clock import utc
from shared.domain import remediation
from shared.domain.inventory import OS_DISK_LUN, BackupMethod, Disk
from shared.domain.job_transitions import MAX_ERRORS, mark_dispatched, mark_failed
from shared.domain.jobs import Consistency, DiskResult, Job, JobError, JobPhase, JobStatus

COLLECTION_PREFIX = "vmsnap-"
# Restore points normally finish in minutes; one still Creating after this is stuck. It is shorter than
# the stale-job sweep's deadline, so the restore point's own advice reaches the job first.
RESTORE_POINT_WINDOW = timedelta(minutes=120)
RUNNING = "powerstate/running"
_STOPPED = ("powerstate/stopped", "powerstate/deallocated")


@dataclass(frozen=True)
class ArmFailure:
    """An error as ARM answers it, ``{"error": {"code", "message"}}`` with its HTTP status: from a refused
    call, or from the long-running operation of a create that failed."""

    code: str
    message: str
    status: int | None = None


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
        # Only a copy known to be under way holds the job back: a percentage below 100 that no final
        # state overrides. The examples name no in-progress code, so none is looked for.
        return (not self.replicated and not self.replication_failed and self.completion_percent is not None
                and self.completion_percent < 100)

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
    operation: str | None = None        # the Location of the create, when this answer started it

    @property
    def crash_consistent(self) -> bool:
        """Reported crash consistent: made without the guest, so the VM's state did not matter."""
        return (self.consistency_mode or "").lower() == Consistency.CRASH.value.lower()


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
    owner: str | None = None            # the restore job that created it (its vmsnaprestorejob tag)


@dataclass(frozen=True)
class VmDisks:
    """A VM as a restore over its disks needs it: the managed disk at each LUN (``OS_DISK_LUN`` for the OS
    disk) as its storage profile names them, its provisioning state and its ``PowerState/<x>``."""

    disks: Mapping[int, str]
    provisioning_state: str | None = None
    power_state: str | None = None

    def disk_at(self, lun: int) -> str | None:
        return self.disks.get(lun)

    @property
    def stopped(self) -> bool:
        return is_stopped(self.power_state)

    @property
    def failed(self) -> bool:
        return (self.provisioning_state or "").lower() == "failed"


def is_stopped(power_state: str | None) -> bool:
    """A ``PowerState/<x>`` of a VM whose disks may be replaced: stopped or deallocated (unknown: no)."""
    return (power_state or "").lower().startswith(_STOPPED)


def swap_request(storage_profile: Mapping[str, Any], disks: Mapping[int, str]) -> dict[str, Any]:
    """The ``PATCH virtualMachines/{vm}`` body that puts managed disk ``disks[lun]`` at each LUN named and
    keeps the VM's other disks as they are (``az vm update --os-disk`` for the OS disk; a data disk is
    attached at its LUN, in place of the one there if any). The storage profile is the VM's as read (REST
    JSON): a PATCH replaces the dataDisks array whole, so every data disk is sent back."""
    def swapped(entry: Mapping[str, Any], lun: int) -> dict[str, Any]:
        if lun not in disks:
            return dict(entry)
        disk_id = disks[lun]
        changed = {k: v for k, v in entry.items() if k not in ("managedDisk", "diskSizeGB", "vhd", "image")}
        changed.update(name=disk_id.rstrip("/").rsplit("/", 1)[-1], managedDisk={"id": disk_id})
        if lun != OS_DISK_LUN:
            changed["createOption"] = "Attach"      # another disk at this LUN: attached, not made afresh
        return changed

    profile: dict[str, Any] = {}
    if storage_profile.get("osDisk") is not None:
        profile["osDisk"] = swapped(storage_profile["osDisk"], OS_DISK_LUN)
    data = list(storage_profile.get("dataDisks") or [])
    present = {int(d["lun"]) for d in data}
    data += [{"lun": lun} for lun in sorted(disks) if lun != OS_DISK_LUN and lun not in present]
    profile["dataDisks"] = [swapped(d, int(d["lun"])) for d in data]
    return {"properties": {"storageProfile": profile}}


def resource_group_of(resource_id: str) -> str:
    """The resource group an ARM resource id names."""
    parts = resource_id.split("/")
    lowered = [p.lower() for p in parts]
    return parts[lowered.index("resourcegroups") + 1] if "resourcegroups" in lowered[:-1] else ""


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


def restore_point_request(consistency: Consistency, exclude_disk_ids: Sequence[str] = ()) -> dict[str, Any]:
    """The body of a restore point create. ``consistencyMode`` is left out for application consistency,
    Azure's default; the specification accepts only ``CrashConsistent`` as input."""
    properties: dict[str, Any] = {}
    if consistency is Consistency.CRASH:
        properties["consistencyMode"] = consistency.value
    if exclude_disk_ids:
        properties["excludeDisks"] = [{"id": disk} for disk in exclude_disk_ids]
    return {"properties": properties}


def mark_restore_point_requested(job: Job, *, attempt: int, task_id: str, disks: Sequence[Disk],
                                 now: datetime) -> Job | None:
    """The job once its attempt's restore point is requested: Dispatched, without status or log blob."""
    requested = mark_dispatched(job, attempt=attempt, task_id=task_id, status_blob="", log_blob="", now=now,
                                disks=[DiskResult(lun=d.lun, blob_url=d.resource) for d in disks],
                                backup_method=BackupMethod.RESTORE_POINT)
    # A redelivery of the same attempt keeps the create operation its first delivery recorded.
    if requested is not None and job.task_id != task_id:
        return replace(requested, arm_operation=None)
    return requested


def mark_create_operation(job: Job, task_id: str, operation: str | None) -> Job | None:
    """Remember the long-running operation that creates ``task_id``'s restore point: when the restore point
    fails, the operation says why."""
    if job.is_terminal or job.task_id != task_id or not operation or job.arm_operation == operation:
        return None
    return replace(job, arm_operation=operation)


def apply_restore_point(job: Job, state: RestorePointState, now: datetime, failure: ArmFailure | None = None,
                        power_state: str | None = None) -> Job | None:
    """The job after reading its attempt's restore point, or None when nothing changes.

    Creating (or Succeeded while a disk is still copying) is Running; Succeeded is Completed, with
    the consistency Azure reports, and with warnings for what Azure reported at level Warning or a disk
    whose copy failed; Failed is Failed with the remediation its create operation's error (``failure``)
    and the VM's state (``power_state``) call for. Another attempt's restore point changes nothing.
    """
    if job.is_terminal or state.name != job.expected_task_id:
        return None
    disks = _disk_results(job.disks, state)
    provisioning = state.provisioning_state.lower()
    if provisioning == "failed" or provisioning == "deleting":
        failed = mark_failed(job, failure_error(state, failure, power_state), now)
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


def failure_error(state: RestorePointState, failure: ArmFailure | None = None,
                  power_state: str | None = None) -> JobError:
    """The job error of a Failed (or Deleting) restore point: its create operation's error, when known,
    or the VM's state when the VM is not running (an application-consistent restore point needs it)."""
    if state.provisioning_state.lower() == "deleting":
        return JobError.from_remediation(remediation.for_service_error(remediation.RP_FAILED),
                                         detail=f"restore point {state.name} is being deleted")
    return refusal_error(failure or ArmFailure("", f"restore point {state.name} Failed, and the error of the "
                                                   f"operation that created it could not be read"),
                         power_state=power_state, crash=state.crash_consistent)


def refusal_error(failure: ArmFailure, *, power_state: str | None = None, crash: bool = False) -> JobError:
    """The job error for a restore point Azure refused or failed: ARM's code decides the remediation,
    unless the VM is not running and the restore point needed it to (application consistency)."""
    error = arm_error(failure)
    if crash or not vm_not_running(power_state):
        return error
    return JobError.from_remediation(remediation.for_service_error(remediation.RP_VM_NOT_RUNNING),
                                     detail=f"the VM is {str(power_state).rsplit('/', 1)[-1]}; Azure said "
                                            f"{_said(failure)}")


def _said(failure: ArmFailure) -> str:
    return f"{failure.code}: {failure.message}" if failure.code else failure.message


def arm_error(failure: ArmFailure) -> JobError:
    """The job error for an ARM error answer (code and message as ARM gave them)."""
    fix = remediation.for_service_error(remediation_for_arm(failure.code, failure.status))
    return JobError.from_remediation(fix, detail=_said(failure) or None)


# The codes of the Compute API's answers that the restore point documentation names (Microsoft Learn,
# "Troubleshoot restore point failures") and ARM's own authorization codes. A code missing here is
# RP_FAILED: retried, with ARM's code and message on the job (docs/restore-points.md).
ARM_CODES: dict[str, str] = {
    "vmagentstatuscommunicationerror": remediation.RP_EXTENSION_NOT_READY,
    "vmrestorepointclienterror": remediation.RP_CLIENT_ERROR,
    "diskrestorepointclienterror": remediation.RP_CLIENT_ERROR,
    "vmrestorepointinternalerror": remediation.RP_FAILED,
    "internalerror": remediation.RP_FAILED,
    "internalexecutionerror": remediation.RP_FAILED,
    "internaloperationerror": remediation.RP_FAILED,
    "authorizationfailed": remediation.RP_NOT_AUTHORIZED,
    "linkedauthorizationfailed": remediation.RP_NOT_AUTHORIZED,
    "toomanyrequests": remediation.RP_THROTTLED,
}


def remediation_for_arm(code: str, status: int | None = None) -> str:
    """Which catalogue entry an ARM error of a restore point call belongs to: by HTTP status, then by
    code; an unknown code is RP_FAILED (a retry may cure it, and the job shows ARM's own words)."""
    if status == 429:
        return remediation.RP_THROTTLED
    if status in (401, 403):
        return remediation.RP_NOT_AUTHORIZED
    return ARM_CODES.get(code.lower(), remediation.RP_FAILED)


def vm_not_running(power_state: str | None) -> bool:
    """Whether the VM's instance view (``PowerState/<x>``) says it is not running; unknown is not."""
    return power_state is not None and power_state.lower() != RUNNING


def restore_point_deadline(job: Job) -> datetime:
    return (job.dispatched_at or job.start_time) + RESTORE_POINT_WINDOW


def mark_restore_point_timed_out(job: Job, state: RestorePointState | None, now: datetime,
                                 disposal: str = "") -> Job | None:
    """Fail a restore-point job whose restore point is still unfinished past its window; ``disposal``
    says what became of that restore point."""
    if job.is_terminal or utc(now) < restore_point_deadline(job):
        return None
    detail = (f"restore point {job.expected_task_id} was never created" if state is None else
              f"restore point {state.name} still {state.provisioning_state} since "
              f"{(state.time_created or job.dispatched_at or job.start_time).isoformat(timespec='seconds')}")
    detail += f"; {disposal}" if disposal else ""
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


def _warning(status: InstanceStatus) -> JobError:
    """A status Azure reported at level Warning, in Azure's own code and words."""
    fix = remediation.for_service_error(remediation.RP_WARNING)
    return JobError.from_remediation(fix, detail=f"{status.code}: {status.message}" if status.message
                                     else status.code)
