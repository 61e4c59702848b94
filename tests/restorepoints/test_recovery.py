"""Recovery points of managed-disk VMs against the local Compute endpoint: a restore point is the recovery
point, retention deletes restore points (once, even from two runs at once), and a restore makes new
managed disks from disk restore points, through the CLI as a user types it."""
from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from azure.storage.blob import BlobClient

from shared.bootstrap import reset_services
from shared.cli import main
from shared.domain.inventory import BackupMethod
from shared.domain.jobs import JobStatus
from shared.domain.recovery import PointState, Rule, recovery_point_name
from shared.services.protection import disable_protection
from shared.services.retention import plan_retention, run_retention
from tests.restorepoints.conftest import deliver, task_for, track_until_done

pytestmark = pytest.mark.long


@pytest.fixture
def cli(svc, capsys):
    """Run ``vmsnap`` in-process on the test's services; returns (exit code, stdout, stderr)."""
    reset_services(svc)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield run
    reset_services(None)


def _backed_up(svc, md_vm):
    vm = md_vm()
    task = task_for(svc, vm.name)
    deliver(svc, task)
    job = track_until_done(svc, task.job_id)
    assert job.status is JobStatus.COMPLETED, job.errors
    return vm, job


def _snapshot_bytes(svc, compute, vm, lun: int) -> bytes:
    (point,) = [p for p in compute.restore_points(vm.name) if p.state == "Succeeded"]
    dpoint = next(d for d in point.disk_points if d.disk.lun == lun)
    return BlobClient.from_blob_url(dpoint.snapshot_url, credential=svc.blob_service.credential) \
        .download_blob().readall()


def _failed_restore(svc, cli, *args: str) -> dict:
    """Request the restore (accepted: InProgress), run it, and return the one error of its Failed job."""
    code, out, err = cli(*args, "-o", "json")
    assert code == 0 and json.loads(out)["properties"]["status"] == "InProgress", err
    svc.restore_queue.drain(svc)
    code, out, _ = cli("job", "show", "--name", json.loads(out)["name"], "-o", "json")
    doc = json.loads(out)["properties"]
    assert doc["status"] == "Failed"
    (error,) = doc["errorDetails"]
    return error


def _deletes_of(compute, name: str) -> list[str]:
    return [path for method, path, _ in compute.requests if method == "DELETE" and path.endswith(f"/{name}")]


def test_a_completed_restore_point_backup_is_listed_as_a_recovery_point(svc, compute, md_vm, cli):
    """recoverypoint list shows the backup of a managed-disk VM, method RestorePoint, each disk's
    source its managed disk and snapshot its disk restore point, and the VM restore point's id."""
    vm, job = _backed_up(svc, md_vm)
    code, out, _ = cli("recoverypoint", "list", "--vm", vm.name, "-o", "json")
    assert code == 0
    (doc,) = json.loads(out)
    (rp,) = compute.restore_points(vm.name)
    assert doc["name"] == recovery_point_name(job.job_id) and doc["jobId"] == job.job_id
    assert doc["method"] == "RestorePoint" and doc["restorePointId"] == rp.id
    assert sorted((d["lun"], d["source"], d["snapshot"]) for d in doc["disks"]) == sorted(
        (d.disk.lun, d.disk.id, d.id) for d in rp.disk_points)


