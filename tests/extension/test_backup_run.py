"""The daemon's backup run against Azurite: what the service sees in the status blob and in storage."""
from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from extension.codes import ExtensionCode
from extension.freeze import FreezeError
from extension.settings import encode_object_str
from extension.transport import HttpResponse
from tests.extension.conftest import METADATA, RecordingTransport, health, message_of


def test_two_disks_are_snapshotted_with_the_backup_metadata(vm):
    """A snapshot command gives each disk one snapshot carrying backupMetadata, and code "1"."""
    element = vm.run()

    status = element["status"]
    assert (status["status"], status["code"]) == ("success", "1")
    assert health(element) == (0, 1)
    for disk in vm.disks:
        (snap,) = vm.snapshots(disk)
        assert snap.metadata == {item["Key"]: item["Value"] for item in METADATA}
    info = status["snapshotInfo"]
    assert [entry["blobUri"] for entry in info] == [
        vm.container.get_blob_client(d).url for d in vm.disks
    ]
    assert all(entry["isSuccessful"] and entry["errorMessage"] == "" for entry in info)
    assert info[0]["snapshotUri"] == f"{info[0]['blobUri']}?snapshot={vm.snapshots('os.vhd')[0].snapshot}"
    assert vm.status_blob() == element


def test_a_command_older_than_140_minutes_takes_no_snapshot(vm):
    """A command issued three hours ago fails with 402 and the CRP timeout message."""
    public, protected = vm.settings()
    public["commandStartTimeUTCTicks"] = str(int(public["commandStartTimeUTCTicks"]) - 3 * 3600 * 10**7)

    element = vm.run(settings=(public, protected))

    assert (element["status"]["status"], element["status"]["code"]) == ("error", "402")
    assert message_of(element)["messageStr"] == "CRP timeout limit has reached, will not take snapshot."
    assert health(element) == (256, 402)
    assert vm.snapshots("os.vhd") == [] and vm.snapshots("data0.vhd") == []
    assert vm.status_blob()["status"]["code"] == "402"


def test_a_command_refused_as_too_late_reports_no_backup_size(vm):
    """After a 402 the status says a backup size of 0, as the real handler's does."""
    public, protected = vm.settings()
    public["commandStartTimeUTCTicks"] = str(int(public["commandStartTimeUTCTicks"]) - 3 * 3600 * 10**7)

    element = vm.run(settings=(public, protected))

    assert element["status"]["code"] == "402"
    assert element["status"]["storageDetails"]["totalUsedSizeInBytes"] == 0


def test_a_simulated_vm_reports_its_own_disks_as_its_backup_size(vm, tmp_path, monkeypatch):
    """A VM simulated on this machine reports the size of its disks, not the host's file systems."""
    disks_file = tmp_path / "disks.json"
    disks_file.write_text(json.dumps([{"lun": -1, "name": "os.vhd", "sizeBytes": 4 << 20},
                                      {"lun": 0, "name": "data0.vhd", "sizeBytes": 2 << 20}]))
    monkeypatch.setenv("VMSNAP_VM_DISKS", str(disks_file))

    element = vm.run()

    assert element["status"]["code"] == "1"
    details = element["status"]["storageDetails"]
    assert (details["partitionCount"], details["totalUsedSizeInBytes"]) == (2, 6 << 20)
    assert details["isSizeComputationFailed"] is False


def test_a_simulated_vm_whose_disk_sizes_are_unknown_says_the_size_is_unknown(vm, tmp_path, monkeypatch):
    """A disk without a size makes isSizeComputationFailed true instead of a wrong backup size."""
    disks_file = tmp_path / "disks.json"
    disks_file.write_text(json.dumps([{"lun": -1, "name": "os.vhd", "sizeBytes": 0}]))
    monkeypatch.setenv("VMSNAP_VM_DISKS", str(disks_file))

    element = vm.run()

    assert element["status"]["storageDetails"]["isSizeComputationFailed"] is True
    assert message_of(element)["isSizeComputationFailed"] is True


def test_durations_are_reported_as_the_real_handler_formats_them(vm):
    """FreezeTime, ThawTime and snapshotTimeTaken read like 0:00:01.234567 in the telemetry."""
    element = vm.run(freezer=RecordingFreezer())

    telemetry = {item["Key"]: item["Value"] for item in element["status"]["telemetryData"]}
    for key in ("FreezeTime", "ThawTime", "snapshotTimeTaken"):
        assert re.fullmatch(r"\d+:\d\d:\d\d(\.\d{6})?", telemetry[key]), (key, telemetry[key])


