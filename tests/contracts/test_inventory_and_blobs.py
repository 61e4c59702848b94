"""The Inventory and StatusBlobs contracts: the in-memory fakes and the Table inventory / Blob status
store behave the same."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from shared.domain.inventory import OS_DISK_LUN, Disk, Vm, VmKind
from shared.errors import ConflictError, NotFoundError
from shared.ports import Inventory, StatusBlobs

PORTS = (Inventory, StatusBlobs)

BASE = "http://127.0.0.1:10000/devstoreaccount1/disks"
T0 = datetime(2025, 6, 2, 12, 0, tzinfo=timezone.utc)


def vm(name: str) -> Vm:
    disks = (Disk(OS_DISK_LUN, f"{BASE}/{name}-os.vhd", "os", 1024), Disk(0, f"{BASE}/{name}-0.vhd", "d0", 1024))
    return Vm(name=name, kind=VmKind.LOCAL, location="local", disks=disks)


# --- inventory -------------------------------------------------------------------------------------
def test_a_vm_is_found_whatever_the_case(make_inventory):
    """`protection enable-for-vm --vm WEB-1` finds web-1 with its disks in LUN order."""
    inventory = make_inventory(vm("web-1"))
    found = inventory.get_vm("WEB-1")
    assert found.name == "web-1" and [d.lun for d in found.disks] == [OS_DISK_LUN, 0]
    assert found == vm("web-1")


def test_an_unknown_vm_is_not_found_by_name(make_inventory):
    """Asking for a VM the inventory does not have names it in a NotFoundError."""
    with pytest.raises(NotFoundError, match="web-9"):
        make_inventory(vm("web-1")).get_vm("web-9")


def test_every_vm_is_listed(make_inventory):
    """Listing the inventory shows each VM once."""
    assert sorted(v.name for v in make_inventory(vm("a"), vm("b"), vm("c")).list_vms()) == ["a", "b", "c"]


# --- status blobs ------------------------------------------------------------------------------------
def test_an_attempt_gets_two_empty_blobs(status_blobs):
    """Each attempt has its own status and log blob, created empty before the command goes out."""
    store, _ = status_blobs
    names = store.create_attempt_blobs("job-1", 2)
    assert names == store.attempt_blob_names("job-1", 2) == ("job-1/2.Status.txt", "job-1/2.Logs.txt")
    assert [store.read(n) for n in names] == [b"", b""]


def test_an_empty_attempt_blob_is_reused(status_blobs):
    """A dispatch retried before the extension ran finds its empty blobs and goes on."""
    store, _ = status_blobs
    assert store.create_attempt_blobs("job-1", 1) == store.create_attempt_blobs("job-1", 1)


def test_a_blob_the_extension_wrote_is_never_reused(status_blobs):
    """Once the extension wrote a status, the same attempt cannot be dispatched again over it."""
    store, extension_writes = status_blobs
    status, _ = store.create_attempt_blobs("job-1", 1)
    extension_writes(status, b'[{"status": {"code": "4"}}]')
    with pytest.raises(ConflictError):
        store.create_attempt_blobs("job-1", 1)
    assert store.read(status) == b'[{"status": {"code": "4"}}]'


def test_a_missing_blob_is_not_found(status_blobs):
    """Reading a status blob that does not exist is a NotFoundError naming it."""
    store, _ = status_blobs
    with pytest.raises(NotFoundError, match="job-9/1.Status.txt"):
        store.read("job-9/1.Status.txt")


def test_a_blob_url_carries_no_sas(status_blobs):
    """The URL handed to the SAS minter is the plain blob URL in the status container."""
    store, _ = status_blobs
    url = store.url("job-1/1.Status.txt")
    assert "?" not in url and url.endswith(f"/{store.container}/job-1/1.Status.txt")


def test_a_rejected_message_is_kept_under_its_id(status_blobs):
    """A message that can never succeed is kept once per message id, wherever the id came from."""
    store, _ = status_blobs
    first = store.store_rejected("m/1", reason="bad", body=b"{}", delivery_count=1, now=T0)
    again = store.store_rejected("m/1", reason="bad", body=b"{}", delivery_count=2, now=T0)
    assert first == again == "m%2F1.json"
