"""The Inventory port for Azure VMs, through the Compute API (azure-mgmt-compute).

Each disk keeps its kind: an unmanaged disk is a page blob (``vhd.uri``) the extension snapshots
through a SAS; a managed disk is known by its ARM id and backed up through a VM restore point.
"""
from __future__ import annotations

import logging
import re
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterator

from azure.core.exceptions import AzureError

from shared.adapters.azure_errors import Failure, failure_of, translate
from shared.domain.bloburl import base_of
from shared.domain.inventory import OS_DISK_LUN, BackupMethod, Disk, Vm, VmKind
from shared.errors import ConfigurationError, NotFoundError, ValidationError

if TYPE_CHECKING:   # the Compute SDK loads when the inventory is built, not when this module is imported
    from azure.core.credentials import TokenCredential
    from azure.core.pipeline.transport import HttpTransport
    from azure.mgmt.compute.models import DataDisk, OSDisk, VirtualMachine

log = logging.getLogger(__name__)

GIB = 1024 ** 3
_VM_ID = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
                    r"Microsoft\.Compute/virtualMachines/(?P<name>[^/]+)$", re.IGNORECASE)


class ComputeInventory:
    def __init__(self, credential: TokenCredential, subscription_id: str, *,
                 transport: HttpTransport[Any, Any] | None = None):
        from azure.mgmt.compute import ComputeManagementClient

        if not subscription_id:
            raise ConfigurationError("setting AZURE_SUBSCRIPTION_ID is missing; the Compute inventory needs it")
        options: dict[str, Any] = {"transport": transport} if transport is not None else {}
        self._client = ComputeManagementClient(credential, subscription_id, retry_total=3, **options)
        self._subscription = subscription_id

    def get_vm(self, name: str) -> Vm:
        """A VM by ARM id (one GET), or by name when the name is unique in the subscription (a listing)."""
        match = _VM_ID.match(name)
        if match:
            with _compute_errors(name):
                model = self._client.virtual_machines.get(match["rg"], match["name"])
            return _vm_from(model)
        with _compute_errors(name):
            found = [m for m in self._client.virtual_machines.list_all() if (m.name or "").lower() == name.lower()]
        if not found:
            raise NotFoundError(f"VM {name!r} not found in subscription {self._subscription}")
        if len(found) > 1:
            groups = ", ".join(sorted(_resource_group(m.id) for m in found))
            raise ValidationError(f"VM name {name!r} exists in several resource groups ({groups}); give its "
                                  f"resource id instead", field="vm")
        return _vm_from(found[0])

    def list_vms(self) -> Iterator[Vm]:
        """Every VM of the subscription (a VM whose disks cannot be read is skipped, with a log line)."""
        with _compute_errors("the subscription's VMs"):
            for model in self._client.virtual_machines.list_all():
                try:
                    yield _vm_from(model)
                except ValidationError as exc:
                    log.info("VM %s not listed: %s", model.name, exc)


class _compute_errors:
    """Translate Compute API failures into the project's errors."""

    def __init__(self, what: str):
        self._what = what

    def __enter__(self) -> _compute_errors:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None or not isinstance(exc, AzureError):
            return
        if failure_of(exc) is Failure.NOT_FOUND:
            raise NotFoundError(f"VM {self._what!r} not found") from exc
        raise translate(exc, f"reading {self._what}", service="the Compute API",
                        refused_hint="grant the identity Reader (or Virtual Machine Contributor) on the VM") from exc


def _resource_group(resource_id: str | None) -> str:
    match = _VM_ID.match(resource_id or "")
    return match["rg"] if match else "?"


def _vm_from(model: VirtualMachine) -> Vm:
    if not model.name:
        raise ValidationError(f"the Compute API listed a VM without a name ({model.id})", field="vm")
    profile = model.storage_profile
    os_disk = profile.os_disk if profile else None
    data_disks = sorted(profile.data_disks or [], key=lambda d: d.lun) if profile else []
    disks = [_disk_from(os_disk, OS_DISK_LUN, model.name)] if os_disk is not None else []
    disks += [_disk_from(d, d.lun, model.name) for d in data_disks]
    return Vm(name=model.name, kind=VmKind.AZURE, disks=tuple(disks), resource_id=model.id,
              location=model.location, tags=dict(model.tags or {}))


def _disk_from(disk: OSDisk | DataDisk, lun: int, vm_name: str) -> Disk:
    name = disk.name or ("osdisk" if lun == OS_DISK_LUN else f"lun{lun}")
    size = (disk.disk_size_gb or 0) * GIB
    managed = getattr(disk, "managed_disk", None)
    if managed is not None and managed.id:
        return Disk(lun=lun, blob_url="", name=name, size_bytes=size, method=BackupMethod.RESTORE_POINT,
                    managed_disk_id=managed.id)
    if disk.vhd is None or not disk.vhd.uri:
        raise ValidationError(f"disk {name} of VM {vm_name!r} is neither a managed disk with an id nor a VHD "
                              f"page blob (an ephemeral OS disk?); vmsnap cannot back it up", field="vm")
    return Disk(lun=lun, blob_url=base_of(disk.vhd.uri), name=name, size_bytes=size)

