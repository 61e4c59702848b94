"""The local stack's simulated VMs (``vmsnap local vm``): LOCAL VMs in the inventory table, their disks
page blobs in Azurite."""
from __future__ import annotations

import logging
from typing import Any, Iterable

from azure.core.exceptions import AzureError, ResourceExistsError

from shared.adapters.azure_errors import BLOB_REFUSED_HINT, translate
from shared.adapters.table_protection import TableInventory
from shared.domain.inventory import LOCAL_DISK_CONTAINER, OS_DISK_LUN, PAGE_BYTES, Disk, Vm

log = logging.getLogger(__name__)


class LocalVmStore:
    """``LocalVms`` on Table Storage (the inventory the local dispatcher reads) and Blob Storage."""

    def __init__(self, table_service: Any, table_name: str, blob_service: Any):
        self._inventory = TableInventory(table_service, table_name)
        self._blobs = blob_service

    def put_vm(self, vm: Vm) -> Vm:
        return self._inventory.put_vm(vm)

    def delete_vm(self, name: str) -> None:
        self._inventory.delete_vm(name)

    def list_vms(self) -> Iterable[Vm]:
        return self._inventory.list_vms()

    def create_disks(self, vm_name: str, size_bytes: int, data_disks: int) -> list[Disk]:
        container = self._blobs.get_container_client(LOCAL_DISK_CONTAINER)
        try:
            try:
                container.create_container()
            except ResourceExistsError:
                pass
            disks = []
            for lun in [OS_DISK_LUN, *range(data_disks)]:
                blob_name = f"{vm_name}-osdisk.vhd" if lun == OS_DISK_LUN else f"{vm_name}-datadisk{lun}.vhd"
                blob = container.get_blob_client(blob_name)
                try:
                    blob.create_page_blob(size_bytes, if_none_match="*")
                    # A recognisable first page, like a boot sector, so snapshots have content to keep.
                    first = f"{vm_name} lun {lun}".encode().ljust(PAGE_BYTES, b"\0")
                    blob.upload_page(first, offset=0, length=PAGE_BYTES)
                except ResourceExistsError:
                    log.info("disk %s of VM %s exists; kept", blob_name, vm_name)
                disks.append(Disk(lun=lun, blob_url=blob.url, name=blob_name, size_bytes=size_bytes))
            return disks
        except AzureError as exc:
            raise translate(exc, f"creating the disks of VM {vm_name}", service="Blob Storage",
                            refused_hint=BLOB_REFUSED_HINT) from exc
