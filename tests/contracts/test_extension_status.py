"""The ExtensionStatusReader contract (the second channel for the extension's result: what the VM agent last
reported to the control plane), on the fake and on ArmDispatcher under the unmodified Compute client, ARM's
answers scripted as the Compute API gives them (the local Compute endpoint serves no VM extensions, and the
local dispatcher reads none back): the reported status document comes back as written; a VM or extension
that is gone, or one that reported nothing yet, gives None (never NotFoundError); throttling, an outage or
no answer at all is a TransientError; a refusal a PermanentError that names what to grant, and carries no
token."""
from __future__ import annotations

import json
from typing import Callable

import pytest
from azure.core.exceptions import ServiceRequestError

from shared.adapters.dispatch_arm import ArmDispatcher
from shared.domain.inventory import Disk, Vm, VmKind
from shared.errors import NotFoundError, PermanentError, TransientError
from shared.ports import ExtensionStatusReader
from tests.contracts.conftest import REAL
from tests.dispatch.recording import RecordingTransport, StaticCredential
from tests.fakes import ReportingDispatcher

PORTS = (ExtensionStatusReader,)

SUB = "00000000-0000-0000-0000-0000000000aa"
VM = Vm(name="Web-1", kind=VmKind.AZURE, disks=(Disk(lun=-1, blob_url="https://acct.blob.core.windows.net/v/os.vhd"),),
        resource_id=f"/subscriptions/{SUB}/resourceGroups/rg-prod/providers/Microsoft.Compute/virtualMachines/Web-1",
        location="westeurope")
REPORT = json.dumps([{"version": 1.0, "timestampUTC": "2026-12-06T22:00:00Z", "status": {
    "name": "VMSnapshotLinux", "operation": "Enable", "status": "success", "code": 1,
    "formattedMessage": {"lang": "en-US", "message": "snapshot taken: é ✓"}}}]).encode()

# What the control plane has or answers: the status document a handler reported, an extension that
# reported none yet, a VM or extension that is gone, throttling or an outage, a refusal, or no answer.
SITUATIONS = ("reported", "nothing yet", "gone", "throttled", "outage", "refused", "unreachable")


def _extension(substatuses: list[dict]) -> dict:
    return {"name": "VMSnapshotLinux", "location": "westeurope", "properties": {
        "provisioningState": "Succeeded", "instanceView": {
            "name": "VMSnapshotLinux", "type": "Microsoft.Azure.RecoveryServices.VMSnapshotLinux",
            "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info",
                          "displayStatus": "Provisioning succeeded"}],
            "substatuses": substatuses}}}


def _arm_error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


class _Unreachable(RecordingTransport):
    def send(self, request, **kwargs):
        raise ServiceRequestError("connection refused by management.azure.com")


_ARM = {
    "reported": (200, _extension([{"code": "ComponentStatus/VMSnapshotLinux/succeeded", "level": "Info",
                                   "displayStatus": "Provisioning succeeded", "message": REPORT.decode()}])),
    "nothing yet": (200, _extension([])),
    "gone": (404, _arm_error("ResourceNotFound", "The Resource 'Microsoft.Compute/virtualMachines/Web-1' under "
                                                 "resource group 'rg-prod' was not found.")),
    "throttled": (429, _arm_error("TooManyRequests", "The request is being throttled.")),
    "outage": (503, _arm_error("ServiceUnavailable", "The service is temporarily unavailable.")),
    "refused": (403, _arm_error("AuthorizationFailed", "The client does not have authorization to perform action "
                                                       "'Microsoft.Compute/virtualMachines/extensions/read'.")),
}


def _fake(situation: str) -> ExtensionStatusReader:
    fake = ReportingDispatcher()
    if situation == "reported":
        fake.reports[VM.name.lower()] = REPORT
    elif situation in ("throttled", "outage", "unreachable"):
        fake.outage = TransientError(f"ARM could not be reached for VM {VM.name} ({situation})")
    elif situation == "refused":
        fake.outage = PermanentError(f"the worker's identity may not read extension VMSnapshotLinux on VM {VM.name} "
                                     f"(403); grant it 'Reader' on the VM")
    return fake


def _arm(situation: str) -> ExtensionStatusReader:
    if situation == "unreachable":
        transport: RecordingTransport = _Unreachable()
    else:
        status, body = _ARM[situation]
        transport = RecordingTransport(status, body)
    return ArmDispatcher(StaticCredential(), SUB, transport=transport, retry_total=0)


@pytest.fixture(params=["fake", REAL("arm")])
def status_reader(request) -> Callable[[str], ExtensionStatusReader]:
    """A reader whose control plane is in the given situation (one of SITUATIONS)."""
    return _fake if request.param == "fake" else _arm


def test_both_offer_the_second_channel(status_reader):
    assert all(isinstance(status_reader(s), ExtensionStatusReader) for s in SITUATIONS)


def test_the_reported_status_document_comes_back_as_written(status_reader):
    assert json.loads(status_reader("reported").extension_status(VM)) == json.loads(REPORT)


@pytest.mark.parametrize("situation", ["nothing yet", "gone"])
def test_nothing_reported_or_nothing_there_is_none_not_an_error(status_reader, situation):
    """The sweep asks about VMs that may have been deleted since: that is an answer, not a failure."""
    try:
        assert status_reader(situation).extension_status(VM) is None
    except NotFoundError as exc:       # pragma: no cover - the contract's point
        pytest.fail(f"NotFoundError for {situation}: {exc}")


@pytest.mark.parametrize("situation", ["throttled", "outage", "unreachable"])
def test_a_control_plane_that_does_not_answer_now_is_transient(status_reader, situation):
    with pytest.raises(TransientError):
        status_reader(situation).extension_status(VM)


def test_a_refusal_is_permanent_names_the_role_and_carries_no_token(status_reader):
    with pytest.raises(PermanentError) as refused:
        status_reader("refused").extension_status(VM)
    assert not isinstance(refused.value, TransientError)
    assert "Reader" in str(refused.value) and VM.name in str(refused.value)
    assert "Bearer" not in str(refused.value) and "\n" not in str(refused.value)
