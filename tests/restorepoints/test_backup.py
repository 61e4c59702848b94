"""Managed-disk VMs backed up through restore points, end to end through the worker and the timer,
against the local Compute endpoint with the real azure-mgmt-compute client and the bundled extension."""
from __future__ import annotations

import os
from datetime import timedelta

import pytest

from shared.domain import remediation
from shared.domain.jobs import Consistency, JobPhase, JobStatus
from shared.services.dispatch import Outcome
from shared.services.restore_point_backup import track_restore_points
from tests.restorepoints.conftest import (deliver, deliver_concurrently, task_for, track_until_done,
                                          write_scripts)

pytestmark = pytest.mark.long

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="the extension wants root-owned scripts")


def test_a_managed_disk_vm_gets_a_restore_point_and_its_job_completes(svc, compute, md_vm):
    """Backing up a managed-disk VM makes one restore point with a disk restore point per disk; the job
    says Completed, with the consistency the restore point reports, and that the restore-point method ran."""
    vm = md_vm()
    task = task_for(svc, vm.name)
    outcome = deliver(svc, task)
    assert outcome.outcome is Outcome.DISPATCHED
    job = track_until_done(svc, task.job_id)

    (point,) = compute.restore_points(vm.name)
    assert point.name == job.task_id == f"{task.job_id}_1" and point.state == "Succeeded"
    assert job.status is JobStatus.COMPLETED and job.consistency is Consistency.APPLICATION
    assert job.backup_method == "RestorePoint" and job.status_blob is None
    assert [(d.lun, d.status, d.snapshot_uri) for d in job.disks] == [
        (d.disk.lun, "Completed", d.id) for d in point.disk_points]
    assert all(d.snapshot_url and "?snapshot=" in d.snapshot_url for d in point.disk_points)


def test_an_excluded_disk_has_no_disk_restore_point(svc, compute, md_vm):
    """A data disk left out of protection is excluded from the restore point and absent from the job."""
    vm = md_vm()
    svc.protected_items.update(vm.name, lambda item: __import__("dataclasses").replace(item, disk_luns=(-1,)))
    task = task_for(svc, vm.name)
    deliver(svc, task)
    job = track_until_done(svc, task.job_id)

    (point,) = compute.restore_points(vm.name)
    data_disk = next(d for d in vm.disks if d.lun == 0)
    assert point.excluded == [data_disk.id]
    assert [d.disk.lun for d in point.disk_points] == [-1]
    assert job.status is JobStatus.COMPLETED and [d.lun for d in job.disks] == [-1]


@requires_root
@pytest.mark.parametrize("pre", ["exit 0", "exit 3"])
def test_pre_and_post_scripts_run_and_the_job_reports_what_azure_reports(svc, compute, md_vm, etc_azure, pre):
    """With pre/post scripts on the VM the platform's extension runs them; working or failing, the restore
    point succeeds and the job carries the consistency it reports. (How Azure reports a failed pre-script
    on a restore point is not documented, so nothing more is made of it: docs/restore-points.md.)"""
    write_scripts(etc_azure, pre=f"touch {etc_azure}/pre-ran; {pre}")
    vm, job = backed_up(svc, md_vm())
    assert job.status is JobStatus.COMPLETED and job.consistency is Consistency.APPLICATION and job.errors == []
    assert compute.restore_points(vm.name)[0].state == "Succeeded"
    assert (etc_azure / "pre-ran").exists()


def test_a_stopped_vm_fails_its_job_with_advice_to_start_it(svc, compute, md_vm):
    """On a VM that is not running the restore point fails (no agent answers: Azure's
    VMAgentStatusCommunicationError); the job fails at once saying to start the VM or use crash
    consistency, not retried, with Azure's code kept."""
    vm = md_vm()
    compute.set_running(vm.name, False)
    task = task_for(svc, vm.name)
    assert deliver(svc, task).outcome is Outcome.DISPATCHED
    job = track_until_done(svc, task.job_id)

    assert job.status is JobStatus.FAILED and job.attempt == 1 and svc.task_queue.sent == []
    assert job.errors[0].error_code == remediation.RP_VM_NOT_RUNNING
    assert any("Start the VM" in r for r in job.errors[0].recommendations)
    assert "deallocated" in job.errors[0].error_string and "VMAgentStatusCommunicationError" in job.errors[0].error_string
    assert [p.state for p in compute.restore_points(vm.name)] == ["Failed"]


def test_a_stopped_vm_still_gets_a_crash_consistent_restore_point(svc, compute, md_vm):
    """Crash consistency needs nothing from the guest: a stopped VM's backup completes."""
    import dataclasses

    policy = svc.policies.get("DefaultPolicy")
    svc.policies.replace(dataclasses.replace(policy, restore_point_consistency="CrashConsistent"))
    vm = md_vm()
    compute.set_running(vm.name, False)
    _, job = backed_up(svc, vm)
    assert job.status is JobStatus.COMPLETED and job.consistency is Consistency.CRASH


