"""The extension command: exactly what the real VMSnapshotLinux handler reads (docs/extension-contract.md)."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pytest

from extension.settings import parse_settings
from shared.domain.command import build_snapshot_command, decode_object_str, to_extension_resource
from shared.domain.inventory import Disk, Vm, VmKind
from shared.domain.task import SnapshotTask, Trigger
from shared.errors import ValidationError

JOB = "0f6c1e2a-7b1d-4a57-9c0e-2d8e1c4b9a11"
NOW = datetime(2025, 3, 1, 2, 0, tzinfo=timezone.utc)
OS_URL = "https://acct.blob.core.windows.net/vhds/vm1-os.vhd"
DATA_URL = "https://acct.blob.core.windows.net/vhds/vm1-0.vhd"
SAS = "?sv=2026-10-06&st=2025-03-01T01%3A45%3A00Z&se=2025-03-01T04%3A50%3A00Z&sr=b&sp=c&sig=AAAA%3D"
STATUS = ("https://acct.blob.core.windows.net/vmsnap-status/" + JOB + "/1.Status.txt"
          "?sv=2026-10-06&sr=b&sp=rw&sig=BBBB%3D")
LOGS = ("https://acct.blob.core.windows.net/vmsnap-status/" + JOB + "/1.Logs.txt"
        "?sv=2026-10-06&sr=b&sp=rw&sig=CCCC%3D")

VM = Vm(name="vm1", kind=VmKind.AZURE, location="westeurope",
        resource_id="/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
        disks=(Disk(lun=-1, blob_url=OS_URL), Disk(lun=0, blob_url=DATA_URL)))
TASK = SnapshotTask(job_id=JOB, attempt=1, vm_name="vm1", slot=NOW, trigger=Trigger.SCHEDULED,
                    policy_name="DefaultPolicy", retain_until=datetime(2025, 3, 31, 2, tzinfo=timezone.utc))

# Written by hand from docs/extension-contract.md, with each objectStr shown decoded.
EXPECTED = {
    "settings": {
        "locale": "en-us",
        "taskId": JOB + "_1",
        "commandToExecute": "snapshot",
        "commandStartTimeUTCTicks": "638763912000000000",
        "vmType": "microsoft.compute/virtualmachines",
        "objectStr": {
            "backupMetadata": [
                {"Key": "jobId", "Value": JOB},
                {"Key": "taskId", "Value": JOB + "_1"},
                {"Key": "vmName", "Value": "vm1"},
                {"Key": "slot", "Value": "2025-03-01T02:00:00Z"},
                {"Key": "trigger", "Value": "Scheduled"},
                {"Key": "policyName", "Value": "DefaultPolicy"},
                {"Key": "retainUntil", "Value": "2025-03-31T02:00:00Z"},
            ],
            "snapshotTaskToken": "",
            "includedDisks": {"dataDiskLunList": [0], "isOSDiskIncluded": True, "isAnyDiskExcluded": False},
        },
        "customSettings": {"takeSnapshotFrom": "onlyGuest", "isManagedVm": False},
    },
    "protectedSettings": {
        "objectStr": {"blobSASUri": [OS_URL + SAS, DATA_URL + SAS]},
        "logsBlobUri": LOGS,
        "statusBlobUri": STATUS,
    },
}


def _command():
    return build_snapshot_command(TASK, VM, disk_sas_urls=[OS_URL + SAS, DATA_URL + SAS],
                                  status_blob_sas=STATUS, log_blob_sas=LOGS, now=NOW)


def _decoded(command) -> dict:
    public = dict(command.public_settings)
    public["objectStr"] = decode_object_str(public["objectStr"])
    public["customSettings"] = json.loads(public["customSettings"])
    protected = dict(command.protected_settings)
    protected["objectStr"] = decode_object_str(protected["objectStr"])
    return {"settings": public, "protectedSettings": protected}


def test_golden_command():
    """For a fixed task and clock the VM receives exactly the documented settings, nothing more."""
    assert _decoded(_command()) == EXPECTED


def test_object_strings_decode_the_way_the_handler_decodes_them():
    """Both objectStr values are base64 of ASCII JSON that survives the handler's strip("'") step."""
    command = _command()
    for value in (command.public_settings["objectStr"], command.protected_settings["objectStr"]):
        text = base64.b64decode(value, validate=True).decode("ascii")
        assert text == text.strip().strip("'")
        json.loads(text)


# Field -> type as the seed schema (doc) and the real handler's reader (main/parameterparser.py; docs/extension-contract.md) expect them.
PUBLIC_SCHEMA = {"locale": str, "taskId": str, "commandToExecute": str, "commandStartTimeUTCTicks": str,
                 "vmType": str, "objectStr": str, "customSettings": str}
