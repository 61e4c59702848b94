"""Disk kinds in the local inventory (Azurite) and the backup method they call for."""
from __future__ import annotations

import json

import pytest

from shared.adapters.clients import table_service_client
from shared.adapters.table_protection import TableInventory
from shared.domain.inventory import BackupMethod, Disk, Vm, VmKind
from shared.errors import ValidationError

SUB = "00000000-0000-0000-0000-0000000000aa"
VM_ID = f"/subscriptions/{SUB}/resourceGroups/local/providers/Microsoft.Compute/virtualMachines/md"


def managed(lun: int, name: str) -> Disk:
    return Disk(lun, "", name, 1024, BackupMethod.RESTORE_POINT,
                f"/subscriptions/{SUB}/resourceGroups/local/providers/Microsoft.Compute/disks/{name}")


@pytest.fixture
def inventory(make_settings) -> TableInventory:
    settings = make_settings()
    return TableInventory(table_service_client(settings.storage, None), settings.table("vms"))


def test_local_inventory_keeps_each_disks_kind_and_the_vm_id(inventory):
    """A local VM on managed disks reads back with its disk ids and VM id, and gets the restore-point method."""
    vm = Vm("md", VmKind.LOCAL, (managed(-1, "md-os"), managed(0, "md-d0")), resource_id=VM_ID)
    inventory.put_vm(vm)
    read = inventory.get_vm("md")
    assert read.disks == vm.disks and read.resource_id == VM_ID
    assert read.backup_method() is BackupMethod.RESTORE_POINT


def test_a_managed_disk_without_its_id_is_refused(inventory):
    """Registering a managed disk without an ARM id fails with a clear error, nothing stored."""
    with pytest.raises(ValidationError, match="needs its ARM id"):
        inventory.put_vm(Vm("md", VmKind.LOCAL, (Disk(-1, "", "os", 0, BackupMethod.RESTORE_POINT, None),),
                            resource_id=VM_ID))
    assert list(inventory.list_vms()) == []


def test_page_blob_vm_stays_on_the_extension_command(inventory):
    """A VM registered before disk kinds existed (no kind stored) still reads as page blobs."""
    inventory.put_vm(Vm("pb", VmKind.LOCAL, (Disk(-1, "http://127.0.0.1:1/a/os.vhd", "os"),)))
    assert inventory.get_vm("pb").backup_method() is BackupMethod.EXTENSION_COMMAND


def test_disk_rows_keep_their_kind_words_and_old_rows_still_read(inventory):
    """A disk row names its kind as it always did (ManagedDisk, PageBlob), not the method it calls for; a row
    written before (either word, or none) reads back with that method."""
    inventory.put_vm(Vm("md", VmKind.LOCAL, (managed(-1, "md-os"),), resource_id=VM_ID))
    inventory.put_vm(Vm("pb", VmKind.LOCAL, (Disk(-1, "http://127.0.0.1:1/a/os.vhd", "os"),)))
    words = {e["Name"]: [d["kind"] for d in json.loads(e["Disks"])] for e in inventory._table.list_entities()}
    assert words == {"md": ["ManagedDisk"], "pb": ["PageBlob"]}
    old = [{"lun": -1, "blobUrl": "", "name": "os", "kind": "ManagedDisk", "managedDiskId": managed(-1, "os").resource},
           {"lun": 0, "blobUrl": "http://127.0.0.1:1/a/d0.vhd", "name": "d0", "kind": "PageBlob"},
           {"lun": 1, "blobUrl": "http://127.0.0.1:1/a/d1.vhd", "name": "d1"}]
    inventory._table.upsert_entity({"PartitionKey": inventory.PARTITION, "RowKey": "old", "Name": "old",
                                    "Disks": json.dumps(old)})
    assert [d.method for d in inventory.get_vm("old").disks] == [BackupMethod.RESTORE_POINT,
                                                                 BackupMethod.EXTENSION_COMMAND,
                                                                 BackupMethod.EXTENSION_COMMAND]