def test_a_redelivered_task_finds_its_restore_point_instead_of_making_a_second(svc, compute, md_vm):
    """Three deliveries of one task at once, then a late one: one restore point, one completed job.

    A copy that arrives once the attempt is claimed settles as a duplicate; one racing the claim
    finds the same attempt and its restore point by name. Either way nothing else is created."""
    vm = md_vm()
    task = task_for(svc, vm.name)
    outcomes = deliver_concurrently(svc, task, copies=3)
    assert len(outcomes) == 3 and {o.outcome for o in outcomes} <= {Outcome.DISPATCHED, Outcome.DUPLICATE}
    assert any(o.outcome is Outcome.DISPATCHED for o in outcomes)
    late = deliver(svc, task, delivery_count=4)     # a redelivery finds the same attempt's restore point
    assert late.outcome in (Outcome.DISPATCHED, Outcome.DUPLICATE) and late.task_id == f"{task.job_id}_1"

    job = track_until_done(svc, task.job_id)
    assert [p.name for p in compute.restore_points(vm.name)] == [f"{task.job_id}_1"]
    assert job.status is JobStatus.COMPLETED and job.attempt == 1


def test_a_restore_point_that_never_finishes_is_deleted_and_its_job_failed_with_advice(svc, compute, md_vm):
    """A restore point stuck in Creating keeps the job running, then past the window is deleted (it is
    worthless and counts against the VM's limit) and the job fails with advice that says so."""
    compute.hold = True
    vm = md_vm()
    task = task_for(svc, vm.name)
    deliver(svc, task)
    track_restore_points(svc)
    job = svc.jobs.get(task.job_id)
    assert job.status is JobStatus.IN_PROGRESS and job.phase is JobPhase.RUNNING

    svc.clock.advance(timedelta(minutes=121))
    result = track_restore_points(svc)
    job = svc.jobs.get(task.job_id)
    assert result.finished == [task.job_id]
    assert job.status is JobStatus.FAILED and job.errors[0].error_code == remediation.RP_TIMED_OUT
    assert "Creating" in job.errors[0].error_string and "it was deleted" in job.errors[0].error_string
    assert any("extension.log" in r for r in job.errors[0].recommendations)
    assert all(d.status == "Failed" for d in job.disks)
    assert compute.restore_points(vm.name) == []
    assert [m for m, path, _ in compute.requests if m == "DELETE" and path.endswith(f"/{task.job_id}_1")] == ["DELETE"]


