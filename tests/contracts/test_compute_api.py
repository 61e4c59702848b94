"""The Compute API contract: the request/response cases vmsnap relies on, each written from the REST API
specification (Compute 2026-04-01, disks 2026-03-02: what the pinned azure-mgmt-compute sends) and the
restore point documentation; docs/compute-contract.md gives each case's source. The suite runs on the
local Compute endpoint in ``./dev test``, and on Azure when ``VMSNAP_AZURE_VM_ID`` names a running Linux
VM with managed disks to try it on (skipped otherwise; docs/testing.md, "Against Azure").

The same assertions hold for both: where Azure's exact answer is not documented (which 4xx code, how
fast), a case asserts only what the specification and the documentation say.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pytest
import requests
from azure.core.rest import HttpRequest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.core.tools import parse_resource_id

from devhost.compute import COMPUTE_API_VERSION, DISK_API_VERSION, LocalCompute
from shared.adapters.restore_points import ARM_ENDPOINT, ComputeRestorePoints
from shared.domain.inventory import OS_DISK_LUN
from shared.domain.jobs import Consistency
from shared.domain.restore_point import collection_name
from tests.polling import eventually

pytestmark = [pytest.mark.integration, pytest.mark.long]

AZURE_VM = "VMSNAP_AZURE_VM_ID"                         # a running Linux VM with managed disks
AZURE_DISK_GROUP = "VMSNAP_AZURE_DISK_RESOURCE_GROUP"    # where restored disks may go (default: the VM's)
AZURE_OTHER_REGION = "VMSNAP_AZURE_OTHER_REGION"         # a region the VM is not in (default: westus or eastus)
LRO_WAIT = 600 if os.environ.get(AZURE_VM) else 60        # seconds an operation may take


@dataclass
class Target:
    """Where the cases run: the endpoint, a VM on it, and how to call it."""

    name: str
    credential: Any
    client: ComputeManagementClient
    base_url: str
    verify: str | bool
    vm_id: str
    location: str
    disk_group: str
    other_region: str
    local: LocalCompute | None = None
    cleanup: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def group_path(self) -> str:
        return self.vm_id.split("/providers/", 1)[0] + "/providers/Microsoft.Compute"

    def call(self, method: str, path: str, body: Any = None, *, api_version: str | None = COMPUTE_API_VERSION,
             query: str = "") -> tuple[int, dict[str, str], Any]:
        """One request through the client's pipeline (its token, retries on 429): status, headers, JSON."""
        params = "&".join(p for p in (f"api-version={api_version}" if api_version else "", query) if p)
        url = path if path.startswith("https://") else f"{self.base_url}{path}"
        request = HttpRequest(method, f"{url}?{params}" if params and "?" not in url else url, json=body)
        response = self.client.send_request(request)
        text = response.text()
        return response.status_code, dict(response.headers), (json.loads(text) if text else None)

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        assert eventually(condition, timeout=LRO_WAIT, interval=0.2 if self.local else 5), f"never: {what}"


