"""The Compute API inventory, against canned ARM responses through an injected azure-core transport."""
from __future__ import annotations

import io
import json
import time

import pytest
import requests
import urllib3
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._requests_basic import RestRequestsTransportResponse

from shared.adapters.compute_inventory import ComputeInventory
from shared.domain.inventory import BackupMethod, VmKind
from shared.errors import NotFoundError, ValidationError

SUB = "00000000-0000-0000-0000-000000000001"
VM_ID = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/classic"


class FakeCredential:
    def get_token(self, *scopes, **kwargs):
        return AccessToken("token", int(time.time()) + 3600)


class CannedArm(HttpTransport):
    """Answers ARM requests from a dict of path -> (status, JSON body) and records the requests."""

    def __init__(self, routes: dict):
        self.routes = routes
        self.seen: list = []

    def send(self, request, **kwargs):
        self.seen.append(request)
        path = request.url.split("management.azure.com", 1)[1].split("?", 1)[0]
        status, body = self.routes.get(path, (404, {"error": {"code": "ResourceNotFound", "message": "nope"}}))
        data = json.dumps(body).encode()
        raw = requests.Response()
        raw.status_code, raw.url = status, request.url
        raw.raw = urllib3.HTTPResponse(body=io.BytesIO(data), status=status, preload_content=False)
        raw.headers["Content-Type"] = "application/json"
        return RestRequestsTransportResponse(request=request, internal_response=raw)

    def open(self):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *args):
        pass


def vm_body(name: str, *, managed: bool = False) -> dict:
    vhd = "https://acct.blob.core.windows.net/vhds"
    os_disk = {"name": f"{name}-os", "osType": "Linux", "createOption": "FromImage", "diskSizeGB": 30}
    data = {"lun": 0, "name": f"{name}-data0", "createOption": "Empty", "diskSizeGB": 128}
    if managed:
        os_disk["managedDisk"] = {"id": "/subscriptions/x/disks/os", "storageAccountType": "Premium_LRS"}
        data["managedDisk"] = {"id": "/subscriptions/x/disks/d0"}
    else:
        os_disk["vhd"] = {"uri": f"{vhd}/{name}-os.vhd"}
        data["vhd"] = {"uri": f"{vhd}/{name}-data0.vhd"}
    return {"id": VM_ID.replace("classic", name), "name": name, "location": "westeurope",
            "properties": {"storageProfile": {"osDisk": os_disk, "dataDisks": [data]}}}


def inventory(routes: dict) -> tuple[ComputeInventory, CannedArm]:
    transport = CannedArm(routes)
    return ComputeInventory(FakeCredential(), SUB, transport=transport), transport


def test_vm_on_unmanaged_disks_is_read_by_resource_id():
    """An Azure VM on page-blob disks is found by its id, with OS disk LUN -1 and its data disks."""
    inv, transport = inventory({f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/"
                                f"virtualMachines/classic": (200, vm_body("classic"))})
    vm = inv.get_vm(VM_ID)
    assert (vm.kind, vm.location, vm.resource_id) == (VmKind.AZURE, "westeurope", VM_ID)
    assert [(d.lun, d.blob_url, d.size_bytes) for d in vm.disks] == [
        (-1, "https://acct.blob.core.windows.net/vhds/classic-os.vhd", 30 * 2**30),
        (0, "https://acct.blob.core.windows.net/vhds/classic-data0.vhd", 128 * 2**30)]
    (request,) = transport.seen
    assert request.method == "GET" and "api-version=" in request.url
    assert request.headers["Authorization"] == "Bearer token"


def test_vm_found_by_name_across_the_subscription():
    """A plain VM name is looked up in the subscription's VM list."""
    inv, _ = inventory({f"/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines":
                        (200, {"value": [vm_body("classic"), vm_body("other")]})})
    assert inv.get_vm("CLASSIC").name == "classic"
    with pytest.raises(NotFoundError, match="ghost"):
        inv.get_vm("ghost")


def test_vm_with_managed_disks_is_read_with_each_disk_kind():
    """A VM on managed disks is found by its id in one GET, each disk known by its managed disk id."""
    inv, transport = inventory({f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/"
                                f"virtualMachines/modern": (200, vm_body("modern", managed=True))})
    vm = inv.get_vm(VM_ID.replace("classic", "modern"))
    assert [(d.lun, d.method, d.managed_disk_id, d.blob_url) for d in vm.disks] == [
        (-1, BackupMethod.RESTORE_POINT, "/subscriptions/x/disks/os", ""),
        (0, BackupMethod.RESTORE_POINT, "/subscriptions/x/disks/d0", "")]
    assert vm.backup_method() is BackupMethod.RESTORE_POINT
    assert len(transport.seen) == 1 and "/virtualMachines/modern" in transport.seen[0].url


def test_vm_on_page_blobs_uses_the_extension_command():
    """A VM on unmanaged disks keeps the extension-command method, its disks marked page blobs."""
    inv, _ = inventory({f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/"
                        f"virtualMachines/classic": (200, vm_body("classic"))})
    vm = inv.get_vm(VM_ID)
    assert {d.method for d in vm.disks} == {BackupMethod.EXTENSION_COMMAND}
    assert vm.backup_method() is BackupMethod.EXTENSION_COMMAND


def test_vm_mixing_managed_and_page_blob_disks_is_refused_clearly():
    """A VM with both kinds of disk is refused with what to do (convert to managed disks)."""
    body = vm_body("mixed", managed=True)
    body["properties"]["storageProfile"]["dataDisks"][0] = {
        "lun": 0, "name": "old", "createOption": "Attach", "vhd": {"uri": "https://a.blob.core.windows.net/v/o.vhd"}}
    inv, _ = inventory({f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/"
                        f"virtualMachines/mixed": (200, body)})
    vm = inv.get_vm(VM_ID.replace("classic", "mixed"))
    with pytest.raises(ValidationError, match="mixes managed disks .* convert") as caught:
        vm.backup_method()
    assert caught.value.field == "vm"


def test_missing_vm_by_id_is_not_found():
    """An id that ARM does not know is reported as not found."""
    inv, _ = inventory({})
    with pytest.raises(NotFoundError):
        inv.get_vm(VM_ID)
