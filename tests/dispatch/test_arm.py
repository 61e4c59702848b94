"""The ARM dispatcher, with an azure-core transport that records requests (no Azure needed)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.adapters.dispatch_arm import ArmDispatcher
from shared.domain.command import build_snapshot_command
from shared.domain.inventory import Disk, Vm, VmKind
from shared.domain.task import SnapshotTask
from shared.errors import PermanentError, TransientError
from shared.ports import DispatchRefused
from tests.dispatch.recording import RecordingTransport, StaticCredential

SUB = "00000000-0000-0000-0000-0000000000aa"
VM_ID = f"/subscriptions/{SUB}/resourceGroups/rg-prod/providers/Microsoft.Compute/virtualMachines/web-1"
OS_URL = "https://acct.blob.core.windows.net/vhds/web-1-os.vhd"
STATUS = "https://acct.blob.core.windows.net/status/j/1.Status.txt?sv=x&sp=rw&sig=STATUSSIG"
LOGS = "https://acct.blob.core.windows.net/status/j/1.Logs.txt?sv=x&sp=rw&sig=LOGSIG"
VM = Vm(name="web-1", kind=VmKind.AZURE, disks=(Disk(lun=-1, blob_url=OS_URL),), resource_id=VM_ID,
        location="westeurope")
NOW = datetime(2025, 3, 1, 2, tzinfo=timezone.utc)
COMMAND = build_snapshot_command(
    SnapshotTask(job_id="j", attempt=1, vm_name="web-1", slot=NOW), VM,
    disk_sas_urls=[OS_URL + "?sv=x&sp=c&sig=DISKSIG"], status_blob_sas=STATUS, log_blob_sas=LOGS, now=NOW)


def _dispatcher(transport) -> ArmDispatcher:
    return ArmDispatcher(StaticCredential(), SUB, transport=transport, retry_total=0)


def test_request_puts_the_extension_on_the_vm():
    """One PUT names the VM's extension VMSnapshotLinux and carries the full command."""
    transport = RecordingTransport()
    _dispatcher(transport).dispatch(VM, COMMAND)
    assert len(transport.requests) == 1          # accepted: no polling, no waiting for the snapshot
    request = transport.requests[0]
    url = urlsplit(request.url)
    assert request.method == "PUT"
    assert url.netloc == "management.azure.com"
    assert url.path == (f"/subscriptions/{SUB}/resourceGroups/rg-prod/providers/Microsoft.Compute/"
                        f"virtualMachines/web-1/extensions/VMSnapshotLinux")
    assert parse_qs(url.query)["api-version"] == ["2026-04-01"]      # pinned by azure-mgmt-compute 39
    assert request.headers["Authorization"] == "Bearer token"
    body = json.loads(request.content)
    assert body == {
        "location": "westeurope",
        "properties": {
            "publisher": "Microsoft.Azure.RecoveryServices",
            "type": "VMSnapshotLinux",
            "typeHandlerVersion": "1.9",
            "autoUpgradeMinorVersion": True,
            "forceUpdateTag": "j_1",
            "settings": COMMAND.public_settings,
            "protectedSettings": COMMAND.protected_settings,
        },
    }


def test_each_task_forces_enable_again():
    """A second attempt sends a new forceUpdateTag, so the platform reruns enable."""
    transport = RecordingTransport()
    second = build_snapshot_command(
        SnapshotTask(job_id="j", attempt=2, vm_name="web-1", slot=NOW), VM,
        disk_sas_urls=[OS_URL + "?sv=x&sp=c&sig=D2"], status_blob_sas=STATUS, log_blob_sas=LOGS, now=NOW)
    dispatcher = _dispatcher(transport)
    dispatcher.dispatch(VM, COMMAND)
    dispatcher.dispatch(VM, second)
    tags = [json.loads(r.content)["properties"]["forceUpdateTag"] for r in transport.requests]
    assert tags == ["j_1", "j_2"]


def _arm_error(status: int, code: str, headers: dict | None = None) -> RecordingTransport:
    return RecordingTransport(status, {"error": {"code": code, "message": f"{code} happened"}}, headers)


def test_missing_vm_fails_for_good_naming_it():
    """A deleted VM fails the job with a VM-not-found error naming the VM."""
    with pytest.raises(DispatchRefused, match="web-1.*BCMV2VMNotFound") as caught:
        _dispatcher(_arm_error(404, "ResourceNotFound")).dispatch(VM, COMMAND)
    assert caught.value.error_code == "UserErrorVmNotFound"


def test_forbidden_names_the_role_to_grant():
    """Without rights on the VM the error says which role the worker needs."""
    with pytest.raises(DispatchRefused, match="web-1") as caught:
        _dispatcher(_arm_error(403, "AuthorizationFailed")).dispatch(VM, COMMAND)
    assert "Virtual Machine Contributor" in caught.value.recommendation


@pytest.mark.parametrize("status,code", [(409, "OperationNotAllowed"), (429, "TooManyRequests"),
                                         (500, "InternalServerError"), (503, "ServiceUnavailable")])
def test_busy_or_throttled_is_retried(status, code):
    """Another operation on the VM, throttling or an outage: the message is retried later."""
    with pytest.raises(TransientError, match=str(status)):
        _dispatcher(_arm_error(status, code)).dispatch(VM, COMMAND)


def test_other_refusals_are_permanent():
    """A bad request fails the job with ARM's own error code in the message."""
    with pytest.raises(DispatchRefused, match="InvalidParameter"):
        _dispatcher(_arm_error(400, "InvalidParameter")).dispatch(VM, COMMAND)


def test_errors_carry_no_protected_setting():
    """Even when ARM echoes a SAS in its error, the raised error shows no signature."""
    transport = RecordingTransport(400, {"error": {"code": "InvalidParameter",
                                                   "message": f"bad statusBlobUri {STATUS}"}})
    with pytest.raises(DispatchRefused) as caught:
        _dispatcher(transport).dispatch(VM, COMMAND)
    assert "STATUSSIG" not in str(caught.value)


@pytest.mark.parametrize("vm,match", [
    (Vm(name="local-1", kind=VmKind.LOCAL, disks=VM.disks, location="westeurope"), "no ARM resource id"),
    (Vm(name="web-1", kind=VmKind.AZURE, disks=VM.disks, location="westeurope",
        resource_id=VM_ID.replace(SUB, "11111111-0000-0000-0000-000000000000")), "subscription"),
    (Vm(name="web-1", kind=VmKind.AZURE, disks=VM.disks, resource_id=VM_ID), "no location"),
])
def test_vms_arm_cannot_reach_fail_before_any_request(vm, match):
    """A VM without a usable ARM id or location fails clearly and nothing is sent."""
    transport = RecordingTransport()
    with pytest.raises(PermanentError, match=match):
        _dispatcher(transport).dispatch(vm, COMMAND)
    assert transport.requests == []