def _arm_error(body: Any) -> tuple[str, str]:
    """ARM's error shape, ``{"error": {"code", "message"}}``: (code, message); both must be there."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert error.get("code") and error.get("message"), body
    return error["code"], error["message"]


@pytest.fixture(params=["local", "azure"])
def target(request) -> Iterator[Target]:
    if request.param == "local":
        yield from _local(request)
    else:
        yield from _azure()


def _local(request) -> Iterator[Target]:
    from azure.storage.blob import BlobServiceClient

    connection = request.getfixturevalue("storage_connection_string")
    name = request.getfixturevalue("unique_name")("api")
    tmp_path = request.getfixturevalue("tmp_path")
    container = BlobServiceClient.from_connection_string(connection).get_container_client(name)
    container.create_container()
    disks = []
    for lun in (OS_DISK_LUN, 0):
        blob = container.get_blob_client(f"{name}-{lun}.vhd")
        blob.create_page_blob(64 * 1024)
        disks.append((lun, f"{name}-disk{lun + 1}", blob.url, 64 * 1024))
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("VMSNAP_EXTENSION_ETC", str(tmp_path))      # the VM's /etc/azure: no scripts
    monkeypatch.delenv("VMSNAP_FREEZE_MOUNTS", raising=False)
    with LocalCompute(connection, tmp_path / "vms", replication_seconds=0.5, extension_timeout=60) as compute:
        vm = compute.add_vm(name, disks)
        compute.add_resource_group("contract-disks")
        client = ComputeManagementClient(compute.credential(), compute.subscription_id, retry_total=0,
                                         **compute.client_options())
        yield Target("local", compute.credential(), client, compute.url, str(compute.ca_file), vm.id, "local",
                     "contract-disks", "westeurope", local=compute)
    from devhost.processes import stop_processes_under

    stop_processes_under(tmp_path / "vms")


def _azure() -> Iterator[Target]:
    vm_id = os.environ.get(AZURE_VM)
    if not vm_id:
        pytest.skip(f"set {AZURE_VM} (and sign in: DefaultAzureCredential) to run the contract on Azure")
    from azure.identity import DefaultAzureCredential

    parts = parse_resource_id(vm_id)
    credential = DefaultAzureCredential()
    client = ComputeManagementClient(credential, str(parts["subscription"]))
    location = str(client.virtual_machines.get(parts["resource_group"], parts["name"]).location)
    other = os.environ.get(AZURE_OTHER_REGION) or ("eastus" if location == "westus" else "westus")
    target = Target("azure", credential, client, ARM_ENDPOINT, True, vm_id, location,
                    os.environ.get(AZURE_DISK_GROUP) or str(parts["resource_group"]), other)
    try:
        yield target
    finally:
        for undo in reversed(target.cleanup):
            try:
                undo()
            except Exception as exc:   # best effort: one leftover must not hide the others
                print(f"contract clean-up failed: {exc}")


@pytest.fixture
def collection(target: Target) -> str:
    """A restore point collection of the target's VM (PUT, as RestorePointCollection_CreateOrUpdate.json)."""
    path = f"{target.group_path}/restorePointCollections/vmsnap-contract-{uuid.uuid4().hex[:8]}"
    status, _, body = target.call("PUT", path, {"location": target.location,
                                                "properties": {"source": {"id": target.vm_id}}})
    assert status in (200, 201), body
    target.cleanup.append(lambda: target.call("DELETE", path))
    return path


def _create_point(target: Target, collection: str, name: str, properties: dict | None = None):
    path = f"{collection}/restorePoints/{name}"
    return path, target.call("PUT", path, {"properties": properties or {}})


def _succeeded(target: Target, path: str) -> dict:
    """The restore point once it is Succeeded and every disk restore point copied (GET ?$expand=instanceView)."""
    seen: dict = {}

    def done() -> bool:
        status, _, body = target.call("GET", path, query="$expand=instanceView")
        seen.update(body or {})
        view = (body or {}).get("properties", {}).get("instanceView", {})
        return status == 200 and body["properties"]["provisioningState"] == "Succeeded" and all(
            (d.get("replicationStatus") or {}).get("completionPercent") == 100 for d in view.get("diskRestorePoints", []))
    target.wait(done, f"restore point {path} succeeded and copied")
    return seen


def _restore_disk(target: Target, collection: str, name: str, location: str):
    """A restore point of the VM, then ``PUT disks/<new>`` from its OS disk's restore point in ``location``:
    (disk id, disk restore point id, the PUT's answer)."""
    path, _ = _create_point(target, collection, name)
    source = _succeeded(target, path)["properties"]["sourceMetadata"]["storageProfile"]["osDisk"]["diskRestorePoint"]["id"]
    disk = f"{target.group_path.split('/resourceGroups/')[0]}/resourceGroups/{target.disk_group}/providers/" \
           f"Microsoft.Compute/disks/contract-{uuid.uuid4().hex[:8]}"
    answer = target.call("PUT", disk, {"location": location, "properties": {
        "creationData": {"createOption": "Restore", "sourceResourceId": source}}}, api_version=DISK_API_VERSION)
    return disk, source, answer


def _in_disk_group(target: Target, kind: str, name: str) -> str:
    """The id of a disk or snapshot ``name`` in the target's disk resource group."""
    subscription = target.group_path.split("/resourceGroups/")[0]
    return f"{subscription}/resourceGroups/{target.disk_group}/providers/Microsoft.Compute/{kind}/{name}"


def _storage_profile(target: Target) -> dict:
    return target.call("GET", target.vm_id)[2]["properties"]["storageProfile"]


def _spare_lun(profile: dict) -> int:
    used = {d["lun"] for d in profile.get("dataDisks") or []}
    return next(lun for lun in range(64) if lun not in used)


