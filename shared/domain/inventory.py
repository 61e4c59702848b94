"""Virtual machines and their disks, as the inventory knows them (no SAS, no credentials), and which
backup method a VM's disks call for (``BackupMethod``, the one name of the two backup paths)."""
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


class BackupMethod(str, Enum):
    """The backup path, one name for all it decides: a disk's kind (which method it calls for), a job's
    method and what its recovery point holds (so what retention deletes and how a restore copies).

    Named for the method because that is what the code branches on; the disk and the point are how it
    shows. Each record keeps the word it always stored (a disk "PageBlob"/"ManagedDisk", a point
    "BlobSnapshot"/"RestorePoint"), mapped by its adapter; a job row and a job's JSON use the values.
    """

    EXTENSION_COMMAND = "ExtensionCommand"  # page-blob (unmanaged VHD) disks: VMSnapshot command with disk
                                            # SAS URIs, status blob; the point holds a blob snapshot per disk
    RESTORE_POINT = "RestorePoint"          # managed disks (only the platform snapshots them): a VM restore
                                            # point; the point holds a disk restore point per disk


@dataclass(frozen=True)
class Disk:
    lun: int            # -1 is the OS disk, as the extension numbers it
    blob_url: str       # the page blob backing the disk, without any query string ("" if managed)
    name: str = ""
    size_bytes: int = 0
    method: BackupMethod = BackupMethod.EXTENSION_COMMAND    # what the disk's kind calls for
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
        methods = {d.method for d in self.disks}
        if methods == {BackupMethod.RESTORE_POINT}:
            if not self.resource_id:
                raise ValidationError(f"VM {self.name!r} has managed disks but no ARM resource id; a restore "
                                      f"point needs the VM's id", field="vm")
            return BackupMethod.RESTORE_POINT
        if len(methods) > 1:
            managed = ", ".join(d.name or f"lun {d.lun}" for d in self.disks if d.method is BackupMethod.RESTORE_POINT)
            raise ValidationError(
                f"VM {self.name!r} mixes managed disks ({managed}) with unmanaged (page blob) disks; neither "
                f"backup method covers both. Migrate its unmanaged disks to managed disks "
                f"(ConvertTo-AzVMManagedDisk or 'az vm convert'), then back it up again", field="vm")
        return BackupMethod.EXTENSION_COMMAND