def test_racing_creates_of_one_restore_point_make_one_and_every_racer_adopts_it(svc, compute, md_vm):
    """Three creates of the same restore point at once, all past their first read before any PUT lands
    (the endpoint holds the reads until all three arrived): one PUT creates it, the others get 409 and
    carry on with the one that exists."""
    import threading

    from shared.domain.jobs import Consistency

    vm = md_vm()
    svc.restore_points.ensure_collection(vm.id, "local")
    compute.gate("GET", "/restorePoints/race_1", parties=3)
    barrier, found = threading.Barrier(3), []

    def create() -> None:
        barrier.wait()
        found.append(svc.restore_points.begin_create(vm.id, "race_1", consistency=Consistency.APPLICATION))

    threads = [threading.Thread(target=create) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    puts = sorted(status for method, path, status in compute.answered if method == "PUT" and path.endswith("/race_1"))
    assert puts == [201, 409, 409]
    assert len(found) == 3 and {p.id for p in found} == {compute.restore_points(vm.name)[0].id}
    assert [p.name for p in compute.restore_points(vm.name)] == ["race_1"]


def test_a_job_waits_while_its_disk_restore_points_still_copy(svc, compute, md_vm):
    """A restore point that succeeded while its disk restore points still replicate keeps the job Running
    (the copy's completionPercent below 100); once copied, the job completes."""
    from tests.polling import eventually

    compute.replication_seconds = 3600
    vm = md_vm()
    task = task_for(svc, vm.name)
    deliver(svc, task)
    assert eventually(lambda: compute.restore_points(vm.name)[0].state == "Succeeded", timeout=60)
    track_restore_points(svc)
    job = svc.jobs.get(task.job_id)
    state = svc.restore_points.get(vm.id, job.task_id)
    assert job.status is JobStatus.IN_PROGRESS and job.phase is JobPhase.RUNNING
    assert state.provisioning_state == "Succeeded" and all(d.copying for d in state.disks)

    compute.replication_seconds = 0
    assert track_until_done(svc, task.job_id).status is JobStatus.COMPLETED


def test_throttled_calls_are_retried_after_the_time_arm_asks_for(svc, compute, md_vm):
    """ARM answering 429 twice to the restore point create is retried (after Retry-After) and the
    backup goes on: one restore point, job Completed."""
    vm = md_vm()
    compute.throttle(2, retry_after=1, method="PUT", path_contains="/restorePoints/")
    task = task_for(svc, vm.name)
    assert deliver(svc, task).outcome is Outcome.DISPATCHED
    job = track_until_done(svc, task.job_id)

    puts = [at for method, path, at in compute.requests if method == "PUT" and "/restorePoints/" in path]
    assert len(puts) == 3
    assert all(later - earlier >= 0.9 for earlier, later in zip(puts, puts[1:]))
    assert job.status is JobStatus.COMPLETED and len(compute.restore_points(vm.name)) == 1


def test_throttling_past_the_retries_schedules_the_next_attempt(svc, compute, md_vm):
    """When ARM keeps throttling, the attempt is recorded as not dispatched and the next one is
    scheduled after the retry pause (no redelivery loop); that attempt creates the one restore point."""
    from datetime import timedelta

    from shared.domain.jobs import AttemptOutcome

    vm = md_vm()
    svc.restore_points._options["retry_total"] = 1
    compute.throttle(2, retry_after=0, method="PUT", path_contains="/restorePoints/")
    task = task_for(svc, vm.name)
    assert deliver(svc, task).outcome is Outcome.RETRYING
    job = svc.jobs.get(task.job_id)
    assert (job.phase, job.attempt) == (JobPhase.QUEUED, 2)
    assert job.attempts[-1].outcome is AttemptOutcome.NOT_DISPATCHED and "429" in job.attempts[-1].detail
    retry = svc.task_queue.sent[-1]
    assert retry.attempt == 2 and retry.not_before == svc.clock.now() + timedelta(minutes=5)
    assert deliver(svc, task, delivery_count=2).outcome is Outcome.DUPLICATE     # attempt 1's copy: nothing
    svc.clock.advance(timedelta(minutes=5))
    assert deliver(svc, retry).outcome is Outcome.DISPATCHED
    assert track_until_done(svc, task.job_id).status is JobStatus.COMPLETED
    assert len(compute.restore_points(vm.name)) == 1


def test_a_crash_consistent_policy_snapshots_without_the_extension(svc, compute, md_vm):
    """A policy set to CrashConsistent gets a crash-consistent restore point; no extension runs on the VM."""
    import dataclasses

    policy = svc.policies.get("DefaultPolicy")
    svc.policies.replace(dataclasses.replace(policy, restore_point_consistency="CrashConsistent"))
    vm, job = backed_up(svc, md_vm())
    assert job.status is JobStatus.COMPLETED and job.consistency is Consistency.CRASH
    assert compute.restore_points(vm.name)[0].requested == "CrashConsistent"
    assert not (compute.vm_root / vm.name / "config").exists()


def test_retention_and_restore_work_on_a_restore_point(svc, compute, md_vm, storage_connection_string):
    """A disk restored from a disk restore point holds the disk's data; deleting the restore point
    removes it and its snapshots."""
    from azure.storage.blob import BlobClient, BlobServiceClient

    vm, job = backed_up(svc, md_vm())
    os_point = next(d for d in job.disks if d.lun == -1).snapshot_uri
    target = vm.id.split("/providers/", 1)[0] + f"/providers/Microsoft.Compute/disks/{vm.name}-restored"
    disk_id = svc.restore_points.restore_disk(os_point, target, location="local")
    assert disk_id.endswith(f"/disks/{vm.name}-restored")
    restored = BlobClient.from_blob_url(compute.restored_disk_blob("local", f"{vm.name}-restored"),
                                        credential=BlobServiceClient.from_connection_string(
                                            storage_connection_string).credential).download_blob().readall()
    assert restored.startswith(f"{vm.name}-os".encode())

    rp_id = svc.restore_points.get(vm.id, job.task_id).id
    assert svc.restore_points.delete(rp_id) is True
    assert compute.restore_points(vm.name) == []
    assert svc.restore_points.get(vm.id, job.task_id) is None
    assert svc.restore_points.delete(rp_id) is False


def test_a_failure_that_may_pass_is_retried_with_a_new_restore_point(svc, compute, md_vm):
    """A restore point failing because the VM agent was not ready queues attempt 2 after a pause; its
    own restore point completes the job, and the first failure stays in the job's notes."""
    vm = md_vm()
    compute.fail_next.append(("VMAgentStatusCommunicationError", "The VM agent is not reporting status."))
    task = task_for(svc, vm.name)
    deliver(svc, task)
    job = track_until_done(svc, task.job_id, timeout=5)
    assert job.status is JobStatus.IN_PROGRESS and job.phase is JobPhase.QUEUED and job.attempt == 2
    assert job.errors[0].error_code == remediation.RP_EXTENSION_NOT_READY
    (retry,) = svc.task_queue.sent
    assert retry.attempt == 2 and retry.not_before == svc.clock.now() + timedelta(minutes=5)

    svc.clock.advance(timedelta(minutes=5))
    assert deliver(svc, retry).task_id == f"{task.job_id}_2"
    job = track_until_done(svc, task.job_id)
    assert job.status is JobStatus.COMPLETED and job.attempt == 2 and job.errors == []
    assert [(p.name, p.state) for p in compute.restore_points(vm.name)] == [
        (f"{task.job_id}_1", "Failed"), (f"{task.job_id}_2", "Succeeded")]
    assert any("retrying as attempt 2" in note for note in job.notes)


def backed_up(svc, vm):
    """``vm`` after one on-demand backup delivered and followed to its end: (vm, its job)."""
    task = task_for(svc, vm.name)
    deliver(svc, task)
    return vm, track_until_done(svc, task.job_id)
