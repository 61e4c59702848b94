"""The demo VMs of the local stack, registered in the local inventory: ``demo-vm`` on two page-blob
disks (the extension command) and ``demo-vm-md`` on two managed disks behind the local Compute
endpoint (a restore point); both sets of disks are page blobs in Azurite."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from azure.core.exceptions import ResourceExistsError

from devhost.guest import os_disk_image
from shared.domain.inventory import OS_DISK_LUN, Disk, Vm, VmKind
from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from devhost.compute import LocalCompute
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

DEMO_VM = "demo-vm"
DEMO_MD_VM = "demo-vm-md"
DISK_CONTAINER = "vhds"
_DISKS = ((OS_DISK_LUN, "demo-vm-osdisk.vhd", 8 * 1024 * 1024), (0, "demo-vm-datadisk0.vhd", 2 * 1024 * 1024))


def create_demo_vm(svc: Services, name: str = DEMO_VM) -> Vm:
    """Create (or reuse) the VM's disks as page blobs with some data on them, and register the VM."""
    vm = Vm(name=name, kind=VmKind.LOCAL, disks=tuple(_page_blob_disks(svc, name)))
    _registry(svc).put_vm(vm)
    log.info("demo VM %s registered with %d disks", name, len(vm.disks))
    return vm


def create_demo_md_vm(svc: Services, compute: LocalCompute, name: str = DEMO_MD_VM) -> Vm:
    """The managed-disk demo VM: its disks' page blobs handed to the local Compute endpoint, which
    gives them managed disk ids; the inventory knows the VM by its id and its disks by theirs."""
    disks = _page_blob_disks(svc, name)
    local = compute.add_vm(name, [(d.lun, d.name.removesuffix(".vhd"), d.blob_url, d.size_bytes) for d in disks])
    vm = local.as_inventory_vm()
    _registry(svc).put_vm(vm)
    log.info("demo VM %s registered with %d managed disks (%s)", name, len(vm.disks), vm.resource_id)
    return vm


@runtime_checkable
class _VmRegistry(Protocol):
    """An inventory VMs are added to: the local one (and the fakes standing in for it)."""

    def put_vm(self, vm: Vm) -> Vm: ...


def _registry(svc: Services) -> _VmRegistry:
    if not isinstance(svc.inventory, _VmRegistry):
        raise ConfigurationError("the demo VMs go into the local inventory: set DISPATCHER=local")
    return svc.inventory


def _page_blob_disks(svc, name: str) -> list[Disk]:
    container = svc.blob_service.get_container_client(DISK_CONTAINER)
    try:
        container.create_container()
    except ResourceExistsError:
        pass
    disks = []
    for lun, blob_name, size in _DISKS:
        blob_name = blob_name.replace(DEMO_VM, name)
        blob = container.get_blob_client(blob_name)
        if not blob.exists():
            blob.create_page_blob(size)
            if lun == OS_DISK_LUN:
                # A real OS disk: an MBR and an ext4 the guest writes its marker into before each backup.
                image = os_disk_image(size, name)
                for offset in range(0, size, 4 * 1024 * 1024):
                    chunk = image[offset:offset + 4 * 1024 * 1024]
                    if chunk.strip(b"\0"):
                        blob.upload_page(chunk, offset=offset, length=len(chunk))
            else:
                # A recognisable first page, so snapshots have content to keep.
                blob.upload_page(f"{name} lun {lun}".encode().ljust(512, b"\0"), offset=0, length=512)
        disks.append(Disk(lun=lun, blob_url=blob.url, name=blob_name, size_bytes=size))
    return disks


def disk_snapshots(svc: Services, vm: Vm) -> dict[str, list[str]]:
    """The blob snapshots each of the VM's disks has in storage, by disk name."""
    container = svc.blob_service.get_container_client(DISK_CONTAINER)
    found: dict[str, list[str]] = {d.name: [] for d in vm.disks}
    for item in container.list_blobs(include=["snapshots"]):
        if item.snapshot and item.name in found:
            found[item.name].append(item.snapshot)
    return found
