"""A scripted ARM for adapter tests in the unit tier: an azure-core transport that answers each
``(method, path)`` from a queue of canned responses (the last one repeats) and keeps every request, so
the unmodified ``azure-mgmt-compute`` client and the adapter run without a socket."""
from __future__ import annotations

import json
from urllib.parse import urlsplit

from tests.dispatch.recording import RecordingTransport, StaticCredential, canned_response

__all__ = ["ScriptedArm", "StaticCredential", "arm_error", "restore_point_body"]

SUB = "00000000-0000-0000-0000-0000000000aa"
GROUP = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute"
VM_ID = f"{GROUP}/virtualMachines/vm1"
OS_DISK = f"{GROUP}/disks/vm1-os"


def arm_error(code: str, message: str) -> dict:
    """ARM's error body (the spec's CloudError)."""
    return {"error": {"code": code, "message": message}}


def restore_point_body(name: str, *, state: str = "Creating", mode: str = "ApplicationConsistent") -> dict:
    """A restore point as RestorePoint_Create.json (ComputeRP 2026-04-01) shapes it: one OS disk."""
    point = f"{GROUP}/restorePointCollections/vmsnap-vm1/restorePoints/{name}"
    return {"name": name, "id": point, "properties": {
        "sourceMetadata": {"vmId": "0b9f3c52-6a0e-4d1e-9f43-2c7f8f1d2a10", "location": "westeurope",
                           "storageProfile": {"osDisk": {
                               "osType": "Linux", "name": "vm1-os",
                               "managedDisk": {"id": OS_DISK, "storageAccountType": "Premium_LRS"},
                               "diskRestorePoint": {"id": f"{point}/diskRestorePoints/vm1-os_1"}},
                               "dataDisks": []}},
        "provisioningState": state, "consistencyMode": mode, "timeCreated": "2026-01-15T08:30:00+00:00"}}


class ScriptedArm(RecordingTransport):
    """Answers ``(METHOD, path)`` from ``script``: a list of ``(status, body, headers)`` per key, used in
    order, the last repeating; anything unscripted is ARM's 404."""

    def __init__(self, script: dict[tuple[str, str], list[tuple[int, object, dict]]]):
        super().__init__()
        self.script = {(method.upper(), path.lower()): list(answers) for (method, path), answers in script.items()}

    def send(self, request, **kwargs):
        self.requests.append(request)
        answers = self.script.get((request.method.upper(), urlsplit(request.url).path.lower()))
        status, body, headers = (answers.pop(0) if len(answers) > 1 else answers[0]) if answers else (
            404, arm_error("NotFound", "not scripted"), {})
        return canned_response(request, status, b"" if body is None else json.dumps(body).encode(), headers)

    def bodies(self, method: str, path_end: str) -> list[dict]:
        """The JSON bodies sent with ``method`` to paths ending in ``path_end``."""
        return [json.loads(r.body) for r in self.requests
                if r.method == method and urlsplit(r.url).path.endswith(path_end) and r.body]
