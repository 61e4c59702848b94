"""Restore drills end to end on Azurite through the local host: demo-vm's OS disk carries a real ext4 with
the marker its guest writes before the backup; a drill restores the point into a scratch container,
validates data and content (partition table, file system, the marker naming the backup) and ends Passed;
after the keep window nothing it restored is left. A drill of a point whose marker is wrong fails."""
from __future__ import annotations

import json

import pytest

from devhost.demo import create_demo_vm
from devhost.guest import MARKER, MarkingDispatcher
from shared.cli import main
from shared.domain.jobs import JobStatus
from shared.domain.restore_testing import RestoreTestPlan, Selection
from shared.services.protection import enable_protection
from shared.services.restore_testing import clean_up_drills, start_drill
from tests.e2e.conftest import loop, loop_with, run_cycle  # noqa: F401  (the loop fixture and the one it uses)
from tests.restore.conftest import digest_blob

pytestmark = pytest.mark.long


@pytest.fixture
def demo_backed_up(loop):  # noqa: F811
    svc, host = loop
    svc.__dict__["dispatcher"] = MarkingDispatcher(svc.settings.local_vm_root, svc.blob_service.credential)
    vm = create_demo_vm(svc, "demo-vm")
    enable_protection(svc, vm.name, "DefaultPolicy")
    (job,) = run_cycle(svc, host)
    assert job.status is JobStatus.COMPLETED, job.errors
    return svc, host, job


def _scratch_blobs(svc, job) -> list[str]:
    container = svc.blob_service.get_container_client(job.restore.target)
    return [b.name for b in container.list_blobs()] if container.exists() else []


def test_a_drill_of_demo_vm_passes_naming_its_checks_and_leaves_nothing_after_the_keep_window(
        demo_backed_up, capsys):
    """restore-test run --vm demo-vm: a RestoreTest job that ends Passed with the data, partition table,
    file system and marker checks; job list --operation RestoreTest lists it; cleanup leaves 0 blobs."""
    svc, host, backup = demo_backed_up
    svc.restore_tests.create(RestoreTestPlan(name="drills", selection=Selection.ITEMS, members=("demo-vm",),
                                             keep_hours=0, probe_file=MARKER))
    assert main(["restore-test", "run", "--vm", "demo-vm", "-o", "json"]) == 0
    started = json.loads(capsys.readouterr().out)
    assert started["properties"]["operation"] == "RestoreTest" and started["properties"]["status"] == "InProgress"
    host.drain_queue("run_restore", max_wait=10)
    assert main(["job", "show", "--name", started["name"], "-o", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)["properties"]
    drill = shown["restoreTest"]
    assert shown["status"] == "Completed" and drill["result"] == "Passed", shown["errorDetails"]
    assert [c["name"] for c in drill["checks"]] == ["data", "partition table", "file system", f"probe file {MARKER}"]
    assert all(c["passed"] for c in drill["checks"]) and backup.job_id in drill["checks"][-1]["detail"]
    assert "ext4" in drill["checks"][2]["detail"] and drill["timeToRestoreSeconds"] > 0
    assert main(["job", "list", "--operation", "RestoreTest", "-o", "json"]) == 0
    assert [j["name"] for j in json.loads(capsys.readouterr().out)] == [started["name"]]

    job = svc.jobs.get(started["name"])
    assert len(_scratch_blobs(svc, job)) == 2
    # The drill verified the same way a restore does: it leaves each snapshot's digest for a later restore.
    (point,) = svc.recovery_points.list_for_vm("demo-vm")
    assert all(digest_blob(svc, d.snapshot).exists() for d in point.disks)
    cleaned = clean_up_drills(svc)
    assert cleaned.jobs == [job.job_id] and cleaned.left == []
    assert _scratch_blobs(svc, job) == [] and not svc.blob_service.get_container_client(job.restore.target).exists()
    assert svc.jobs.get(job.job_id).restore.cleaned_at is not None


def test_a_drill_whose_probe_file_is_not_the_backup_s_fails_with_its_reason_and_advice(demo_backed_up):
    """A plan probing a file the guest never wrote: the restore works, the drill is Failed with the probe
    check failed, the error code a failed drill raises its alert on, and what to do."""
    svc, host, _ = demo_backed_up
    plan = RestoreTestPlan(name="wrong", keep_hours=0, probe_file="/etc/nothing-here")
    job = start_drill(svc, "demo-vm", plan=plan)
    host.drain_queue("run_restore", max_wait=10)
    failed = svc.jobs.get(job.job_id)
    assert failed.status is JobStatus.FAILED and failed.errors[0].error_code == "RestoreTestValidationFailed"
    assert failed.errors[0].recommendations and [c.passed for c in failed.checks] == [True, True, True, False]
    clean_up_drills(svc)
    assert _scratch_blobs(svc, failed) == []

