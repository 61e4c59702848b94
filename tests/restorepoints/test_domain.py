"""What a restore point's state and ARM's errors mean for a job: pure rules, no I/O."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shared.domain import remediation
from shared.domain.inventory import BackupMethod, Disk
from shared.domain.jobs import Job, JobPhase, JobStatus
from shared.domain.restore_point import (ArmFailure, DiskRestorePointState, InstanceStatus, RestorePointState,
                                         apply_restore_point, arm_error, mark_restore_point_requested,
                                         mark_restore_point_timed_out, refusal_error)

T0 = datetime(2026, 5, 4, 22, 30, tzinfo=timezone.utc)
OS = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/os"


def requested_job() -> Job:
    job = Job.new_backup(vm_name="vm1", slot=T0, now=T0)
    disk = Disk(-1, "", "os", 0, BackupMethod.RESTORE_POINT, OS)
    return mark_restore_point_requested(job, attempt=1, task_id=f"{job.job_id}_1", disks=[disk], now=T0)


def state(job: Job, provisioning: str, *, replication: str | None = "ReplicationState/succeeded",
          percent: int | None = 100, statuses: tuple[InstanceStatus, ...] = (),
          mode: str = "ApplicationConsistent") -> RestorePointState:
    return RestorePointState(name=job.expected_task_id, id="rp", provisioning_state=provisioning,
                             consistency_mode=mode, disks=(DiskRestorePointState("drp-os", OS, replication, percent),),
                             statuses=statuses)


@pytest.mark.parametrize("code, message, status, expected, retryable", [
    ("VMAgentStatusCommunicationError", "VM has not reported status for VM agent or extensions.", 409,
     remediation.RP_EXTENSION_NOT_READY, True),
    ("VMRestorePointClientError", "Restore Point creation failed as the maximum allowed snapshot limit of one or "
     "more disk blobs has been reached.", 409, remediation.RP_CLIENT_ERROR, True),
    ("VMRestorePointInternalError", "An internal execution error occurred.", 500, remediation.RP_FAILED, True),
    ("TooManyRequests", "throttled", 429, remediation.RP_THROTTLED, True),
    ("AuthorizationFailed", "no permission", 403, remediation.RP_NOT_AUTHORIZED, False),
    ("Whatever", "something else", 400, remediation.RP_FAILED, True),
    # The words are Azure's to change: a message alone decides nothing.
    ("OperationNotAllowed", "the VM is not running (PowerState/deallocated)", 409, remediation.RP_FAILED, True),
    ("BadRequest", "Disk 'tmp' is an ephemeral OS disk, which is not supported", 400, remediation.RP_FAILED, True),
])
def test_arm_errors_map_to_the_remediation_catalogue_by_code_and_status(code, message, status, expected, retryable):
    """Each documented ARM code lands on its own advice; a code vmsnap does not know is retried with ARM's
    code and words on the job (transient with a reason); the message text never decides."""
    error = arm_error(ArmFailure(code, message, status))
    assert error.error_code == expected and message in error.error_string and code in error.error_string
    assert error.retryable is retryable and error.recommendations


@pytest.mark.parametrize("power_state, crash, expected", [
    ("PowerState/deallocated", False, remediation.RP_VM_NOT_RUNNING),
    ("PowerState/stopped", False, remediation.RP_VM_NOT_RUNNING),
    ("PowerState/running", False, remediation.RP_EXTENSION_NOT_READY),
    (None, False, remediation.RP_EXTENSION_NOT_READY),
    ("PowerState/deallocated", True, remediation.RP_EXTENSION_NOT_READY),   # crash consistency needs no guest
])
def test_a_vm_that_is_not_running_is_named_as_the_cause(power_state, crash, expected):
    """An application-consistent restore point refused or failed on a stopped VM says to start the VM,
    whatever Azure's code; its code and words stay in the detail."""
    failure = ArmFailure("VMAgentStatusCommunicationError", "VM has not reported status.", 409)
    error = refusal_error(failure, power_state=power_state, crash=crash)
    assert error.error_code == expected and "VMAgentStatusCommunicationError" in error.error_string
    assert error.retryable is (expected != remediation.RP_VM_NOT_RUNNING)


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
    """Succeeded but a disk restore point's copy below 100 percent (no final state yet): the job waits."""
    job = requested_job()
    copying = apply_restore_point(job, state(job, "Succeeded", replication=None, percent=40), T0)
    assert copying.status is JobStatus.IN_PROGRESS and copying.phase is JobPhase.RUNNING
    done = apply_restore_point(copying, state(job, "Succeeded", percent=100), T0 + timedelta(minutes=1))
    assert done.status is JobStatus.COMPLETED and done.disks[0].status == "Completed"