def _restored(target: Target, collection: str, name: str) -> str:
    """A managed disk restored from the VM's OS disk restore point, Succeeded: its id (deleted afterwards)."""
    disk, _, (status, _, body) = _restore_disk(target, collection, name, target.location)
    assert status in (200, 202), body
    target.cleanup.append(lambda: target.call("DELETE", disk, api_version=DISK_API_VERSION))
    target.wait(lambda: (target.call("GET", disk, api_version=DISK_API_VERSION)[2] or {}).get("properties", {})
                .get("provisioningState") == "Succeeded", "the disk restored")
    return disk


def _update_vm(target: Target, profile: dict) -> tuple[int, dict[str, str], Any]:
    """PATCH virtualMachines/{vm} with this storage profile, then wait for its operation: the PATCH's answer."""
    answer = target.call("PATCH", target.vm_id, {"properties": {"storageProfile": profile}})
    status, headers, _ = answer
    if status == 200 and headers.get("Location"):
        target.wait(lambda: target.call("GET", headers["Location"], api_version=None)[0] != 202, "the VM updated")
    return answer


# --- the cases (docs/compute-contract.md: one section per test, with its source) ----------------------
def test_api_versions_are_the_ones_the_client_sends(target: Target):
    """The local endpoint serves exactly the api-versions the pinned client sends for each call."""
    sent: dict[str, str] = {}

    def keep(request) -> None:
        url = request.http_request.url
        sent[url.split("/providers/Microsoft.Compute/", 1)[1].split("/", 1)[0]] = url.split("api-version=", 1)[1]

    parts = parse_resource_id(target.vm_id)
    client = ComputeManagementClient(target.credential, str(parts["subscription"]),
                                     base_url=target.base_url, connection_verify=target.verify, retry_total=0,
                                     raw_request_hook=keep)
    group = str(parts["resource_group"])
    client.virtual_machines.get(group, str(parts["name"]))
    for call in (lambda: client.restore_point_collections.get(group, "vmsnap-contract-none"),
                 lambda: client.restore_points.get(group, "vmsnap-contract-none", "none"),
                 lambda: client.disks.get(group, "vmsnap-contract-none"),
                 lambda: client.snapshots.get(group, "vmsnap-contract-none")):
        with pytest.raises(Exception):
            call()
    assert sent == {"virtualMachines": COMPUTE_API_VERSION, "restorePointCollections": COMPUTE_API_VERSION,
                    "disks": DISK_API_VERSION, "snapshots": DISK_API_VERSION}


def test_a_request_without_api_version_is_refused_with_an_arm_error(target: Target):
    """No api-version: 400 MissingApiVersionParameter in ARM's error shape."""
    status, _, body = target.call("GET", target.vm_id, api_version=None)
    assert status == 400 and _arm_error(body)[0] == "MissingApiVersionParameter"


def test_an_api_version_the_provider_does_not_serve_is_refused_with_an_arm_error(target: Target):
    """An api-version the resource type does not have: 400 NoRegisteredProviderFound in ARM's error shape."""
    status, _, body = target.call("GET", target.vm_id, api_version="2015-01-01")
    assert status == 400 and _arm_error(body)[0] == "NoRegisteredProviderFound"


def test_a_request_without_a_token_is_refused(target: Target):
    """No bearer token: 401 AuthenticationFailed in ARM's error shape."""
    answer = requests.get(f"{target.base_url}{target.vm_id}", params={"api-version": COMPUTE_API_VERSION},
                          verify=target.verify, timeout=60)
    assert answer.status_code == 401 and _arm_error(answer.json())[0] == "AuthenticationFailed"


def test_the_vm_instance_view_carries_its_power_state(target: Target):
    """GET virtualMachines/{vm}?$expand=instanceView lists a PowerState/<state> status."""
    status, _, body = target.call("GET", target.vm_id, query="$expand=instanceView")
    codes = [s["code"] for s in body["properties"]["instanceView"]["statuses"]]
    assert status == 200 and "PowerState/running" in codes


def test_a_collection_has_the_vm_as_its_source(target: Target, collection: str):
    """The collection answers with its source VM, a provisioning state and its own id."""
    status, _, body = target.call("GET", collection)
    assert status == 200 and body["properties"]["source"]["id"].lower() == target.vm_id.lower()
    assert body["properties"]["provisioningState"] == "Succeeded" and body["properties"]["restorePointCollectionId"]


