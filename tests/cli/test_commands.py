"""vmsnap's az conventions, in process through shared.cli.main on Azurite: output formats and --query,
enums in any case, job list order, disk inclusion/exclusion honoured by the worker, protection jobs,
read-only commands that create nothing, status show of the names job show prints."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from azure.storage.blob import BlobClient

from shared.bootstrap import Services, reset_services
from shared.cli import main
from shared.clock import FixedClock
from shared.domain.command import decode_object_str
from shared.domain.inventory import Vm
from shared.domain.jobs import Job, JobPhase, JobStatus
from shared.domain.planning import task_for
from shared.services.dispatch import Outcome, handle_snapshot_task
from tests.fakes import InMemoryInventory, RecordingDispatcher, RecordingTaskQueue
from tests.jobs.helpers import CORPUS
from tests.scheduling.conftest import local_vm

NOW = datetime(2025, 6, 2, 12, 0, tzinfo=timezone.utc)


def vm_on(services: Services, name: str, data_disks: int = 1) -> Vm:
    """A local VM whose disks are page blobs in the test's storage account (where SAS can be minted,
    and the worker finds them before it dispatches)."""
    vm = local_vm(name, data_disks)
    base = services.blob_service.url.rstrip("/")
    vm = replace(vm, disks=tuple(replace(d, blob_url=d.blob_url.replace(
        "http://127.0.0.1:10000/devstoreaccount1", base)) for d in vm.disks))
    for disk in vm.disks:
        blob = BlobClient.from_blob_url(disk.blob_url, credential=services.blob_service.credential)
        container = services.blob_service.get_container_client(blob.container_name)
        if not container.exists():
            container.create_container()
        blob.create_page_blob(1024)
    return vm


@pytest.fixture
def svc(make_settings):
    services = Services(make_settings(), clock=FixedClock(NOW), task_queue=RecordingTaskQueue(),
                        dispatcher=RecordingDispatcher())
    services.__dict__["inventory"] = InMemoryInventory(vm_on(services, "vm1", 3), vm_on(services, "vm2"))
    reset_services(services)
    yield services
    reset_services(None)


@pytest.fixture
def vmsnap(svc, capsys):
    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _jobs(svc, count: int = 3) -> list[Job]:
    """Jobs whose start order differs from their slot order (a late dispatch starts after a newer slot)."""
    jobs = [Job.new_backup(vm_name="vm1", slot=NOW - timedelta(hours=3 - i), now=NOW - timedelta(hours=3 - i))
            for i in range(count)]
    jobs[0] = replace(jobs[0], start_time=NOW - timedelta(minutes=5))      # oldest slot, newest start
    svc.jobs.create_many_if_absent(jobs)
    return jobs


def test_output_formats_and_query_follow_az(svc, vmsnap):
    """-o json|jsonc|yaml|tsv|none and --query behave as in az, on the same documents."""
    jobs = _jobs(svc)
    code, out, _ = vmsnap("job", "list", "-o", "json")
    documents = json.loads(out)
    assert code == 0 and len(documents) == 3
    assert yaml.safe_load(vmsnap("job", "list", "-o", "yaml")[1]) == documents
    assert json.loads(vmsnap("job", "list", "-o", "JSONC")[1]) == documents       # no colour when piped
    assert vmsnap("job", "list", "-o", "none")[1] == ""
    names = vmsnap("job", "list", "--query", "[].name", "-o", "tsv")[1].split()
    assert sorted(names) == sorted(j.job_id for j in jobs)
    code, out, _ = vmsnap("job", "list", "--query", "[0].properties.{op: operation, st: status}", "-o", "tsv")
    assert out == "Backup\tInProgress\n"
    code, out, _ = vmsnap("job", "list", "--query", "[].{Name: name, Vm: properties.entityFriendlyName}")
    assert out.splitlines()[0].split() == ["Name", "Vm"] and len(out.splitlines()) == 5


def test_job_list_is_newest_first_by_the_start_time_it_shows(svc, vmsnap):
    """A job that started last is listed first, even when its slot is the oldest."""
    jobs = _jobs(svc)
    listed = json.loads(vmsnap("job", "list", "-o", "json")[1])
    assert listed[0]["name"] == jobs[0].job_id
    starts = [doc["properties"]["startTime"] for doc in listed]
    assert starts == sorted(starts, reverse=True)


def test_enum_values_in_any_case(svc, vmsnap):
    """--status failed, --operation BACKUP and -o JSON are taken as az takes them."""
    failed = replace(Job.new_backup(vm_name="vm1", slot=NOW - timedelta(hours=1), now=NOW - timedelta(hours=1)),
                     status=JobStatus.FAILED, phase=JobPhase.DONE, end_time=NOW)
    svc.jobs.create_if_absent(failed)
    for status in ("failed", "FAILED", "Failed"):
        code, out, _ = vmsnap("job", "list", "--status", status, "--operation", "BACKUP", "-o", "JSON")
        assert code == 0 and [d["name"] for d in json.loads(out)] == [failed.job_id]


def test_durations_print_in_whole_seconds(svc, vmsnap):
    """A duration reads 0:00:02 as in az, never 0:00:02.360694."""
    job = replace(Job.new_backup(vm_name="vm1", slot=NOW - timedelta(hours=1), now=NOW - timedelta(seconds=3)),
                  status=JobStatus.COMPLETED, phase=JobPhase.DONE, end_time=NOW - timedelta(microseconds=639306))
    svc.jobs.create_if_absent(job)
    doc = json.loads(vmsnap("job", "show", "--name", job.job_id, "-o", "json")[1])
    assert doc["properties"]["duration"] == "0:00:02"
    assert vmsnap("job", "list")[1].endswith("0:00:02\n")


def test_disk_exclusion_is_honoured_by_the_dispatched_command(svc, vmsnap):
    """After update-for-vm excludes LUN 1, the worker sends the extension the OS disk and LUNs 0 and 2 only."""
    assert vmsnap("protection", "enable-for-vm", "--vm", "vm1", "--no-initial-backup")[0] == 0
    code, out, _ = vmsnap("protection", "update-for-vm", "--vm", "vm1", "--diskslist", "1",
                          "--disk-list-setting", "Exclude", "-o", "json")
    assert code == 0 and json.loads(out)["diskExclusionProperties"] == {"diskLunList": [1], "isInclusionList": False}
    code, out, _ = vmsnap("backup-now", "--vm", "vm1", "-o", "json")
    job = svc.jobs.get(json.loads(out)["name"])
    task = task_for(job, NOW)
    outcome = handle_snapshot_task(svc, task.to_json().encode(), message_id=task.message_id, delivery_count=1)
    assert outcome.outcome is Outcome.DISPATCHED
    [(vm, command)] = svc.dispatcher.sent
    assert [d.lun for d in vm.disks] == [-1, 0, 2]
    assert len(decode_object_str(command.protected_settings["objectStr"])["blobSASUri"]) == 3
    assert [d.lun for d in svc.jobs.get(job.job_id).disks] == [-1, 0, 2]
    # Inclusion, then OS disk only, then every disk again.
    vmsnap("protection", "update-for-vm", "--vm", "vm1", "--diskslist", "2", "--disk-list-setting", "include")
    assert [d.lun for d in svc.protected_items.get("vm1").disk_selection.apply(local_vm("vm1", 3)).disks] == [-1, 2]
    vmsnap("protection", "update-for-vm", "--vm", "vm1", "--exclude-all-data-disks")
    assert [d.lun for d in svc.protected_items.get("vm1").disk_selection.apply(local_vm("vm1", 3)).disks] == [-1]
    vmsnap("protection", "update-for-vm", "--vm", "vm1", "--reset-exclusion-settings")
    assert len(svc.protected_items.get("vm1").disk_selection.apply(local_vm("vm1", 3)).disks) == 4


def test_item_set_policy_changes_the_policy(svc, vmsnap):
    """`item set-policy` moves a protected VM to another policy, as az backup item set-policy does."""
    vmsnap("protection", "enable-for-vm", "--vm", "vm1")
    assert vmsnap("policy", "create", "-n", "Weekly", "--frequency", "weekly")[0] == 0
    code, out, _ = vmsnap("item", "set-policy", "--vm", "vm1", "--policy-name", "Weekly", "-o", "json")
    assert code == 0 and json.loads(out)["policyName"] == "Weekly"


def test_protection_changes_are_jobs(svc, vmsnap):
    """Enable and disable show up in job list as ConfigureBackup, DisableBackup and DeleteBackupData jobs;
    --delete-backup-data alone means true."""
    vmsnap("protection", "enable-for-vm", "--vm", "vm1")
    vmsnap("protection", "disable", "--vm", "vm1")
    vmsnap("protection", "enable-for-vm", "--vm", "vm2")
    code, out, _ = vmsnap("protection", "disable", "--vm", "vm2", "--delete-backup-data", "--yes", "-o", "json")
    assert code == 0 and json.loads(out)["protectionState"] == "SoftDeleted"
    listed = json.loads(vmsnap("job", "list", "-o", "json")[1])
    seen = sorted((d["properties"]["entityFriendlyName"], d["properties"]["operation"], d["properties"]["status"])
                  for d in listed)
    assert seen == [("vm1", "ConfigureBackup", "Completed"), ("vm1", "DisableBackup", "Completed"),
                    ("vm2", "ConfigureBackup", "Completed"), ("vm2", "DeleteBackupData", "Completed")]
    only = json.loads(vmsnap("job", "list", "--operation", "deletebackupdata", "-o", "json")[1])
    assert [d["properties"]["entityFriendlyName"] for d in only] == ["vm2"]


def test_in_progress_job_is_not_shown_once_it_finished(svc, vmsnap):
    """inProgressJobId names the running backup, and is empty once that job has finished."""
    vmsnap("protection", "enable-for-vm", "--vm", "vm1")
    job_id = json.loads(vmsnap("backup-now", "--vm", "vm1", "-o", "json")[1])["name"]
    assert json.loads(vmsnap("protection", "show", "--vm", "vm1", "-o", "json")[1])["inProgressJobId"] == job_id
    svc.jobs.update(job_id, lambda j: replace(j, status=JobStatus.COMPLETED, phase=JobPhase.DONE, end_time=NOW))
    item = json.loads(vmsnap("protection", "show", "--vm", "vm1", "-o", "json")[1])
    assert item["inProgressJobId"] is None and item["lastBackupJobId"] == job_id


def test_read_only_commands_create_no_table(make_settings, capsys):
    """Listing and showing on an empty account writes nothing (a reader role would get 403 for a create)."""
    settings = make_settings()
    services = Services(settings, clock=FixedClock(NOW))
    reset_services(services)
    try:
        for argv in (["job", "list"], ["job", "list", "--vm", "vm1"], ["policy", "list"],
                     ["policy", "show", "-n", "DefaultPolicy"], ["protection", "list"],
                     ["job", "show", "--name", "01954f6e-8d00-8000-8000-000000000000"], ["local", "vm", "list"],
                     ["protection", "show", "--vm", "vm1"]):
            assert main(argv) in (0, 3), argv
        tables = [t.name for t in services.table_service.list_tables() if t.name.startswith(settings.table_prefix)]
        assert tables == []
        assert "DefaultPolicy" in capsys.readouterr().out
    finally:
        reset_services(None)


def test_status_show_reads_the_status_blob_name_job_show_prints(svc, vmsnap):
    """`status show <job>/<n>.Status.txt` (the Status Blob value of job show) reads it from the status container."""
    name = "01954f6e-8d00-8dab-9f5f-e6261a5853d1/1.Status.txt"
    container = svc.blob_service.get_container_client(svc.settings.status_container)
    container.create_container()
    container.upload_blob(name, (CORPUS / "02-completed-fs-two-disks.txt").read_bytes())
    code, out, _ = vmsnap("status", "show", name, "-o", "json")
    assert code == 0 and json.loads(out)["result"]["jobStatus"] == "Completed"
    assert vmsnap("status", "show", "01954f6e-8d00-8dab-9f5f-e6261a5853d1/2.Status.txt")[0] == 3


def test_job_wait_shows_progress_on_a_terminal_only(svc, vmsnap, monkeypatch):
    """On a terminal job wait keeps one live line of progress; piped, it prints nothing while it waits."""
    job = Job.new_backup(vm_name="vm1", slot=NOW, now=NOW)
    svc.jobs.create_if_absent(job)
    argv = ("job", "wait", "--name", job.job_id, "--timeout", "0.2", "--interval", "0.05")
    code, _, err = vmsnap(*argv)
    assert code == 6 and err.startswith("ERROR: ") and len(err.splitlines()) == 1

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(list(argv)) == 6
    assert f"{job.job_id} InProgress (Queued, attempt 1)" in terminal.getvalue()


def test_vmsnap_finds_a_running_dev_stack_by_its_settings_file(tmp_path, storage_connection_string):
    """With `./dev run` going, vmsnap in the project folder uses the ports that stack wrote; a file
    left by a stack that is gone is ignored."""
    from shared.cli import STACK_SETTINGS

    vmsnap = [str(sys.executable.rsplit("/", 1)[0] + "/vmsnap"), "policy", "list", "--query", "[].name", "-o", "tsv"]
    (tmp_path / STACK_SETTINGS).parent.mkdir()
    helper = subprocess.Popen(["sleep", "30"])       # stands in for the running stack's process
    try:
        for pid, expected in ((helper.pid, 0), (2 ** 22 + 17, 5)):
            (tmp_path / STACK_SETTINGS).write_text(json.dumps({"Pid": pid, "Values": {
                "BackupStorage": storage_connection_string, "ServiceBusConnection": "Endpoint=sb://127.0.0.1:1;",
                "TABLE_PREFIX": f"stack{pid % 1000}"}}))
            done = subprocess.run(vmsnap, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                                  env={"PATH": "/usr/bin:/bin"})
            assert done.returncode == expected, done.stderr
            assert expected or done.stdout == "DefaultPolicy\n"
    finally:
        helper.kill()
        helper.wait()


@pytest.mark.integration
def test_the_auth_level_warning_is_gone():
    """Indexing the app (each host start) logs no 'Auth level is not applied' warning, and other
    warnings still show."""
    root = Path(__file__).resolve().parents[2]
    script = ("import logging; logging.basicConfig(); import function_app; function_app.app.get_functions(); "
              "logging.warning('still shown')")
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Auth level" not in done.stderr and "still shown" in done.stderr
