"""The restore-point use cases on ARM's answers as the specification gives them (the real adapter and
client on a scripted transport, jobs and queue in memory): what the worker does with a refused or
accepted create, and what the timer does with a restore point that failed."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from shared.adapters.restore_points import ComputeRestorePoints
from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain import remediation
from shared.domain.inventory import OS_DISK_LUN, BackupMethod, Disk, Vm, VmKind
from shared.domain.jobs import AttemptOutcome, Job, JobPhase, JobStatus
from shared.domain.task import SnapshotTask, Trigger
from shared.services.restore_point_backup import start_restore_point, track_restore_points
from shared.settings import Settings
from tests.fakes import InMemoryInventory, InMemoryJobStore, RecordingTaskQueue
from tests.restorepoints.arm_script import (GROUP, OS_DISK, VM_ID, ScriptedArm, StaticCredential, arm_error,
                                            restore_point_body)
from tests.scheduling.fakes import InMemoryPolicyStore, InMemoryProtectedItemStore

T0 = datetime(2026, 5, 4, 22, 30, tzinfo=timezone.utc)
COLLECTION = f"{GROUP}/restorePointCollections/vmsnap-vm1"
VM = Vm("vm1", VmKind.AZURE, (Disk(OS_DISK_LUN, "", "vm1-os", 0, BackupMethod.RESTORE_POINT, OS_DISK),),
        resource_id=VM_ID, location="westeurope")
OPERATION = "https://management.azure.com/subscriptions/00000000-0000-0000-0000-0000000000aa/providers/" \
            "Microsoft.Compute/locations/westeurope/operations/op1?monitor=true&api-version=2026-04-01"
RUNNING_VM = {"id": VM_ID, "name": "vm1", "location": "westeurope", "properties": {"instanceView": {"statuses": [
    {"code": "ProvisioningState/succeeded", "level": "Info"}, {"code": "PowerState/running", "level": "Info"}]}}}
COLLECTION_BODY = {"id": COLLECTION, "name": "vmsnap-vm1", "location": "westeurope",
                   "properties": {"source": {"id": VM_ID}, "provisioningState": "Succeeded"}}


def services(script: dict) -> tuple[Services, ScriptedArm]:
    transport = ScriptedArm({("GET", COLLECTION): [(200, COLLECTION_BODY, {})],
                             ("GET", VM_ID): [(200, RUNNING_VM, {})], **script})
    settings = Settings.from_env({"BackupStorage": "UseDevelopmentStorage=true",
                                  "ServiceBusConnection": "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=x;"
                                                          "SharedAccessKey=y;UseDevelopmentEmulator=true;"})
    svc = Services(settings, clock=FixedClock(T0), jobs=InMemoryJobStore(), task_queue=RecordingTaskQueue(),
                   policies=InMemoryPolicyStore(), protected_items=InMemoryProtectedItemStore(),
                   inventory=InMemoryInventory(VM),
                   restore_points=ComputeRestorePoints(StaticCredential(), transport=transport, retry_total=0))
    return svc, transport


def start(svc: Services):
    job = Job.new_backup(vm_name="vm1", slot=T0, now=T0, trigger=Trigger.ON_DEMAND.value)
    svc.jobs.create_if_absent(job)
    task = SnapshotTask(job_id=job.job_id, attempt=1, vm_name="vm1", slot=T0, trigger=Trigger.ON_DEMAND)
    return start_restore_point(svc, job, task, VM, T0, ids=f"job {job.job_id}"), job.job_id


def point(job_id: str, attempt: int = 1) -> str:
    return f"{COLLECTION}/restorePoints/{job_id}_{attempt}"


def test_a_create_refused_with_a_code_vmsnap_does_not_know_is_retried_with_that_reason():
    """ARM refuses the create with a code in no documentation vmsnap follows: the attempt is failed with
    ARM's code and words on the job and the next attempt queued (transient, with its reason)."""
    job_id = Job.new_backup(vm_name="vm1", slot=T0, now=T0, trigger=Trigger.ON_DEMAND.value).job_id
    svc, _ = services({("PUT", point(job_id)): [(400, arm_error("BrandNewCode", "Something Azure says."), {})]})
    started, _ = start(svc)

    job = svc.jobs.get(job_id)
    assert started.retrying and not started.failed
    assert (job.status, job.phase, job.attempt) == (JobStatus.IN_PROGRESS, JobPhase.QUEUED, 2)
    assert job.attempts[-1].outcome is AttemptOutcome.FAILED
    assert job.errors[0].error_code == remediation.RP_FAILED
    assert "BrandNewCode: Something Azure says." in job.errors[0].error_string
    (retry,) = svc.task_queue.sent
    assert retry.attempt == 2 and retry.not_before == T0 + timedelta(minutes=5)


def test_an_accepted_create_keeps_its_operation_on_the_job():
    """201 with Location: the job records where the create's outcome can be read."""
    job_id = Job.new_backup(vm_name="vm1", slot=T0, now=T0, trigger=Trigger.ON_DEMAND.value).job_id
    svc, _ = services({("PUT", point(job_id)): [
        (201, restore_point_body(f"{job_id}_1"), {"Location": OPERATION, "Retry-After": "10"})]})
    started, _ = start(svc)
    assert not started.retrying and svc.jobs.get(job_id).arm_operation == OPERATION


def test_a_failed_restore_point_is_judged_by_its_create_operations_error_code():
    """The timer finds the restore point Failed and reads its create operation: ARM's error code (here
    the client error the documentation gives for the VM's restore point limit) picks the advice."""
    job_id = Job.new_backup(vm_name="vm1", slot=T0, now=T0, trigger=Trigger.ON_DEMAND.value).job_id
    svc, transport = services({
        ("PUT", point(job_id)): [(201, restore_point_body(f"{job_id}_1"), {"Location": OPERATION})],
        ("GET", point(job_id)): [(404, arm_error("NotFound", "not yet"), {}),
                                 (200, restore_point_body(f"{job_id}_1", state="Failed"), {})],
        ("GET", OPERATION.split("https://management.azure.com", 1)[1].split("?", 1)[0]): [
            (409, arm_error("VMRestorePointClientError", "The VM has too many restore points."), {})],
    })
    start(svc)
    track_restore_points(svc)

    job = svc.jobs.get(job_id)
    assert job.attempts[-1].outcome is AttemptOutcome.FAILED and job.attempt == 2
    assert job.attempts[-1].error_code == remediation.RP_CLIENT_ERROR
    assert any("VMRestorePointClientError: The VM has too many restore points." in (e.error_string or "")
               for e in job.errors)
    assert any("/operations/op1" in r.url for r in transport.requests)


def test_an_operation_on_another_host_is_never_read():
    """An operation URL that is not the client's endpoint (a tampered record) is not sent the token."""
    svc, transport = services({})
    assert svc.restore_points.operation_failure("https://attacker.example/subscriptions/x/operations/1") is None
    assert transport.requests == []
