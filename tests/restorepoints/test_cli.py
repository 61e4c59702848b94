"""`vmsnap job show` says which backup method ran, in the table and in JSON (jobs on Azurite)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from shared.bootstrap import Services, reset_services
from shared.cli import main
from shared.clock import FixedClock
from shared.domain.inventory import BackupMethod, Disk
from shared.domain.job_transitions import mark_dispatched
from shared.domain.jobs import Job
from shared.domain.restore_point import RestorePointState, apply_restore_point, mark_restore_point_requested

NOW = datetime(2026, 6, 1, 3, 0, tzinfo=timezone.utc)
DISK = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/md-os"


@pytest.fixture
def svc(make_settings):
    services = Services(make_settings(), clock=FixedClock(NOW))
    reset_services(services)
    yield services
    reset_services(None)


def test_job_show_names_the_method_that_ran(svc, capsys):
    """A restore-point job reads 'Backup Method RestorePoint'; an extension job 'ExtensionCommand'."""
    md = Job.new_backup(vm_name="md", slot=NOW, now=NOW)
    md = mark_restore_point_requested(md, attempt=1, task_id=f"{md.job_id}_1", now=NOW,
                                      disks=[Disk(-1, "", "md-os", 0, BackupMethod.RESTORE_POINT, DISK)])
    md = apply_restore_point(md, RestorePointState(name=f"{md.job_id}_1", id="rp", provisioning_state="Succeeded",
                                                   consistency_mode="FileSystemConsistent"), NOW)
    pb = Job.new_backup(vm_name="pb", slot=NOW, now=NOW)
    pb = mark_dispatched(pb, attempt=1, task_id=f"{pb.job_id}_1", status_blob="s", log_blob="l", now=NOW)
    svc.jobs.create_many_if_absent([md, pb])

    assert main(["job", "show", "--name", md.job_id]) == 0
    assert any(line.split() == ["Backup", "Method", "RestorePoint"] for line in capsys.readouterr().out.splitlines())
    assert main(["job", "show", "--name", pb.job_id, "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["properties"]["backupMethod"] == "ExtensionCommand"


def test_backup_now_dry_run_of_a_managed_disk_vm_shows_the_restore_point_request(svc, capsys):
    """--dry-run on a managed-disk VM prints the restore point it would create, not an extension command."""
    from shared.domain.inventory import Vm, VmKind
    from shared.services.protection import enable_protection

    vm_id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/md"
    svc.inventory.put_vm(Vm("md", VmKind.LOCAL, (Disk(-1, "", "md-os", 0, BackupMethod.RESTORE_POINT, DISK),),
                            resource_id=vm_id))
    enable_protection(svc, "md", "DefaultPolicy")
    assert main(["backup-now", "--vm", "md", "--dry-run", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["backupMethod"] == "RestorePoint"
    assert doc["restorePointCollection"]["properties"]["source"]["id"] == vm_id
    assert doc["restorePoint"]["id"].startswith(
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/restorePointCollections/vmsnap-md/")
    assert doc["restorePoint"]["properties"] == {}       # application consistency: consistencyMode left out