def test_a_restore_point_create_is_a_location_operation(target: Target, collection: str):
    """PUT restore point without consistencyMode: 201 with Location and Retry-After; the operation at
    Location answers 202 while the restore point is Creating and 200 with it once done; the restore point
    reports application consistency, a disk restore point per disk, and copies to completionPercent 100."""
    if target.local:
        target.local.hold = True
    path, (status, headers, body) = _create_point(target, collection, "contract-create")
    assert status == 201 and headers.get("Location") and int(headers["Retry-After"]) >= 1
    assert body["properties"]["provisioningState"] in ("Creating", "Succeeded")
    if target.local:
        assert target.call("GET", headers["Location"], api_version=None)[0] == 202
        target.local.hold = False
    target.wait(lambda: target.call("GET", headers["Location"], api_version=None)[0] == 200, "the operation done")
    point = _succeeded(target, path)["properties"]
    assert point["consistencyMode"] == "ApplicationConsistent"
    assert point["sourceMetadata"]["storageProfile"]["osDisk"]["diskRestorePoint"]["id"]
    drps = point["instanceView"]["diskRestorePoints"]
    assert drps and all(d["replicationStatus"]["status"]["code"] == "ReplicationState/succeeded" for d in drps)


def test_an_existing_restore_point_cannot_be_created_again(target: Target, collection: str):
    """A second PUT of an existing restore point is refused with 409 in ARM's error shape (updating an
    existing restore point is not allowed)."""
    path, (status, _, _) = _create_point(target, collection, "contract-twice")
    assert status == 201
    _succeeded(target, path)
    status, _, body = target.call("PUT", path, {"properties": {}})
    assert status == 409 and _arm_error(body)


@pytest.mark.parametrize("mode", ["ApplicationConsistent", "FileSystemConsistent"])
def test_consistency_mode_is_taken_as_input_only_as_crash_consistent(target: Target, collection: str, mode: str):
    """consistencyMode other than CrashConsistent in a create: 400 in ARM's error shape, nothing created."""
    path, (status, _, body) = _create_point(target, collection, f"contract-{mode.lower()}", {"consistencyMode": mode})
    assert status == 400 and _arm_error(body)
    assert target.call("GET", path)[0] == 404


def test_a_crash_consistent_restore_point_reports_crash_consistency(target: Target, collection: str):
    """consistencyMode CrashConsistent is accepted and reported back."""
    path, (status, _, body) = _create_point(target, collection, "contract-crash", {"consistencyMode": "CrashConsistent"})
    assert status == 201, body
    assert _succeeded(target, path)["properties"]["consistencyMode"] == "CrashConsistent"


def test_a_disk_is_restored_from_a_disk_restore_point(target: Target, collection: str):
    """PUT disks/{name} with createOption Restore from a disk restore point, in its region: 200 or 202
    (with Location and Retry-After), then the disk Succeeded with that source."""
    disk, source, (status, headers, body) = _restore_disk(target, collection, "contract-restore", target.location)
    assert status in (200, 202), body
    if status == 202:
        assert headers.get("Location") and int(headers["Retry-After"]) >= 1
    target.cleanup.append(lambda: target.call("DELETE", disk, api_version=DISK_API_VERSION))

    target.wait(lambda: _disk_state(target, disk) == "Succeeded", "the disk restored")
    found = target.call("GET", disk, api_version=DISK_API_VERSION)[2]
    assert found["properties"]["creationData"]["sourceResourceId"].lower() == source.lower()


def test_a_disk_restored_outside_its_restore_points_region_is_not_found(target: Target, collection: str):
    """A disk restore point is looked for in the new disk's region: a disk asked for in another region
    finds no source (404 in ARM's error shape) and nothing is created."""
    disk, _, (status, _, body) = _restore_disk(target, collection, "contract-region", target.other_region)
    assert status == 404 and _arm_error(body)
    assert target.call("GET", disk, api_version=DISK_API_VERSION)[0] == 404


def _restored_disk(target: Target, collection: str, name: str) -> str:
    """A disk restored from a new restore point of the target's VM, Succeeded (cleaned up after the test)."""
    disk, _, (status, _, body) = _restore_disk(target, collection, name, target.location)
    assert status in (200, 202), body
    target.cleanup.append(lambda: target.call("DELETE", disk, api_version=DISK_API_VERSION))
    target.wait(lambda: _disk_state(target, disk) == "Succeeded", "the disk restored")
    return disk