def test_the_final_telemetry_carries_the_real_handlers_keys(vm):
    """The keys a consumer of the real extension's telemetry looks for are all there."""
    element = vm.run()

    keys = {item["Key"] for item in element["status"]["telemetryData"]}
    assert keys >= {
        "pythonVersion", "platformArchitecture", "guestAgentVersion", "extensionVersion", "osVersion",
        "kernelVersion", "workloads", "prePostEnabled", "isPrePostEnabled", "consistencyType",
        "extErrorCode", "snapshotCreator", "snapshotTimeTaken",
    }


class ClockJumpingFreezer:
    """Freezing takes so long that the command goes stale while frozen."""

    def __init__(self, clock):
        self.clock = clock
        self.events: list[str] = []

    def freeze(self, mounts, timeout):
        self.events.append("freeze")
        self.clock.advance(timedelta(minutes=141))

    def thaw(self):
        self.events.append("thaw")
        return True


def test_a_command_that_goes_stale_while_frozen_is_thawed_without_snapshots(vm):
    """Staleness is checked again right after the freeze: 402, thawed, no snapshot."""
    freezer = ClockJumpingFreezer(vm.clock)

    element = vm.run(freezer=freezer)

    assert element["status"]["code"] == "402"
    assert freezer.events == ["freeze", "thaw"]
    assert vm.snapshots("os.vhd") == []


def test_a_malformed_ticks_value_does_not_stop_the_backup(vm):
    """The doc's display form "6.36458E+17" is not a number: the check passes, as in the real one."""
    element = vm.run(settings=vm.settings(commandStartTimeUTCTicks="6.36458E+17"))

    assert element["status"]["code"] == "1"
    assert element["status"]["commandStartTimeUTCTicks"] == "6.36458E+17"
    assert "staleness not checked" in vm.text("log.txt")


def test_one_missing_disk_fails_the_run_with_76_and_health_761(vm):
    """A SAS pointing at a missing blob: code 76, health 761, the other disk still snapshotted."""
    element = vm.run(settings=vm.settings(disks=["os.vhd", "gone.vhd"]))

    status = element["status"]
    assert (status["status"], status["code"]) == ("error", "76")
    assert health(element) == (256, 761)
    ok, failed = status["snapshotInfo"]
    assert ok["isSuccessful"] and len(vm.snapshots("os.vhd")) == 1
    assert failed["isSuccessful"] is False
    assert failed["snapshotUri"] is None and failed["blobUri"] is None
    assert "BlobNotFound" in failed["errorMessage"]


def test_every_disk_missing_fails_with_the_generic_error_and_no_disk_results(vm):
    """Told to take guest snapshots only, and every one fails: code 2, health 2, no per-disk results."""
    element = vm.run(settings=vm.settings(disks=["gone0.vhd", "gone1.vhd"]))

    assert (element["status"]["status"], element["status"]["code"]) == ("error", "2")
    assert health(element) == (0, 2)
    assert element["status"]["snapshotInfo"] is None
    assert "BlobNotFound" in vm.text("log.txt")        # each disk's storage error is in the log


def test_every_disk_missing_after_the_host_path_fails_with_76(vm):
    """firstHostThenGuest (the default) falls back to guest snapshots: all failed is 76 per disk."""
    custom = json.dumps({"takeSnapshotFrom": "firstHostThenGuest"})

    element = vm.run(settings=vm.settings(disks=["gone0.vhd", "gone1.vhd"], customSettings=custom))

    assert (element["status"]["status"], element["status"]["code"]) == ("error", "76")
    assert health(element) == (256, 76)
    assert [e["isSuccessful"] for e in element["status"]["snapshotInfo"]] == [False, False]


def test_no_disks_at_all_fails_with_76(vm):
    """An empty blobSASUri list: 76 "blobs are empty or none"."""
    element = vm.run(settings=vm.settings(disks=[]))

    assert element["status"]["code"] == "76"
    assert "blobs are empty or none" in message_of(element)["messageStr"]


@pytest.mark.parametrize(
    ("storage_message", "code"),
    [
        ("The rate of snapshot blob calls is exceeded.", "173"),
        ("The snapshot count against this blob has been exceeded.", "85"),
    ],
)
def test_storage_throttling_and_snapshot_limits_have_their_own_codes(vm, storage_message, code):
    """Storage's "rate exceeded" and "count exceeded" answers map to 173 and 85."""
    body = f"<?xml version=\"1.0\"?><Error><Code>X</Code><Message>{storage_message}</Message></Error>"
    http = RecordingTransport(fail={"data0.vhd?": HttpResponse(409, {}, body.encode())})

    element = vm.run(http=http)

    assert (element["status"]["status"], element["status"]["code"]) == ("error", code)
    assert health(element)[1] == int(code)


