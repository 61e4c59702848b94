"""A page-blob VM with a recovery point on Azurite, and the services a restore runs on (its queue a list
the test drains, as the restore function would)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
from azure.storage.blob import BlobServiceClient

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.inventory import OS_DISK_LUN, Disk, Vm, VmKind
from shared.domain.recovery import DiskSnapshot, RecoveryPoint
from tests.fakes import RecordingRestoreQueue

MIB = 2**20


@dataclass
class Backed:
    vm: Vm
    point: RecoveryPoint
    data: dict[int, bytes]          # each disk's bytes at the backup, by LUN


@pytest.fixture
def svc(make_settings):
    return Services(make_settings(), clock=FixedClock(datetime.now(timezone.utc).replace(microsecond=0)),
                    restore_queue=RecordingRestoreQueue())


@pytest.fixture
def backed_up(svc, storage_connection_string, unique_name):
    """A VM of two page-blob disks (OS 6 MiB with pages written here and there, LUN 0 4 MiB), snapshotted,
    and its recovery point; the VM is stopped unless a test says otherwise."""

    def make(power: str = "deallocated", sizes: tuple[int, int] = (6 * MIB, 4 * MIB)) -> Backed:
        blobs = BlobServiceClient.from_connection_string(storage_connection_string)
        container = blobs.get_container_client(unique_name("vhds"))
        container.create_container()
        name = unique_name("vm")
        disks, snaps, data = [], [], {}
        for lun, size in zip((OS_DISK_LUN, 0), sizes):
            blob = container.get_blob_client(f"{name}-{'os' if lun == OS_DISK_LUN else lun}.vhd")
            blob.create_page_blob(size)
            image = bytearray(size)
            for offset in (0, size // 2, size - MIB):        # sparse: three allocated MiB
                chunk = os.urandom(MIB)
                blob.upload_page(chunk, offset=offset, length=MIB)
                image[offset:offset + MIB] = chunk
            taken = blob.create_snapshot()
            disks.append(Disk(lun=lun, blob_url=blob.url, name=blob.blob_name, size_bytes=size))
            snaps.append(DiskSnapshot(lun=lun, source=blob.url, snapshot=f"{blob.url}?snapshot={taken['snapshot']}",
                                      snapshot_time=taken["snapshot"]))
            data[lun] = bytes(image)
        vm = Vm(name=name, kind=VmKind.LOCAL, disks=tuple(disks), tags={"powerState": power})
        svc.inventory.put_vm(vm)
        point = RecoveryPoint(name=f"{abs(hash(name)) % 10**18:018d}", vm_name=name, created_at=svc.clock.now(),
                              job_id=f"backup-{name}", disks=tuple(snaps), policy_name="DefaultPolicy")
        assert svc.recovery_points.add_if_absent(point)
        return Backed(vm, point, data)

    return make


def blob_bytes(svc, url: str) -> bytes:
    from azure.storage.blob import BlobClient

    base, _, query = url.partition("?")
    snapshot = query[len("snapshot="):] if query.startswith("snapshot=") else None
    parsed = BlobClient.from_blob_url(base)
    return svc.blob_service.get_blob_client(parsed.container_name, parsed.blob_name,
                                            snapshot=snapshot).download_blob().readall()



def digest_blob(svc, snapshot_url: str):
    """The client of the blob that holds the snapshot's digest (shared/adapters/verification.py)."""
    from azure.storage.blob import BlobClient

    from shared.adapters.verification import DIGEST_CONTAINER

    base, _, snapshot = snapshot_url.partition("?snapshot=")
    parsed = BlobClient.from_blob_url(base)
    return svc.blob_service.get_blob_client(DIGEST_CONTAINER, f"{parsed.container_name}/{parsed.blob_name}@{snapshot}")
