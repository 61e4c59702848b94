"""The Table adapters on Azurite: policies (DefaultPolicy from the start), items (ETags, batches), local VMs."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time, timezone

import pytest

from shared.adapters.table_protection import TableInventory, TablePolicyStore, TableProtectedItemStore
from shared.adapters.clients import table_service_client
from shared.domain.inventory import Disk, Vm, VmKind
from shared.domain.policy import EnhancedSchedule, Policy
from shared.domain.protection import ProtectedItem
from shared.errors import ConflictError, NotFoundError, ValidationError

T = datetime(2025, 6, 2, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def tables(make_settings):
    settings = make_settings()
    return table_service_client(settings.storage, None), settings


def item(name: str) -> ProtectedItem:
    return ProtectedItem(vm_name=name, policy_name="DefaultPolicy", protected_since=T, policy_assigned_at=T,
                         disk_luns=(-1, 0))


def test_default_policy_exists_from_the_start(tables):
    """A fresh installation lists DefaultPolicy without anyone creating it."""
    service, settings = tables
    store = TablePolicyStore(service, settings.table("policies"))
    assert [p.name for p in store.list()] == ["DefaultPolicy"]
    assert store.get("defaultpolicy").schedule.time == time(22, 30)


def test_policies_are_stored_created_once_and_replaced(tables):
    """A created policy reads back equal; creating it again conflicts; an unknown name is not found."""
    service, settings = tables
    store = TablePolicyStore(service, settings.table("policies"))
    policy = Policy("Hourly", EnhancedSchedule(6, time(20, 0), 12), "America/New_York", 7, modified_at=T)
    store.create(policy)
    assert store.get("hourly") == policy
    with pytest.raises(ConflictError):
        store.create(policy)
    with pytest.raises(NotFoundError, match="Gold"):
        store.replace(Policy("Gold"))


def test_item_updates_are_guarded_by_etag(tables):
    """A batch write of an item someone changed meanwhile is not applied; the others are."""
    service, settings = tables
    store = TableProtectedItemStore(service, settings.table("items"))
    store.add_many([item(f"vm{i}") for i in range(5)])
    page = next(store.pages(100))
    store.update("vm3", lambda i: replace(i, in_progress_job_id="someone-else"))
    saved, conflicts, _ = store.save_many([replace(i, last_slot=T) for i in page])
    assert conflicts == ["vm3"] and len(saved) == 4
    assert store.get("vm3").in_progress_job_id == "someone-else" and store.get("vm3").last_slot is None
    assert store.get("vm1").last_slot == T


def test_items_round_trip_and_page(tables):
    """Every stored item comes back in pages, with all its fields."""
    service, settings = tables
    store = TableProtectedItemStore(service, settings.table("items"))
    store.add_many([item(f"vm{i:03d}") for i in range(230)])
    pages = list(store.pages(100))
    assert [len(p) for p in pages] == [100, 100, 30]
    assert replace(store.get("vm007"), version=None) == item("vm007")
    assert store.count_by_policy("DefaultPolicy") == 230


def test_local_inventory_adds_lists_and_deletes_vms(tables):
    """A local VM registered with its disk blobs can be read, listed and removed."""
    service, settings = tables
    inventory = TableInventory(service, settings.table("vms"))
    vm = Vm("demo", VmKind.LOCAL, (Disk(-1, "http://127.0.0.1:10000/devstoreaccount1/disks/os.vhd", "osdisk"),
                                   Disk(0, "http://127.0.0.1:10000/devstoreaccount1/disks/d0.vhd", "d0")))
    inventory.put_vm(vm)
    assert inventory.get_vm("DEMO").disks == vm.disks
    assert [v.name for v in inventory.list_vms()] == ["demo"]
    inventory.delete_vm("demo")
    with pytest.raises(NotFoundError, match="vmsnap local vm add"):
        inventory.get_vm("demo")


def test_local_inventory_refuses_a_sas_in_a_disk_url(tables):
    """A disk URL carrying a query string (a SAS) is refused, so no secret is ever stored."""
    service, settings = tables
    inventory = TableInventory(service, settings.table("vms"))
    with pytest.raises(ValidationError) as caught:
        inventory.put_vm(Vm("demo", VmKind.LOCAL, (Disk(-1, "http://h/c/os.vhd?sig=secret"),)))
    assert caught.value.field == "disks"
