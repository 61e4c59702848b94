"""End to end on Azurite through the CLI: back up demo-vm with the real loop, list its recovery point,
restore both disks into a new container, and check each restored blob byte for byte."""
from __future__ import annotations

import json
import logging

import pytest

from devhost.demo import create_demo_vm
from shared.cli import main
from shared.domain.jobs import JobStatus
from tests.e2e.conftest import loop, loop_with, run_cycle  # noqa: F401  (the loop fixture and the one it uses)
from tests.e2e.test_backup_loop import SIG
from tests.restore.conftest import blob_bytes

pytestmark = pytest.mark.long


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


@pytest.fixture
def backed_up(loop, capsys):  # noqa: F811
    from shared.services.protection import enable_protection

    svc, host = loop
    vm = create_demo_vm(svc, "demo-vm")
    enable_protection(svc, vm.name, "DefaultPolicy")
    (job,) = run_cycle(svc, host)
    assert job.status is JobStatus.COMPLETED, job.errors
    return svc, vm, job, host


def test_a_completed_backup_is_listed_restored_and_verified(backed_up, capsys, unique_name, caplog):
    """After one backup, recoverypoint list shows it; restore-disks copies both disks; the bytes match."""
    caplog.set_level(logging.DEBUG)
    svc, vm, job, host = backed_up
    code, out = _cli(capsys, "recoverypoint", "list", "--vm", "demo-vm", "-o", "json")
    assert code == 0
    (point,) = json.loads(out)
    assert point["jobId"] == job.job_id and point["state"] == "Available"
    assert set(point["tiers"]) >= {"InstantRestore", "Daily"} and point["expiryTime"]
    assert {d["snapshot"] for d in point["disks"]} == {d.snapshot_uri for d in job.disks}

    code, out = _cli(capsys, "recoverypoint", "list", "--vm", "demo-vm")
    assert code == 0 and point["name"] in out and "Consistency" in out.splitlines()[0]

    target = unique_name("restored")
    code, out = _cli(capsys, "restore", "restore-disks", "--vm", "demo-vm", "--rp-name", point["name"],
                     "--target-container", target, "-o", "json")
    restore = json.loads(out)
    assert code == 0, restore
    assert restore["properties"]["operation"] == "Restore" and restore["properties"]["status"] == "InProgress"

    host.drain_queue("run_restore", max_wait=5)
    code, out = _cli(capsys, "job", "wait", "--name", restore["name"], "--timeout", "30", "--interval", "0.2")
    assert code == 0 and "Completed" in out
    code, out = _cli(capsys, "job", "show", "--name", restore["name"], "-o", "json")
    shown = json.loads(out)["properties"]
    assert shown["extendedInfo"]["progressPercentage"] == 100.0
    assert {t["status"] for t in shown["extendedInfo"]["tasksList"]} == {"Completed"}
    assert all(t["bytesCopied"] == t["bytesTotal"] > 0 for t in shown["extendedInfo"]["tasksList"])
    code, out = _cli(capsys, "job", "list", "--operation", "Restore", "-o", "json")
    assert [j["name"] for j in json.loads(out)] == [restore["name"]]

    restored = svc.blob_service.get_container_client(target)
    names = sorted(b.name for b in restored.list_blobs())
    assert names == sorted(d.name for d in vm.disks)
    for disk in point["disks"]:
        name = disk["source"].rsplit("/", 1)[1]
        copy = restored.get_blob_client(name)
        assert copy.get_blob_properties().blob_type == "PageBlob"
        assert copy.download_blob().readall() == blob_bytes(svc, disk["snapshot"])

    code, out = _cli(capsys, "restore", "restore-disks", "--vm", "demo-vm", "--rp-name", point["name"],
                     "--target-container", target, "--disk", "0", "-o", "json")
    again = json.loads(out)
    host.drain_queue("run_restore", max_wait=5)
    refused = svc.jobs.get(again["name"])
    assert refused.status is JobStatus.FAILED and refused.errors[0].error_code == "UserErrorRestoreTargetExists"
    assert copy.download_blob().readall() == blob_bytes(svc, point["disks"][-1]["snapshot"]), "another job's blob was touched"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "copy of" in logged and not SIG.search(logged), "the copy's source SAS reached the logs"


def test_restore_input_errors_are_one_line_and_create_no_job(backed_up, capsys):
    """An unknown point, a bad container or LUN: a clear one-line error, a usage exit code, no job."""
    svc, vm, job, host = backed_up
    code, _ = _cli(capsys, "restore", "restore-disks", "--vm", "demo-vm", "--rp-name", "nope",
                   "--target-container", "ok-name")
    err = capsys.readouterr().err
    assert code == 3
    code, out = _cli(capsys, "restore", "restore-disks", "--vm", "demo-vm", "--rp-name", "nope",
                     "--target-container", "Bad_Name")
    assert code == 2
    assert "Traceback" not in err
    code, out = _cli(capsys, "job", "list", "--operation", "Restore", "-o", "json")
    assert json.loads(out) == []


def test_retention_plan_keeps_the_only_point_of_a_protected_vm(backed_up, capsys):
    """retention plan on a fresh backup deletes nothing: the latest point of a protected VM always stays."""
    code, out = _cli(capsys, "retention", "plan", "--vm", "demo-vm", "-o", "json")
    plan = json.loads(out)
    assert code == 0 and plan["points"] == [] and plan["examined"] == 1 and plan["kept"] == 1