def _disk_state(target: Target, disk: str) -> str | None:
    status, _, body = target.call("GET", disk, api_version=DISK_API_VERSION)
    return body["properties"]["provisioningState"] if status == 200 else None


def _operation_result(target: Target, status: int, headers: dict[str, str], body: Any) -> tuple[int, Any]:
    """The final answer of a call that may be long-running: itself (200/204), or, for 202, what its
    ``Location`` answers once the operation is done (final-state-via location)."""
    if status != 202:
        return status, body
    assert headers.get("Location") and int(headers["Retry-After"]) >= 1, headers
    final: dict[str, Any] = {}

    def done() -> bool:
        code, _, answer = target.call("GET", headers["Location"], api_version=None)
        final.update(status=code, body=answer)
        return code != 202
    target.wait(done, "the operation done")
    return final["status"], final["body"]


def test_a_read_grant_on_a_disk_gives_a_sas_and_is_revoked(target: Target, collection: str):
    """POST disks/{name}/beginGetAccess with ``access: Read`` and a duration: 200, or 202 with Location
    and Retry-After, ending in an ``accessSAS`` URL that reads the disk's bytes; POST endGetAccess: 200
    or 202, then done."""
    disk = _restored_disk(target, collection, "contract-grant")
    status, headers, body = target.call("POST", f"{disk}/beginGetAccess", {"access": "Read", "durationInSeconds": 600},
                                        api_version=DISK_API_VERSION)
    assert status in (200, 202), body
    status, body = _operation_result(target, status, headers, body)
    assert status == 200 and body["accessSAS"].startswith(("https://", "http://")), body
    first = requests.get(body["accessSAS"], headers={"Range": "bytes=0-511", "x-ms-version": "2021-08-06"},
                         timeout=60)
    assert first.status_code in (200, 206) and len(first.content) == 512
    status, headers, body = target.call("POST", f"{disk}/endGetAccess", api_version=DISK_API_VERSION)
    assert status in (200, 202), body
    assert _operation_result(target, status, headers, body)[0] in (200, 204)


def test_a_disk_delete_is_a_location_operation(target: Target, collection: str):
    """DELETE disks/{name}: 200, 202 (with Location and Retry-After) or 204; then the disk is 404 in ARM's
    error shape, and a second DELETE answers 204."""
    disk = _restored_disk(target, collection, "contract-disk-delete")
    status, headers, body = target.call("DELETE", disk, api_version=DISK_API_VERSION)
    assert status in (200, 202, 204), body
    assert _operation_result(target, status, headers, body)[0] in (200, 204)
    status, _, body = target.call("GET", disk, api_version=DISK_API_VERSION)
    assert status == 404 and _arm_error(body)
    assert target.call("DELETE", disk, api_version=DISK_API_VERSION)[0] == 204


def test_a_restore_point_delete_is_a_location_operation(target: Target, collection: str):
    """DELETE restore point: 200, 202 (with Location and Retry-After) or 204; it reads Deleting while
    the operation runs and 404 in ARM's error shape once gone; a second DELETE answers 204."""
    path, _ = _create_point(target, collection, "contract-delete")
    _succeeded(target, path)
    if target.local:
        target.local.delete_seconds = 3600
    status, headers, _ = target.call("DELETE", path)
    assert status in (200, 202, 204)
    if status == 202:
        assert headers.get("Location") and int(headers["Retry-After"]) >= 1
        if target.local:
            assert target.call("GET", path)[2]["properties"]["provisioningState"] == "Deleting"
            assert target.call("GET", headers["Location"], api_version=None)[0] == 202
            target.local.delete_seconds = 0
        target.wait(lambda: target.call("GET", headers["Location"], api_version=None)[0] in (200, 204),
                    "the deletion done")
    status, _, body = target.call("GET", path)
    assert status == 404 and _arm_error(body)
    assert target.call("DELETE", path)[0] == 204


