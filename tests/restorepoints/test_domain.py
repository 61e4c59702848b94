"""What a restore point's state and ARM's errors mean for a job: pure rules, no I/O."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shared.domain import remediation
from shared.domain.inventory import Disk, DiskKind
from shared.domain.jobs import Job, JobPhase, JobStatus
from shared.domain.restore_point import (DiskRestorePointState, InstanceStatus, RestorePointState, apply_restore_point,
                                         arm_error, mark_restore_point_requested, mark_restore_point_timed_out)

T0 = datetime(2026, 5, 4, 22, 30, tzinfo=timezone.utc)
OS = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/os"


def requested_job() -> Job:
    job = Job.new_backup(vm_name="vm1", slot=T0, now=T0)
    disk = Disk(-1, "", "os", 0, DiskKind.MANAGED, OS)
    return mark_restore_point_requested(job, attempt=1, task_id=f"{job.job_id}_1", disks=[disk], now=T0)


def state(job: Job, provisioning: str, *, replication: str | None = "ReplicationState/succeeded",
          statuses: tuple[InstanceStatus, ...] = (), error: tuple[str, str] | None = None) -> RestorePointState:
    return RestorePointState(name=job.expected_task_id, id="rp", provisioning_state=provisioning,
                             consistency_mode="ApplicationConsistent",
                             disks=(DiskRestorePointState("drp-os", OS, replication, 100),), statuses=statuses,
                             error_code=error[0] if error else None, error_message=error[1] if error else None)


@pytest.mark.parametrize("code, message, status, expected", [
    ("UserErrorRpCollectionLimitReached", "limit of 500 restore points", 409, remediation.RP_LIMIT_REACHED),
    ("VMAgentStatusCommunicationError", "VM agent is not reporting", 409, remediation.RP_EXTENSION_NOT_READY),
    ("VMExtensionProvisioningError", "extension VMSnapshotLinux failed", 409, remediation.RP_EXTENSION_NOT_READY),
    ("OperationNotAllowed", "the VM is not running (PowerState/deallocated)", 409, remediation.RP_VM_NOT_RUNNING),
    ("BadRequest", "Disk 'tmp' is an ephemeral OS disk, which is not supported", 400,
     remediation.RP_DISK_NOT_SUPPORTED),
    ("TooManyRequests", "throttled", 429, remediation.RP_THROTTLED),
    ("AuthorizationFailed", "no permission", 403, remediation.RP_NOT_AUTHORIZED),
    ("Whatever", "something else", 400, remediation.RP_FAILED),
])
def test_arm_errors_map_to_the_remediation_catalogue(code, message, status, expected):
    """Each kind of ARM refusal lands on its own advice, with ARM's own words kept as the detail."""
    error = arm_error(code, message, status)
    assert error.error_code == expected and message in error.error_string and error.recommendations


def test_creating_is_running_and_succeeded_is_completed():
    """A Creating restore point shows the job Running; once Succeeded and copied the job Completed."""
    job = requested_job()
    assert job.phase is JobPhase.DISPATCHED and job.backup_method == "RestorePoint" and job.status_blob is None
    running = apply_restore_point(job, state(job, "Creating", replication=None), T0 + timedelta(minutes=1))
    assert running.status is JobStatus.IN_PROGRESS and running.phase is JobPhase.RUNNING
    done = apply_restore_point(running, state(job, "Succeeded"), T0 + timedelta(minutes=3))
    assert done.status is JobStatus.COMPLETED and done.disks[0].snapshot_uri == "drp-os"
    assert apply_restore_point(done, state(job, "Succeeded"), T0 + timedelta(minutes=4)) is None


def test_a_disk_still_copying_keeps_the_job_running():
    """Succeeded but with a disk restore point still replicating: the job waits for the copy."""
    job = requested_job()
    copying = apply_restore_point(job, state(job, "Succeeded", replication="ReplicationState/inProgress"), T0)
    assert copying.status is JobStatus.IN_PROGRESS and copying.phase is JobPhase.RUNNING


def test_an_extension_failure_keeps_the_extensions_own_advice():
    """A Failed restore point whose extension reported a pre-script timeout gets that code's advice."""
    job = requested_job()
    failed = apply_restore_point(job, state(job, "Failed", statuses=(
        InstanceStatus("ProvisioningState/failed/VMSnapshotExtensionFailed", "Error", "extension failed"),
        InstanceStatus("VMSnapshotExtension/FailedPrepostPreScriptTimeout", "Error", "pre-script timed out"))),
        T0)
    assert failed.status is JobStatus.FAILED and failed.errors[0].error_code == "UserErrorPreScriptTimeout"
    assert failed.disks[0].status == "Failed"


def test_another_attempts_restore_point_changes_nothing():
    """The restore point of an older attempt never moves the current attempt's job."""
    job = requested_job()
    other = RestorePointState(name="someone-else_1", id="x", provisioning_state="Failed")
    assert apply_restore_point(job, other, T0) is None


def test_the_timeout_waits_for_the_window_then_fails_with_advice():
    """Before 120 minutes nothing happens; after, the job fails with the stuck restore point's advice."""
    job = requested_job()
    stuck = state(job, "Creating", replication=None)
    assert mark_restore_point_timed_out(job, stuck, T0 + timedelta(minutes=119)) is None
    failed = mark_restore_point_timed_out(job, stuck, T0 + timedelta(minutes=121))
    assert failed.status is JobStatus.FAILED and failed.errors[0].error_code == remediation.RP_TIMED_OUT