def test_tracking_a_finished_job_again_records_one_point(svc, compute, md_vm):
    """The timer reading a finished restore point twice (two ticks at once) leaves exactly one point."""
    vm, job = _backed_up(svc, md_vm)
    from shared.services.restore_point_backup import track_restore_points

    threads = [threading.Thread(target=track_restore_points, args=(svc,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [p.job_id for p in svc.recovery_points.list_for_vm(vm.name)] == [job.job_id]


def test_a_point_lost_between_two_writes_is_backfilled_by_retention(svc, compute, md_vm):
    """A restore-point job finished by a tick that died before recording its point gets the point back
    from retention, with method RestorePoint and its VM restore point's id."""
    import time

    from shared.domain.restore_point import apply_restore_point

    compute.replication_seconds = 0         # copied as soon as it succeeds: one read sees it done
    vm = md_vm()
    task = task_for(svc, vm.name)
    deliver(svc, task)
    deadline = time.monotonic() + 60
    while compute.restore_points(vm.name)[0].state == "Creating" and time.monotonic() < deadline:
        time.sleep(0.1)
    state = svc.restore_points.get(vm.id, f"{task.job_id}_1")
    job = svc.jobs.update(task.job_id, lambda current: apply_restore_point(current, state, svc.clock.now()))
    assert job.status is JobStatus.COMPLETED and svc.recovery_points.list_for_vm(vm.name) == []

    result = run_retention(svc, vm.name)
    assert result.backfilled == [job.job_id]
    point = svc.recovery_points.get(vm.name, recovery_point_name(job.job_id))
    assert point.method is BackupMethod.RESTORE_POINT and point.restore_point_id == state.id


def test_expiring_a_point_deletes_its_restore_point_once_even_with_two_runs_at_once(svc, compute, md_vm, cli):
    """Retention that expires a restore-point point deletes its VM restore point (disk restore points
    and their snapshots with it), exactly once although two runs race; the dry run named it and its rule."""
    vm, job = _backed_up(svc, md_vm)
    (rp,) = compute.restore_points(vm.name)
    snapshots = [d.snapshot_url for d in rp.disk_points]
    disable_protection(svc, vm.name, delete_backup_data=True)
    svc.clock.advance(timedelta(days=15))

    (action,) = plan_retention(svc, vm.name).points
    assert action.snapshots == (rp.id,) and action.rule is Rule.SOFT_DELETE_PURGE
    assert compute.restore_points(vm.name) != [], "the dry run deleted something"

    barrier = threading.Barrier(2)
    results = []

    def run() -> None:
        barrier.wait()
        results.append(run_retention(svc, vm.name))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2
    assert compute.restore_points(vm.name) == []
    assert len(_deletes_of(compute, rp.name)) == 1
    assert sum(r.snapshots_deleted for r in results) == 1
    point = svc.recovery_points.get(vm.name, recovery_point_name(job.job_id))
    assert point.state is PointState.DELETED and point.deleted_by == Rule.SOFT_DELETE_PURGE.value
    for url in snapshots:
        assert not BlobClient.from_blob_url(url, credential=svc.blob_service.credential).exists()
    for disk in vm.disks:     # never anything else: the disks themselves stay
        assert BlobClient.from_blob_url(disk.blob_url, credential=svc.blob_service.credential).exists()

    again = run_retention(svc, vm.name)
    assert again.snapshots_deleted == 0 and len(_deletes_of(compute, rp.name)) == 1


def test_retention_deletes_the_restore_point_of_a_failed_attempt_and_keeps_the_good_one(svc, compute, md_vm):
    """A job that needed a second attempt: retention deletes attempt 1's failed restore point, keeps the
    one its recovery point holds, and a second run finds nothing more to do."""
    vm = md_vm()
    compute.fail_next.append(("VMAgentStatusCommunicationError", "The VM agent is not reporting status."))
    task = task_for(svc, vm.name)
    deliver(svc, task)
    track_until_done(svc, task.job_id, timeout=5)
    (retry,) = svc.task_queue.sent
    svc.clock.advance(timedelta(minutes=5))
    deliver(svc, retry)
    job = track_until_done(svc, task.job_id)
    assert job.status is JobStatus.COMPLETED and job.attempt == 2
    first, second = f"{task.job_id}_1", f"{task.job_id}_2"

    (action,) = plan_retention(svc, vm.name).attempt_snapshots
    assert action.snapshot.endswith(f"/restorePoints/{first}") and action.rule is Rule.SUPERSEDED_ATTEMPT
    assert action.method is BackupMethod.RESTORE_POINT

    result = run_retention(svc, vm.name)
    assert result.snapshots_deleted == 1
    assert [p.name for p in compute.restore_points(vm.name)] == [second]
    assert plan_retention(svc, vm.name).attempt_snapshots == []


def test_restore_creates_verified_managed_disks_and_the_restore_job_completes(svc, compute, md_vm, cli):
    """restore-disks --target-resource-group makes a disk per disk restore point with the snapshot's
    bytes; --query name -o tsv prints just the job name, and the Restore job Completes."""
    vm, job = _backed_up(svc, md_vm)
    compute.add_resource_group("restored-rg")
    rp_name = recovery_point_name(job.job_id)
    code, out, err = cli("restore", "restore-disks", "--vm", vm.name, "--rp-name", rp_name,
                         "--target-resource-group", "restored-rg", "--query", "name", "-o", "tsv")
    assert code == 0, err
    job_name = out.strip()
    assert "\n" not in job_name and job_name != job.job_id
    svc.restore_queue.drain(svc)

    code, out, _ = cli("job", "show", "--name", job_name, "-o", "json")
    restore = json.loads(out)["properties"]
    assert restore["operation"] == "Restore" and restore["status"] == "Completed"
    for disk in vm.disks:
        restored_name = f"{disk.name}-{rp_name}"
        blob = compute.restored_disk_blob("restored-rg", restored_name)
        assert blob is not None, f"no disk {restored_name}"
        data = BlobClient.from_blob_url(blob, credential=svc.blob_service.credential).download_blob().readall()
        assert data == _snapshot_bytes(svc, compute, vm, disk.lun)
        assert any((t.get("target") or "").endswith(f"/resourceGroups/restored-rg/providers/Microsoft.Compute/"
                                                     f"disks/{restored_name}")
                   for t in restore["extendedInfo"]["tasksList"])


def test_a_second_restore_into_the_same_group_fails_and_replaces_nothing(svc, compute, md_vm, cli):
    """Restoring the same point into the same resource group again fails with 'target exists' and
    advice, leaving the first restored disks as they were."""
    vm, job = _backed_up(svc, md_vm)
    rp_name = recovery_point_name(job.job_id)
    args = ("restore", "restore-disks", "--vm", vm.name, "--rp-name", rp_name, "--target-resource-group", "local")
    assert cli(*args)[0] == 0
    svc.restore_queue.drain(svc)
    first = {d.name: compute.restored_disk_blob("local", f"{d.name}-{rp_name}") for d in vm.disks}
    svc.clock.advance(timedelta(minutes=1))
    error = _failed_restore(svc, cli, *args)
    assert error["errorCode"] == "UserErrorRestoreTargetExists"
    assert any("never replaced" in r for r in error["recommendations"])
    assert {d.name: compute.restored_disk_blob("local", f"{d.name}-{rp_name}") for d in vm.disks} == first


@pytest.mark.parametrize("extra, expected", [
    (("--target-container", "restored"), "--target-resource-group"),
    (("--target-resource-group", "local", "--restore-mode", "OriginalLocation"), "restores over the VM's own disks"),
    (("--target-resource-group", "bad/group"), "resource group name"),
])
def test_a_wrong_target_for_a_restore_point_is_a_one_line_error_and_no_job(svc, compute, md_vm, cli, extra,
                                                                            expected):
    """A container, OriginalLocation or a malformed group for a managed-disk point: exit 2, one line, no job."""
    vm, job = _backed_up(svc, md_vm)
    code, _, err = cli("restore", "restore-disks", "--vm", vm.name, "--rp-name", recovery_point_name(job.job_id),
                       *extra)
    assert code == 2 and expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, out, _ = cli("job", "list", "--operation", "Restore", "-o", "json")
    assert json.loads(out) == []


def test_two_restores_racing_for_the_same_disk_leave_one_restore_and_one_clear_failure(svc, compute, md_vm):
    """Two restores at once wanting the same new OS disk: one Completes, the other Fails saying the
    target exists; the disk holds the disk restore point's bytes."""
    from shared.domain.restore import RestoreTask
    from shared.services.restore import request_restore, run_restore

    vm, job = _backed_up(svc, md_vm)
    rp_name = recovery_point_name(job.job_id)
    requested = [request_restore(svc, vm.name, rp_name, target_resource_group="local", lun=lun) for lun in (None, -1)]
    barrier = threading.Barrier(2)
    jobs = []

    def restore(requested_job) -> None:
        barrier.wait()
        jobs.append(run_restore(svc, RestoreTask(requested_job.job_id, vm.name)))

    threads = [threading.Thread(target=restore, args=(j,)) for j in requested]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(j.status.value for j in jobs) == ["Completed", "Failed"]
    (failed,) = [j for j in jobs if j.status is JobStatus.FAILED]
    assert failed.errors[0].error_code == "UserErrorRestoreTargetExists"
    os_disk = next(d for d in vm.disks if d.lun == -1)
    blob = compute.restored_disk_blob("local", f"{os_disk.name}-{rp_name}")
    data = BlobClient.from_blob_url(blob, credential=svc.blob_service.credential).download_blob().readall()
    assert data == _snapshot_bytes(svc, compute, vm, -1)


class _NoCredential:
    """What DefaultAzureCredential does on a machine with no sign-in: one exception listing every
    credential it tried, over many lines."""

    def get_token(self, *scopes, **kwargs):
        from azure.identity import CredentialUnavailableError

        raise CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token from the included "
                                         "credentials.\nAttempted credentials:\n\tEnvironmentCredential: not "
                                         "configured\n\tManagedIdentityCredential: unavailable\n\tAzureCliCredential: "
                                         "az not found\nTo mitigate this issue, see the troubleshooting guide.")


@pytest.mark.parametrize("how", ["no credential", "endpoint gone"])
def test_a_restore_that_cannot_reach_the_compute_endpoint_is_one_line_exit_5_and_no_job(svc, compute, md_vm, cli,
                                                                                          how):
    """Run where no Compute endpoint can be used (no sign-in and no ComputeConnection, or a stack that has
    stopped): one line that says what to do, exit 5, no credential dump, and no Restore job recorded."""
    from devhost.ports import free_ports
    from shared.bootstrap import Services
    from shared.settings import Settings

    vm, job = _backed_up(svc, md_vm)
    env = {"BackupStorage": svc.settings.storage.connection_string, "TABLE_PREFIX": svc.settings.table_prefix,
           "ServiceBusConnection": svc.settings.service_bus.connection_string}
    if how == "no credential":
        operator = Services(Settings.from_env(env), clock=svc.clock, credential=_NoCredential())
    else:
        (port,) = free_ports(1)
        gone = f"Endpoint=https://127.0.0.1:{port};CertificateFile={compute.ca_file};Token=t"
        operator = Services(Settings.from_env({**env, "ComputeConnection": gone}), clock=svc.clock)
    reset_services(operator)

    code, out, err = cli("restore", "restore-disks", "--vm", vm.name, "--rp-name", recovery_point_name(job.job_id),
                         "--target-resource-group", "local")
    assert code == 5 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "Attempted credentials" not in err and "./dev run" in err
    assert ("az login" in err) if how == "no credential" else (f"127.0.0.1:{port}" in err and "ComputeConnection" in err)
    code, out, _ = cli("job", "list", "--operation", "Restore", "-o", "json")
    assert json.loads(out) == []


def test_a_restore_into_a_missing_resource_group_says_to_create_it_and_that_a_retry_cannot_help(svc, compute,
                                                                                                 md_vm, cli):
    """ARM's ResourceGroupNotFound is no copy failure a retry mends: the job fails saying the group does not
    exist, advises creating it or choosing another, retryable no; the point stays Available."""
    vm, job = _backed_up(svc, md_vm)
    rp_name = recovery_point_name(job.job_id)

    error = _failed_restore(svc, cli, "restore", "restore-disks", "--vm", vm.name, "--rp-name", rp_name,
                            "--target-resource-group", "no-such-rg")

    assert error["errorCode"] == "UserErrorRestoreResourceGroupNotFound"
    assert error["retryable"] is False
    assert any("create the resource group" in r.lower() for r in error["recommendations"])
    assert svc.recovery_points.get(vm.name, rp_name).state is PointState.AVAILABLE
