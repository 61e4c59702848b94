"""Virtual machines and their disks, as the inventory knows them (no SAS, no credentials)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

OS_DISK_LUN = -1


class VmKind(str, Enum):
    LOCAL = "local"   # a VM simulated on this machine: disks are page blobs in Azurite
    AZURE = "azure"   # an Azure VM reached through the Compute API


@dataclass(frozen=True)
class Disk:
    lun: int            # -1 is the OS disk, as the extension numbers it
    blob_url: str       # the page blob backing the disk, without any query string
    name: str = ""
    size_bytes: int = 0


@dataclass(frozen=True)
class Vm:
    name: str
    kind: VmKind
    disks: tuple[Disk, ...]
    resource_id: str | None = None   # ARM id for Azure VMs
    location: str | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def data_disk_luns(self) -> list[int]:
        return [d.lun for d in self.disks if d.lun != OS_DISK_LUN]

    @property
    def has_os_disk(self) -> bool:
        return any(d.lun == OS_DISK_LUN for d in self.disks)