PROTECTED_SCHEMA = {"objectStr": str, "logsBlobUri": str, "statusBlobUri": str}


def test_field_names_and_types_match_the_schema():
    """Every field is one the seed schema or the handler reads, with the type it expects."""
    command = _command()
    assert {k: type(v) for k, v in command.public_settings.items()} == PUBLIC_SCHEMA
    assert {k: type(v) for k, v in command.protected_settings.items()} == PROTECTED_SCHEMA
    assert command.public_settings["commandStartTimeUTCTicks"].isdigit()
    public_object = decode_object_str(command.public_settings["objectStr"])
    assert all(set(pair) == {"Key", "Value"} and all(isinstance(v, str) for v in pair.values())
               for pair in public_object["backupMetadata"])
    disks = public_object["includedDisks"]
    assert all(isinstance(lun, int) for lun in disks["dataDiskLunList"])
    assert isinstance(disks["isOSDiskIncluded"], bool)
    sas = decode_object_str(command.protected_settings["objectStr"])["blobSASUri"]
    assert isinstance(sas, list) and all("?" in uri for uri in sas)   # the handler appends &comp=...


def test_the_bundled_handler_reads_the_command_back():
    """The VM-side reader finds the task, the disks, the SAS URIs and the guest-only method."""
    command = _command()
    read = parse_settings(command.public_settings, command.protected_settings)
    assert read.task_id == JOB + "_1"
    assert read.command == "snapshot"
    assert read.is_v2
    assert sorted(read.lun_list) == [-1, 0]
    assert read.blob_sas_uris == (OS_URL + SAS, DATA_URL + SAS)
    assert read.status_blob_uri == STATUS and read.logs_blob_uri == LOGS
    assert read.snapshot_method() == "onlyGuest"
    assert {p["Key"] for p in read.backup_metadata} >= {"jobId", "taskId", "vmName", "retainUntil"}


def test_extension_resource_for_arm():
    """The resource names the Azure Backup extension, and a new taskId forces enable to run again."""
    resource = to_extension_resource(_command(), VM, redact=False)
    props = resource["properties"]
    assert resource["location"] == "westeurope"
    assert (props["publisher"], props["type"], props["typeHandlerVersion"]) == (
        "Microsoft.Azure.RecoveryServices", "VMSnapshotLinux", "1.9")
    assert props["autoUpgradeMinorVersion"] is True
    assert props["forceUpdateTag"] == JOB + "_1"
    assert props["settings"] == _command().public_settings
    assert props["protectedSettings"] == _command().protected_settings


def test_redacted_resource_hides_every_protected_value():
    """The preview shows all public settings but no protected value, and no SAS signature at all."""
    resource = to_extension_resource(_command(), VM)
    assert resource["properties"]["protectedSettings"] == {
        "objectStr": "<redacted>", "logsBlobUri": "<redacted>", "statusBlobUri": "<redacted>"}
    text = json.dumps(resource)
    assert "sig=" not in text and _command().protected_settings["objectStr"] not in text


def test_repr_never_shows_protected_values():
    """Printing or logging a command shows its taskId, never a SAS."""
    command = _command()
    for text in (repr(command), str(command), f"{command}", repr([command])):
        assert "sig=" not in text and command.protected_settings["objectStr"] not in text
        assert JOB + "_1" in text


def test_os_disk_only_vm():
    """A VM with only an OS disk asks for the OS disk and an empty data-disk list."""
    vm = Vm(name="vm1", kind=VmKind.LOCAL, disks=(Disk(lun=-1, blob_url=OS_URL),))
    command = build_snapshot_command(TASK, vm, disk_sas_urls=[OS_URL + SAS], status_blob_sas=STATUS,
                                     log_blob_sas=LOGS, now=NOW)
    assert decode_object_str(command.public_settings["objectStr"])["includedDisks"] == {
        "dataDiskLunList": [], "isOSDiskIncluded": True, "isAnyDiskExcluded": False}


@pytest.mark.parametrize("disk_urls,status", [
    ([OS_URL + SAS], STATUS),                        # one URL for two disks
    ([DATA_URL + SAS, OS_URL + SAS], STATUS),        # not in disk order
    ([OS_URL, DATA_URL + SAS], STATUS),              # no SAS: the handler's "&comp=" would break
    ([OS_URL + SAS, DATA_URL + SAS], STATUS.split("?")[0]),
])
def test_inconsistent_inputs_are_refused(disk_urls, status):
    """A command that could not work on the VM is never built."""
    with pytest.raises(ValidationError):
        build_snapshot_command(TASK, VM, disk_sas_urls=disk_urls, status_blob_sas=status,
                               log_blob_sas=LOGS, now=NOW)
