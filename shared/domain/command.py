"""The VMSnapshot extension command: public and protected settings, field for field as the real
Linux handler reads them (``main/parameterparser.py``), built from a task by a pure function.

Only the protected settings carry SAS URIs; the command's ``repr`` never shows them.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Sequence
from urllib.parse import urlsplit

from shared.clock import utc
from shared.domain.bloburl import base_of
from shared.domain.inventory import Vm
from shared.domain.task import SnapshotTask
from shared.domain.ticks import ticks_string
from shared.errors import ValidationError

PUBLISHER = "Microsoft.Azure.RecoveryServices"
EXTENSION_TYPE = "VMSnapshotLinux"
EXTENSION_NAME = "VMSnapshotLinux"        # the name Azure Backup gives the extension on the VM
TYPE_HANDLER_VERSION = "1.9"
VM_TYPE = "microsoft.compute/virtualmachines"   # V2; without vmType the handler writes no status
SNAPSHOT_COMMAND = "snapshot"
# The handler refuses a command more than 140 min after commandStartTimeUTCTicks (error 402;
# docs/extension-contract.md). The one place the number lives: SAS lifetimes and job deadlines derive from it.
EXTENSION_WINDOW = timedelta(minutes=140)
REDACTED = "<redacted>"


@dataclass(frozen=True)
class ExtensionCommand:
    """What one dispatch hands to the VM: ``settings`` and ``protectedSettings`` of the extension."""

    public_settings: dict[str, Any]
    protected_settings: dict[str, Any] = field(repr=False)

    @property
    def task_id(self) -> str:
        return str(self.public_settings["taskId"])

    def __repr__(self) -> str:
        return f"ExtensionCommand(task_id={self.task_id!r}, protected_settings={REDACTED!r})"

    __str__ = __repr__


def build_snapshot_command(task: SnapshotTask, vm: Vm, *, disk_sas_urls: Sequence[str],
                           status_blob_sas: str, log_blob_sas: str, now: datetime,
                           locale: str = "en-us") -> ExtensionCommand:
    """The command for one attempt of ``task`` on ``vm``.

    ``disk_sas_urls`` follow ``vm.disks`` in order (the handler reports per-disk results by that
    index). ``now`` becomes ``commandStartTimeUTCTicks``; the handler refuses the command 140 min
    later.
    """
    if not vm.disks:
        raise ValidationError(f"VM {vm.name!r} has no disks to snapshot", field="disks")
    if len(disk_sas_urls) != len(vm.disks):
        raise ValidationError(f"{len(disk_sas_urls)} disk SAS URLs for {len(vm.disks)} disks of VM "
                              f"{vm.name!r}", field="disk_sas_urls")
    for disk, url in zip(vm.disks, disk_sas_urls):
        _require_sas_for(url, disk.blob_url, "disk_sas_urls")
    for name, url in (("status_blob_sas", status_blob_sas), ("log_blob_sas", log_blob_sas)):
        _require_sas_for(url, None, name)

    public_object = {
        # Each pair becomes an x-ms-meta-<Key> header on every disk snapshot.
        "backupMetadata": backup_metadata(task),
        "snapshotTaskToken": "",
        "includedDisks": {
            "dataDiskLunList": vm.data_disk_luns,
            "isOSDiskIncluded": vm.has_os_disk,
            "isAnyDiskExcluded": False,
        },
    }
    public = {
        "locale": locale,
        "taskId": task.task_id,
        "commandToExecute": SNAPSHOT_COMMAND,
        "commandStartTimeUTCTicks": ticks_string(now),
        "vmType": VM_TYPE,
        "objectStr": encode_object_str(public_object),
        # onlyGuest: we always hand over SAS URIs, and off Azure the host path (168.63.129.16)
        # only adds a slow failing call. isManagedVm false: the disks are blobs we can SAS.
        "customSettings": json.dumps({"takeSnapshotFrom": "onlyGuest", "isManagedVm": False},
                                     separators=(",", ":")),
    }
    protected = {
        "objectStr": encode_object_str({"blobSASUri": list(disk_sas_urls)}),
        "logsBlobUri": log_blob_sas,
        "statusBlobUri": status_blob_sas,
    }
    return ExtensionCommand(public_settings=public, protected_settings=protected)


def backup_metadata(task: SnapshotTask) -> list[dict[str, str]]:
    """The ``{"Key","Value"}`` pairs stamped on each snapshot, so a snapshot names its job."""
    pairs = [("jobId", task.job_id), ("taskId", task.task_id), ("vmName", task.vm_name),
             ("slot", _iso(task.slot)), ("trigger", task.trigger.value)]
    if task.policy_name:
        pairs.append(("policyName", task.policy_name))
    if task.retain_until is not None:
        pairs.append(("retainUntil", _iso(task.retain_until)))
    return [{"Key": key, "Value": value} for key, value in pairs]


def encode_object_str(obj: dict[str, Any]) -> str:
    """base64 of ASCII JSON: the handler decodes base64 -> ASCII -> strip -> strip("'") -> JSON."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=True)
    return base64.b64encode(text.encode("ascii")).decode("ascii")


def decode_object_str(value: str) -> Any:
    """The inverse of :func:`encode_object_str`, done the way the real handler does it."""
    return json.loads(base64.b64decode(value).decode("ascii").strip().strip("'"))


def to_extension_resource(command: ExtensionCommand, vm: Vm, *, redact: bool = True) -> dict[str, Any]:
    """The ARM extension resource that carries ``command`` to ``vm`` (as a template would show it).

    With ``redact`` (the default) every protected value reads ``<redacted>``: only the ARM
    dispatcher asks for the real values, and it sends them straight to the Compute API.
    """
    protected = ({key: REDACTED for key in command.protected_settings} if redact
                 else dict(command.protected_settings))
    resource: dict[str, Any] = {
        "name": f"{vm.name}/{EXTENSION_NAME}",
        "type": "Microsoft.Compute/virtualMachines/extensions",
        "properties": {
            "publisher": PUBLISHER,
            "type": EXTENSION_TYPE,
            "typeHandlerVersion": TYPE_HANDLER_VERSION,
            "autoUpgradeMinorVersion": True,
            # A new tag per task makes the platform run enable again even if nothing else changed.
            "forceUpdateTag": command.task_id,
            "settings": json.loads(json.dumps(command.public_settings)),
            "protectedSettings": protected,
        },
    }
    if vm.location:
        resource["location"] = vm.location
    return resource


def _require_sas_for(url: str, blob_url: str | None, name: str) -> None:
    # The handler appends "&comp=..." to each URI, so a URI without a query string cannot work.
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.query:
        raise ValidationError(f"{name} must be blob URLs with a SAS query string", field=name)
    if blob_url is not None and base_of(url) != base_of(blob_url):
        raise ValidationError(f"{name} is not in the order of the VM's disks", field=name)


def _iso(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")