def test_a_disk_snapshot_is_a_location_operation(target: Target):
    """PUT snapshots/{name} with createOption Copy of a managed disk: 200 or 202 (with Location and
    Retry-After), then Succeeded with that source and the tags given; DELETE: 200, 202 or 204, then GET is
    404 in ARM's error shape and a second DELETE answers 204."""
    disk = _storage_profile(target)["osDisk"]["managedDisk"]["id"]
    path = _in_disk_group(target, "snapshots", f"contract-{uuid.uuid4().hex[:8]}")
    status, headers, body = target.call("PUT", path, {
        "location": target.location, "tags": {"vmsnaprestorejob": "contract"},
        "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": disk}}}, api_version=DISK_API_VERSION)
    assert status in (200, 202), body
    target.cleanup.append(lambda: target.call("DELETE", path, api_version=DISK_API_VERSION))
    if status == 202:
        assert headers.get("Location") and int(headers["Retry-After"]) >= 1
    target.wait(lambda: (target.call("GET", path, api_version=DISK_API_VERSION)[2] or {}).get("properties", {})
                .get("provisioningState") == "Succeeded", "the snapshot taken")
    found = target.call("GET", path, api_version=DISK_API_VERSION)[2]
    assert found["properties"]["creationData"]["sourceResourceId"].lower() == disk.lower()
    assert found["tags"]["vmsnaprestorejob"] == "contract"
    status, headers, _ = target.call("DELETE", path, api_version=DISK_API_VERSION)
    assert status in (200, 202, 204)
    if status == 202:
        assert headers.get("Location") and int(headers["Retry-After"]) >= 1
    target.wait(lambda: target.call("GET", path, api_version=DISK_API_VERSION)[0] == 404, "the snapshot deleted")
    assert _arm_error(target.call("GET", path, api_version=DISK_API_VERSION)[2])
    assert target.call("DELETE", path, api_version=DISK_API_VERSION)[0] == 204


def test_a_vm_update_of_its_data_disks_is_a_location_operation(target: Target, collection: str):
    """PATCH virtualMachines/{vm} with its dataDisks plus a disk at a free LUN (createOption Attach, the disk's
    id): 200 with Location and Retry-After; the operation answers 202 while the VM updates, then 200; the VM
    lists the disk at that LUN, the disk reads Attached (managedBy the VM) and cannot be deleted (409 in ARM's
    error shape); the same PATCH without it detaches it again (Unattached)."""
    disk = _restored(target, collection, "contract-attach")
    profile = _storage_profile(target)
    lun = _spare_lun(profile)
    before = profile.get("dataDisks") or []
    if target.local:
        target.local.update_seconds = 3600
    status, headers, body = target.call("PATCH", target.vm_id, {"properties": {"storageProfile": {"dataDisks": before + [
        {"lun": lun, "createOption": "Attach", "managedDisk": {"id": disk}}]}}})
    target.cleanup.append(lambda: _update_vm(target, {"dataDisks": before}))
    assert status == 200 and headers.get("Location") and int(headers["Retry-After"]) >= 1, body
    assert body["properties"]["provisioningState"] in ("Updating", "Succeeded")
    if target.local:
        assert target.call("GET", headers["Location"], api_version=None)[0] == 202
        target.local.update_seconds = 0
    target.wait(lambda: target.call("GET", headers["Location"], api_version=None)[0] == 200, "the VM updated")
    attached = {d["lun"]: d["managedDisk"]["id"].lower() for d in _storage_profile(target)["dataDisks"]}
    assert attached[lun] == disk.lower()
    found = target.call("GET", disk, api_version=DISK_API_VERSION)[2]
    assert found["properties"]["diskState"] == "Attached" and found["managedBy"].lower() == target.vm_id.lower()
    status, _, body = target.call("DELETE", disk, api_version=DISK_API_VERSION)
    assert status == 409 and _arm_error(body) and target.call("GET", disk, api_version=DISK_API_VERSION)[0] == 200
    assert _update_vm(target, {"dataDisks": before})[0] == 200
    assert lun not in {d["lun"] for d in _storage_profile(target)["dataDisks"]}
    assert target.call("GET", disk, api_version=DISK_API_VERSION)[2]["properties"]["diskState"] == "Unattached"


def test_the_os_disk_is_swapped_only_while_the_vm_is_deallocated(target: Target, collection: str):
    """PATCH with another osDisk.managedDisk.id: refused while the VM runs (409 in ARM's error shape, the OS
    disk kept); once the VM is deallocated, 200 and the VM boots from the new disk (local endpoint only: on
    Azure it would take the VM down)."""
    if not target.local:
        pytest.skip("swapping a real VM's OS disk needs it deallocated: not done to a VM lent for the contract")
    disk = _restored(target, collection, "contract-os")
    os_disk = _storage_profile(target)["osDisk"]
    swapped = dict(os_disk, name=disk.rsplit("/", 1)[-1], managedDisk={"id": disk})
    status, _, body = target.call("PATCH", target.vm_id, {"properties": {"storageProfile": {"osDisk": swapped}}})
    assert status == 409 and _arm_error(body)
    assert _storage_profile(target)["osDisk"]["managedDisk"]["id"] == os_disk["managedDisk"]["id"]
    target.local.set_running(target.vm_id.rsplit("/", 1)[-1], False)
    assert _update_vm(target, {"osDisk": swapped})[0] == 200
    assert _storage_profile(target)["osDisk"]["managedDisk"]["id"].lower() == disk.lower()
    assert _update_vm(target, {"osDisk": os_disk})[0] == 200


