"""OriginalLocation of a managed-disk VM through the local Compute endpoint: the stopped VM's disks are
replaced by disks restored from the point, after a disk snapshot of each; refused while the VM runs; a
failure once the disks are in gives the VM its own disks back; a worker killed during the swap resumes
without a second snapshot or a second swap."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from azure.storage.blob import BlobClient

from shared.domain.jobs import JobStatus
from shared.domain.recovery import recovery_point_name
from shared.domain.remediation import RESTORE_SWAP_FAILED, RESTORE_VM_RUNNING
from shared.domain.restore import RestoreMode, RestoreTask
from shared.services.restore import request_restore, run_restore
from tests.polling import eventually
from tests.restorepoints.test_recovery import _backed_up, _snapshot_bytes, cli  # noqa: F401 (a fixture)

pytestmark = pytest.mark.long

ROOT = Path(__file__).resolve().parents[2]
CHANGED = b"written after the backup".ljust(512, b"\0")


def _blob(svc, url: str) -> bytes:
    return BlobClient.from_blob_url(url, credential=svc.blob_service.credential).download_blob().readall()


def _stopped_after_changes(svc, compute, md_vm):
    """A backed-up VM whose OS disk changed since the backup, then stopped: (vm, its point's name, the disk
    ids it runs on)."""
    vm, job = _backed_up(svc, md_vm)
    os_disk = next(d for d in vm.disks if d.lun == -1)
    BlobClient.from_blob_url(os_disk.blob_url, credential=svc.blob_service.credential) \
        .upload_page(CHANGED, offset=0, length=len(CHANGED))
    compute.set_running(vm.name, False)
    return vm, recovery_point_name(job.job_id), {d.lun: d.id for d in vm.disks}


def _requests(compute, method: str, part: str) -> list[str]:
    return [path for m, path, _ in compute.requests if m == method and part in path]


def test_original_location_replaces_a_stopped_vms_managed_disks_and_names_a_safety_snapshot_per_disk(
        svc, compute, md_vm, cli):  # noqa: F811
    """restore-disks --restore-mode OriginalLocation --yes on the stopped VM: the job Completes, the VM runs on
    new disks holding the point's bytes, each task names the disk it replaced (still there, detached) and a
    disk snapshot of it holding what the disk held before the restore."""
    vm, rp_name, before = _stopped_after_changes(svc, compute, md_vm)
    own = list(vm.disks)        # the endpoint's VM object: a swap gives it other disks
    code, out, err = cli("restore", "restore-disks", "--vm", vm.name, "--rp-name", rp_name,
                         "--restore-mode", "OriginalLocation", "--yes", "-o", "json")
    assert code == 0, err
    (done,) = svc.restore_queue.drain(svc)
    assert done.status is JobStatus.COMPLETED, (done.errors, done.notes)

    now = {d.lun: d for d in compute.vm(vm.name).disks}
    tasks = json.loads(cli("job", "show", "--name", done.job_id, "-o", "json")[1])["properties"]["extendedInfo"][
        "tasksList"]
    assert len(tasks) == len(done.disks) == 2
    for disk in done.disks:
        assert now[disk.lun].id.lower() == disk.blob_url.lower() != before[disk.lun].lower()
        assert _blob(svc, now[disk.lun].blob_url) == _snapshot_bytes(svc, compute, vm, disk.lun)
        assert disk.replaced.lower() == before[disk.lun].lower()
        snapshot = compute.snapshot_blob("local", disk.safety_copy.rsplit("/", 1)[-1])
        assert snapshot is not None, f"no safety snapshot of LUN {disk.lun}"
        replaced = next(d for d in own if d.lun == disk.lun)
        assert _blob(svc, snapshot) == _blob(svc, replaced.blob_url)      # the disk as it was, kept
    assert _blob(svc, compute.snapshot_blob("local", done.disks[0].safety_copy.rsplit("/", 1)[-1]))[:512] == CHANGED
    assert {t["replacedDisk"].lower() for t in tasks} == {i.lower() for i in before.values()}
    assert all(t["safetyCopy"] for t in tasks)
    old = svc.restore_points.get_disk(before[-1])
    assert old is not None      # the replaced disk is kept, detached
    assert any("now runs on the restored disks" in n for n in done.notes)


def test_original_location_is_refused_while_the_managed_disk_vm_runs_and_needs_yes(svc, compute, md_vm, cli):  # noqa: F811
    """A running VM (its instance view says so): one line saying to stop it, exit 4, no job, nothing made;
    stopped but without --yes: one line asking for it, exit 2."""
    vm, job = _backed_up(svc, md_vm)
    args = ("restore", "restore-disks", "--vm", vm.name, "--rp-name", recovery_point_name(job.job_id),
            "--restore-mode", "OriginalLocation")
    code, _, err = cli(*args, "--yes")
    assert code == 4 and "running" in err and "must be stopped" in err and len(err.strip().splitlines()) == 1
    compute.set_running(vm.name, False)
    code, _, err = cli(*args)
    assert code == 2 and "--yes" in err and "Traceback" not in err
    assert json.loads(cli("job", "list", "--operation", "Restore", "-o", "json")[1]) == []
    assert _requests(compute, "PUT", "/disks/") == [] and _requests(compute, "PATCH", "/virtualMachines/") == []


def test_a_swap_that_fails_gives_the_vm_its_own_disks_back_and_removes_what_the_restore_made(svc, compute, md_vm):
    """The VM's update that puts the restored disks in fails after Azure applied it: the job Fails with
    RestoreDiskSwapFailed and advice, the VM runs on its own disks again, the restored disks and the safety
    snapshots are gone, and the notes say so."""
    vm, rp_name, before = _stopped_after_changes(svc, compute, md_vm)
    compute.fail_next_update.append(("ConflictingUserInput", "The disk could not be attached."))
    request_restore(svc, vm.name, rp_name, mode=RestoreMode.ORIGINAL, confirmed=True)
    (failed,) = svc.restore_queue.drain(svc)
    assert failed.status is JobStatus.FAILED and failed.errors[0].error_code == RESTORE_SWAP_FAILED
    assert failed.errors[0].recommendations
    assert {d.lun: d.id for d in compute.vm(vm.name).disks} == before
    assert compute.vm(vm.name).provisioning_state == "Succeeded"
    for disk in failed.disks:
        assert svc.restore_points.get_disk(disk.blob_url) is None
        assert disk.safety_copy and svc.restore_points.get_snapshot(disk.safety_copy) is None
        assert disk.status == "Removed"
    (note,) = [n for n in failed.notes if "the restore failed" in n]
    assert "put the VM's own disk back at LUN -1" in note and "could not remove" not in note
    assert len(_requests(compute, "PATCH", "/virtualMachines/")) == 2      # the swap, and the swap back


def test_a_vm_started_during_the_restore_keeps_its_disks_and_the_restore_fails_saying_so(svc, compute, md_vm):
    """The VM is started while the restored disks are being verified: nothing is snapshotted or swapped, the
    job Fails with UserErrorRestoreVmRunning, and the restored disks are removed."""
    vm, rp_name, before = _stopped_after_changes(svc, compute, md_vm)
    job = request_restore(svc, vm.name, rp_name, mode=RestoreMode.ORIGINAL, confirmed=True)
    failed = run_restore(svc, RestoreTask(job.job_id, vm.name), after_copy=lambda _: compute.set_running(vm.name, True))
    assert failed.status is JobStatus.FAILED and failed.errors[0].error_code == RESTORE_VM_RUNNING
    assert {d.lun: d.id for d in compute.vm(vm.name).disks} == before
    assert _requests(compute, "PUT", "/snapshots/") == [] and _requests(compute, "PATCH", "/virtualMachines/") == []
    assert all(svc.restore_points.get_disk(d.blob_url) is None for d in failed.disks)


def test_a_worker_killed_during_the_swap_resumes_without_a_second_snapshot_or_swap(
        svc, compute, md_vm, storage_connection_string):
    """A worker process killed (SIGKILL) while the VM's update runs: the next worker finds its snapshots and
    its swap, takes no snapshot and sends no update again, waits for the update and Completes; the VM runs
    on the restored disks."""
    vm, rp_name, before = _stopped_after_changes(svc, compute, md_vm)
    job = request_restore(svc, vm.name, rp_name, mode=RestoreMode.ORIGINAL, confirmed=True)
    compute.update_seconds = 3600
    worker = subprocess.Popen([sys.executable, "-m", "tests.restore.killable_worker", storage_connection_string,
                               svc.settings.table_prefix, job.job_id, vm.name, compute.connection_string], cwd=ROOT)
    try:
        assert eventually(lambda: compute.vm(vm.name).provisioning_state == "Updating", timeout=120)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    snapshots, updates = len(_requests(compute, "PUT", "/snapshots/")), len(_requests(compute, "PATCH", "/virtualMachines/"))
    assert (snapshots, updates) == (2, 1)
    compute.update_seconds = 0
    done = run_restore(svc, RestoreTask(job.job_id, vm.name), poll_seconds=0.05)
    assert done.status is JobStatus.COMPLETED, (done.errors, done.notes)
    assert len(_requests(compute, "PUT", "/snapshots/")) == snapshots
    assert len(_requests(compute, "PATCH", "/virtualMachines/")) == updates
    assert {d.lun: d.id.lower() for d in compute.vm(vm.name).disks} == {d.lun: d.blob_url.lower() for d in done.disks}
    assert all(d.safety_copy and d.replaced for d in done.disks)
