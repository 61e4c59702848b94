"""A restore drill of a managed-disk VM through the local Compute endpoint: disks created from the disk
restore points in a scratch resource group, the OS disk read through a read grant, the disks deleted
after the keep window."""
from __future__ import annotations

from devhost.guest import MARKER
from shared.domain.jobs import JobStatus
from shared.domain.restore_testing import RestoreTestPlan
from shared.services.restore_testing import clean_up_drills, start_drill


def test_a_drill_of_a_managed_disk_vm_creates_checks_and_deletes_its_disks(svc, compute, md_vm):
    """Through the local Compute endpoint: the drill creates a disk per disk restore point in the scratch
    resource group, reads the OS disk through a read grant (partition table, ext4, the marker the guest
    wrote before the restore point), ends Passed, and after the keep window its disks are gone."""
    from devhost.guest import is_guest_disk, write_marker
    from shared.domain.recovery import recovery_point_name
    from tests.restorepoints.conftest import deliver, task_for, track_until_done


    def marks(vm, name):
        os_disk = next(d for d in vm.disks if d.lun == -1)
        if is_guest_disk(os_disk.blob_url, svc.blob_service.credential):
            write_marker(os_disk.blob_url, svc.blob_service.credential, name)

    compute.before_snapshot = marks
    compute.add_resource_group("vmsnap-drills")
    vm = md_vm(guest=True)
    task = task_for(svc, vm.name)
    deliver(svc, task)
    backup = track_until_done(svc, task.job_id)
    assert backup.status is JobStatus.COMPLETED, backup.errors
    plan = RestoreTestPlan(name="md", keep_hours=0, probe_file=MARKER)
    job = start_drill(svc, vm.name, recovery_point_name(backup.job_id), plan=plan)
    (done,) = svc.restore_queue.drain(svc)
    assert done.status is JobStatus.COMPLETED, (done.errors, done.checks)
    assert [c.name for c in done.checks] == ["data", "partition table", "file system", f"probe file {MARKER}"]
    assert "read grant" in done.checks[1].detail and backup.job_id in done.checks[3].detail
    names = [d.blob_url.rsplit("/", 1)[-1] for d in done.disks]
    assert all(compute.restored_disk_blob("vmsnap-drills", n) for n in names)
    assert clean_up_drills(svc).left == []
    assert [compute.restored_disk_blob("vmsnap-drills", n) for n in names] == [None, None]
    assert svc.jobs.get(job.job_id).restore.cleaned_at is not None