def test_the_adapter_snapshots_swaps_and_reads_a_vms_disks(target: Target, collection: str):
    """The app's adapter: the VM's disks by LUN with its power state, a snapshot of a disk (owner tag read
    back, deleted once), a disk put at a LUN (swap_disks) and seen there."""
    adapter = ComputeRestorePoints(target.credential, base_url=target.base_url, connection_verify=target.verify,
                                   retry_total=0)
    profile = _storage_profile(target)
    vm = adapter.vm_disks(target.vm_id)
    assert vm is not None and vm.power_state == "PowerState/running" and not vm.stopped
    assert vm.disk_at(OS_DISK_LUN).lower() == profile["osDisk"]["managedDisk"]["id"].lower()
    snapshot = _in_disk_group(target, "snapshots", f"contract-{uuid.uuid4().hex[:8]}")
    target.cleanup.append(lambda: target.call("DELETE", snapshot, api_version=DISK_API_VERSION))
    taken = adapter.snapshot_disk(vm.disk_at(OS_DISK_LUN), snapshot, location=target.location,
                                  tags={"vmsnaprestorejob": "contract"})
    assert taken.lower() == snapshot.lower() and adapter.get_snapshot(snapshot).owner == "contract"
    assert adapter.delete_snapshot(snapshot) is True and adapter.delete_snapshot(snapshot) is False
    disk = _restored(target, collection, "contract-swap")
    lun = _spare_lun(profile)
    target.cleanup.append(lambda: _update_vm(target, {"dataDisks": profile.get("dataDisks") or []}))
    adapter.swap_disks(target.vm_id, {lun: disk})
    after = adapter.vm_disks(target.vm_id)
    assert after.disk_at(lun).lower() == disk.lower() and after.provisioning_state == "Succeeded"
    assert after.disk_at(OS_DISK_LUN) == vm.disk_at(OS_DISK_LUN)


def test_the_adapter_creates_adopts_reads_and_deletes(target: Target, collection: str):
    """The app's adapter on the endpoint: a create, the same create again (adopted), the restore point
    read with its instance view, deleted once (a second delete finds it gone)."""
    options = {"base_url": target.base_url, "connection_verify": target.verify, "retry_total": 0}
    adapter = ComputeRestorePoints(target.credential, **options)
    vm_name = str(parse_resource_id(target.vm_id)["name"])
    collection_id = adapter.ensure_collection(target.vm_id, target.location)
    assert collection_id.lower().endswith(f"/restorepointcollections/{collection_name(vm_name)}".lower())
    target.cleanup.append(lambda: target.call("DELETE", collection_id))
    first = adapter.begin_create(target.vm_id, "contract-adapter", consistency=Consistency.APPLICATION)
    again = adapter.begin_create(target.vm_id, "contract-adapter", consistency=Consistency.APPLICATION)
    assert first.id == again.id and first.operation and again.operation is None
    target.wait(lambda: (adapter.get(target.vm_id, "contract-adapter") or first).provisioning_state == "Succeeded",
                "the adapter's restore point")
    assert adapter.operation_failure(first.operation) is None
    assert adapter.vm_power_state(target.vm_id) == "PowerState/running"
    assert adapter.delete(first.id) is True and adapter.delete(first.id) is False


def test_every_case_names_its_source_in_the_docs():
    """docs/compute-contract.md has a section, with its source, for every case of this suite."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "compute-contract.md").read_text(encoding="utf-8")
    cases = [name for name in globals() if name.startswith("test_") and name != "test_every_case_names_its_source_in_the_docs"]
    sections = {part.split("\n", 1)[0].strip(): part for part in doc.split("\n### ")[1:]}
    assert sorted(set(cases) - set(sections)) == []
    assert [name for name, text in sections.items() if "Source" not in text and "source" not in text] == []