@pytest.mark.parametrize(
    ("command", "status", "code", "text"),
    [
        ("disable", "error", "11", "command is not correct"),
        ("Install", "success", "1", "Install Succeeded"),
    ],
)
def test_commands_other_than_snapshot(vm, command, status, code, text):
    """Only commands containing "snapshot" back up; "install" succeeds doing nothing, others are 11."""
    element = vm.run(settings=vm.settings(commandToExecute=command))

    assert (element["status"]["status"], element["status"]["code"]) == (status, code)
    assert message_of(element)["messageStr"] == text
    assert vm.snapshots("os.vhd") == []


@pytest.mark.parametrize(
    "public_object",
    [{"includedDisks": {}}, {"backupMetadata": {"jobId": "j-42"}}],
    ids=["missing", "not-key-value-pairs"],
)
def test_missing_backup_metadata_is_a_parameter_error(vm, public_object):
    """A public objectStr without usable backupMetadata: error 11, nothing snapshotted."""
    element = vm.run(settings=vm.settings(objectStr=encode_object_str(public_object)))

    assert (element["status"]["status"], element["status"]["code"]) == ("error", "11")
    assert message_of(element)["messageStr"] == "required field empty or not correct"
    assert health(element) == (128, 11)
    assert vm.snapshots("os.vhd") == []


def test_without_vm_type_no_status_is_ever_written(vm):
    """Without vmType the disks are snapshotted but the status blob stays empty and no file appears."""
    element = vm.run(settings=vm.settings(vmType=None))

    assert element == {}
    assert vm.text("status.txt") == ""
    assert not (vm.root / "status" / "0.status").exists()
    assert len(vm.snapshots("os.vhd")) == 1
    assert "no vmType" in (vm.root / "log" / "extension.log").read_text()


def test_host_only_snapshots_fail_clearly(vm):
    """takeSnapshotFrom=onlyHost needs Azure's host service: code 2 with a message saying so."""
    custom = json.dumps({"takeSnapshotFrom": "onlyHost"})

    element = vm.run(settings=vm.settings(customSettings=custom))

    assert (element["status"]["status"], element["status"]["code"]) == ("error", "2")
    assert "need the Azure host" in message_of(element)["messageStr"]
    assert vm.snapshots("os.vhd") == []


class RecordingFreezer:
    def __init__(self, *, fail: FreezeError | None = None, thaw_ok: bool = True):
        self.events: list[tuple] = []
        self.fail = fail
        self.thaw_ok = thaw_ok

    def freeze(self, mounts, timeout):
        self.events.append(("freeze", tuple(mounts), timeout))
        if self.fail:
            raise self.fail

    def thaw(self):
        self.events.append(("thaw",))
        return self.thaw_ok


def test_the_snapshot_happens_between_freeze_and_thaw_with_the_configured_mounts(vm, monkeypatch):
    """Mounts named by VMSNAP_FREEZE_MOUNTS minus MountsToSkip are frozen with vmbackup.conf's timeout."""
    monkeypatch.setenv("VMSNAP_FREEZE_MOUNTS", "/data,/scratch,/")
    conf = vm.etc / "vmbackup.conf"
    conf.write_text("[SnapshotThread]\ntimeout = 45\nMountsToSkip = /scratch\n")
    freezer = RecordingFreezer()

    element = vm.run(freezer=freezer, vmbackup_conf=conf)

    assert element["status"]["code"] == "1"
    assert freezer.events == [("freeze", ("/data", "/"), 45), ("thaw",)]


def test_a_freeze_failure_takes_no_snapshot(vm):
    """A mount that cannot be frozen: the freezer's code (121) and no snapshot."""
    freezer = RecordingFreezer(fail=FreezeError(ExtensionCode.FailedRetryableFsFreezeFailed, "busy"))

    element = vm.run(freezer=freezer)

    assert (element["status"]["status"], element["status"]["code"]) == ("error", "121")
    assert health(element) == (128, 121)
    assert "StatusCode.FailedRetryableFsFreezeFailed," in message_of(element)["messageStr"]
    assert vm.snapshots("os.vhd") == []


def test_a_late_thaw_makes_the_snapshots_inconsistent(vm):
    """If the self-thaw deadline passed before the thaw, the run fails with code 2."""
    element = vm.run(freezer=RecordingFreezer(thaw_ok=False))

    assert (element["status"]["status"], element["status"]["code"]) == ("error", "2")
    assert "inconsistent" in message_of(element)["messageStr"]
