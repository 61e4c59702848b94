"""Virtual machines and their disks, as the inventory knows them (no SAS, no credentials), and which
backup method a VM's disks call for."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from shared.errors import ValidationError

OS_DISK_LUN = -1
LOCAL_DISK_CONTAINER = "vhds"     # where the local stack keeps local VMs' disks (as the demo VM's)
PAGE_BYTES = 512                  # a page blob is a whole number of pages


class VmKind(str, Enum):
    LOCAL = "local"   # a VM simulated on this machine: disks are page blobs in Azurite
    AZURE = "azure"   # an Azure VM reached through the Compute API


class DiskKind(str, Enum):
    PAGE_BLOB = "PageBlob"        # an unmanaged VHD: the extension snapshots the blob through a SAS
    MANAGED = "ManagedDisk"       # a managed disk: only the platform snapshots it (restore point)


class BackupMethod(str, Enum):
    """How a VM is backed up; chosen from its disks, recorded on every job."""

    EXTENSION_COMMAND = "ExtensionCommand"   # VMSnapshot command with disk SAS URIs, status blob
    RESTORE_POINT = "RestorePoint"           # application-consistent VM restore point


@dataclass(frozen=True)
class Disk:
    lun: int            # -1 is the OS disk, as the extension numbers it
    blob_url: str       # the page blob backing the disk, without any query string ("" if managed)
    name: str = ""
    size_bytes: int = 0
    kind: DiskKind = DiskKind.PAGE_BLOB
    managed_disk_id: str | None = None   # ARM id of a managed disk

    @property
    def resource(self) -> str:
        """What names the disk to its backup method: the managed disk id, or the blob URL."""
        return self.managed_disk_id or self.blob_url


@dataclass(frozen=True)
class Vm:
    name: str
    kind: VmKind
    disks: tuple[Disk, ...]
    resource_id: str | None = None   # ARM id for Azure VMs (and local VMs behind the local Compute endpoint)
    location: str | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def data_disk_luns(self) -> list[int]:
        return [d.lun for d in self.disks if d.lun != OS_DISK_LUN]

    @property
    def has_os_disk(self) -> bool:
        return any(d.lun == OS_DISK_LUN for d in self.disks)

    def backup_method(self) -> BackupMethod:
        """Page blobs only: the extension command; managed disks only: a restore point.

        A VM mixing both cannot be made consistent by either method (a restore point ignores page
        blobs, the extension cannot snapshot managed disks), so it is refused.
        """
        kinds = {d.kind for d in self.disks}
        if kinds == {DiskKind.MANAGED}:
            if not self.resource_id:
                raise ValidationError(f"VM {self.name!r} has managed disks but no ARM resource id; a restore "
                                      f"point needs the VM's id", field="vm")
            return BackupMethod.RESTORE_POINT
        if len(kinds) > 1:
            managed = ", ".join(d.name or f"lun {d.lun}" for d in self.disks if d.kind is DiskKind.MANAGED)
            raise ValidationError(
                f"VM {self.name!r} mixes managed disks ({managed}) with unmanaged (page blob) disks; neither "
                f"backup method covers both. Migrate its unmanaged disks to managed disks "
                f"(ConvertTo-AzVMManagedDisk or 'az vm convert'), then back it up again", field="vm")
        return BackupMethod.EXTENSION_COMMAND
