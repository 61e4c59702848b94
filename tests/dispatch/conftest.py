"""Fixtures for dispatch tests: VMs whose disks are real page blobs on the session Azurite."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from azure.storage.blob import BlobServiceClient

from shared.domain.inventory import OS_DISK_LUN, Disk, Vm, VmKind

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def blob_service(storage_connection_string) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(storage_connection_string)


@pytest.fixture
def make_vm(blob_service, unique_name):
    """A local VM named ``name`` whose OS disk and data disks are 1 KiB page blobs in Azurite."""

    def factory(name: str | None = None, data_luns=(0,), container: str | None = None) -> Vm:
        name = name or unique_name("vm")
        container_client = blob_service.get_container_client(container or unique_name("disks"))
        if not container_client.exists():
            container_client.create_container()
        disks = []
        for lun in (OS_DISK_LUN, *data_luns):
            blob = container_client.get_blob_client(f"{name}-{'os' if lun == OS_DISK_LUN else lun}.vhd")
            blob.create_page_blob(1024)
            disks.append(Disk(lun=lun, blob_url=blob.url, name=blob.blob_name, size_bytes=1024))
        return Vm(name=name, kind=VmKind.LOCAL, disks=tuple(disks), location="westeurope")

    return factory