def test_a_failed_restore_point_takes_its_create_operations_error():
    """A Failed restore point gets the advice of the error its create operation reported, by code."""
    job = requested_job()
    failure = ArmFailure("VMAgentStatusCommunicationError", "VM has not reported status.", 409)
    failed = apply_restore_point(job, state(job, "Failed", replication=None, percent=None), T0, failure)
    assert failed.status is JobStatus.FAILED and failed.errors[0].error_code == remediation.RP_EXTENSION_NOT_READY
    assert failed.disks[0].status == "Failed"
    unknown = apply_restore_point(job, state(job, "Failed", replication=None, percent=None), T0)
    assert unknown.errors[0].error_code == remediation.RP_FAILED and unknown.errors[0].retryable


def test_the_job_records_the_consistency_azure_reports():
    """Whatever consistency was asked for, the job says what the restore point reports."""
    job = requested_job()
    for mode, expected in (("ApplicationConsistent", "ApplicationConsistent"), ("CrashConsistent", "CrashConsistent"),
                           ("FileSystemConsistent", "FileSystemConsistent")):
        done = apply_restore_point(job, state(job, "Succeeded", mode=mode), T0)
        assert done.consistency.value == expected


def test_a_warning_azure_reports_completes_the_job_with_that_warning():
    """A status at level Warning in the instance view (the only warning Azure gives) is the job's warning,
    in Azure's code and words; Info statuses are not."""
    job = requested_job()
    statuses = (InstanceStatus("ReplicationState/succeeded", "Info"),
                InstanceStatus("SomeState/degraded", "Warning", "Something to look at."))
    done = apply_restore_point(job, state(job, "Succeeded", statuses=statuses), T0)
    assert done.status is JobStatus.COMPLETED_WITH_WARNINGS
    (warning,) = done.errors
    assert warning.error_code == remediation.RP_WARNING and "SomeState/degraded: Something to look at." in \
        warning.error_string


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
    failed = mark_restore_point_timed_out(job, stuck, T0 + timedelta(minutes=121), "it was deleted")
    assert failed.status is JobStatus.FAILED and failed.errors[0].error_code == remediation.RP_TIMED_OUT
    assert failed.errors[0].error_string.endswith("; it was deleted")


def test_a_swap_sends_every_disk_back_with_only_the_named_luns_changed():
    """The PATCH body of a swap: the OS disk's and LUN 0's ids and names replaced, LUN 1 kept as read (a
    PATCH replaces dataDisks whole), a LUN the VM lacks attached, nothing else sent."""
    from shared.domain.restore_point import swap_request

    profile = {"osDisk": {"name": "os", "createOption": "FromImage", "caching": "ReadWrite", "osType": "Linux",
                          "diskSizeGB": 30, "managedDisk": {"id": "/d/os", "storageAccountType": "Premium_LRS"}},
               "dataDisks": [{"lun": 0, "name": "data0", "createOption": "Empty", "diskSizeGB": 8,
                              "managedDisk": {"id": "/d/data0"}},
                             {"lun": 1, "name": "data1", "createOption": "Attach", "managedDisk": {"id": "/d/data1"}}],
               "imageReference": {"offer": "debian"}}
    body = swap_request(profile, {-1: "/g/new-os", 0: "/g/new-0", 3: "/g/new-3"})
    storage = body["properties"]["storageProfile"]
    assert set(body) == {"properties"} and set(storage) == {"osDisk", "dataDisks"}
    assert storage["osDisk"] == {"name": "new-os", "createOption": "FromImage", "caching": "ReadWrite",
                                 "osType": "Linux", "managedDisk": {"id": "/g/new-os"}}
    assert storage["dataDisks"] == [{"lun": 0, "name": "new-0", "createOption": "Attach", "managedDisk": {"id": "/g/new-0"}},
                                    profile["dataDisks"][1],
                                    {"lun": 3, "name": "new-3", "createOption": "Attach", "managedDisk": {"id": "/g/new-3"}}]
