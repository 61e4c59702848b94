"""vmsnap policy / protection / backup-now / local vm: az-shaped output, one-line errors, exit codes."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from shared.bootstrap import reset_services
from shared.cli import main
from shared.cli.output import EXIT_CONFLICT, EXIT_NOT_FOUND, EXIT_USAGE


@pytest.fixture
def vmsnap(make_services, capsys):
    svc = make_services(vms=("vm1",))
    reset_services(svc)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    run.services = svc
    yield run
    reset_services(None)


def test_policy_create_show_and_list(vmsnap):
    """A policy created from flags shows as JSON in az's shape and is listed beside DefaultPolicy."""
    code, _, _ = vmsnap("policy", "create", "--name", "Berlin", "--time", "02:30", "--time-zone", "Europe/Berlin",
                        "--daily-retention", "14", "--monthly-retention", "6")
    assert code == 0
    code, out, _ = vmsnap("policy", "show", "--name", "berlin", "-o", "json")
    doc = json.loads(out)
    assert doc["timeZone"] == "Europe/Berlin" and doc["schedulePolicy"]["scheduleRunTimes"] == ["02:30"]
    assert doc["retentionPolicy"]["monthlySchedule"]["retentionDuration"]["count"] == 6
    assert doc["protectedItemsCount"] == 0
    code, out, _ = vmsnap("policy", "list")
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["Berlin", "DefaultPolicy"]


def test_invalid_policy_names_the_flag_and_exits_2(vmsnap):
    """A bad value is refused with one line naming the flag to fix, exit code 2."""
    code, out, err = vmsnap("policy", "create", "--name", "Bad", "--frequency", "Hourly", "--interval", "5")
    assert code == EXIT_USAGE and out == ""
    assert err.startswith("ERROR: --interval:") and len(err.splitlines()) == 1


def test_policy_set_changes_only_what_is_given(vmsnap):
    """`policy set --time` keeps the retention and zone it does not mention."""
    vmsnap("policy", "create", "--name", "P", "--time-zone", "America/New_York", "--daily-retention", "60")
    code, out, _ = vmsnap("policy", "set", "--name", "P", "--time", "01:00", "-o", "json")
    doc = json.loads(out)
    assert code == 0 and doc["timeZone"] == "America/New_York"
    assert doc["retentionPolicy"]["dailySchedule"]["retentionDuration"]["count"] == 60


def test_enable_list_and_backup_now(vmsnap):
    """Protect a VM, see it listed with its next backup, back it up now; a second backup-now conflicts."""
    assert vmsnap("protection", "enable-for-vm", "--vm", "vm1", "--no-initial-backup")[0] == 0
    code, out, _ = vmsnap("protection", "list", "-o", "json")
    (item,) = json.loads(out)
    assert item["policyName"] == "DefaultPolicy" and item["nextScheduledBackup"] == "2025-06-02T22:30:00Z"
    code, out, _ = vmsnap("backup-now", "--vm", "vm1", "--retain-until", "01-07-2025", "-o", "json")
    job = json.loads(out)
    assert code == 0 and job["properties"]["status"] == "InProgress"
    assert job["properties"]["retainUntil"] == "2025-07-01T00:00:00Z"
    assert [t.job_id for t in vmsnap.services.task_queue.sent] == [job["name"]]
    assert vmsnap("job", "show", "--name", job["name"], "-o", "json")[1] == out
    # A second request (at the same instant it would be the same job, as its id says).
    vmsnap.services.clock.advance(timedelta(seconds=1))
    code, _, err = vmsnap("protection", "backup-now", "--vm", "vm1")
    assert code == EXIT_CONFLICT and "UserErrorBackupOperationInProgress" in err


def test_protection_errors_have_exit_codes(vmsnap):
    """Unknown VMs exit 3; deleting backup data without --yes is refused."""
    assert vmsnap("protection", "enable-for-vm", "--vm", "ghost")[0] == EXIT_NOT_FOUND
    vmsnap("protection", "enable-for-vm", "--vm", "vm1")
    code, _, err = vmsnap("protection", "disable", "--vm", "vm1", "--delete-backup-data", "true")
    assert code == EXIT_USAGE and "--yes" in err
    code, out, _ = vmsnap("protection", "disable", "--vm", "vm1", "--delete-backup-data", "true", "--yes",
                          "-o", "json")
    assert json.loads(out)["protectionState"] == "SoftDeleted"


def test_local_vm_add_and_list(vmsnap):
    """A local VM added with its disk blobs is listed with them."""
    base = "http://127.0.0.1:10000/devstoreaccount1/disks"
    code, _, _ = vmsnap("local", "vm", "add", "--name", "demo", "--os-disk", f"{base}/os.vhd",
                        "--data-disk", f"0={base}/d0.vhd")
    assert code == 0
    code, out, _ = vmsnap("local", "vm", "list", "-o", "json")
    (vm,) = json.loads(out)
    assert [(d["lun"], d["blobUrl"]) for d in vm["disks"]] == [(-1, f"{base}/os.vhd"), (0, f"{base}/d0.vhd")]
