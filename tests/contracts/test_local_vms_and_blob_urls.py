"""The LocalVms and BlobUrls contracts, on Azurite (no unit test needs a fake of either: the CLI commands
that use them, ``vmsnap local vm`` and ``vmsnap status show URL``, are tested on the local stack)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from azure.storage.blob import BlobSasPermissions, generate_blob_sas

from shared.adapters.blob_sas import BlobUrlReader
from shared.adapters.local_vms import LocalVmStore
from shared.domain.inventory import OS_DISK_LUN, PAGE_BYTES, Vm, VmKind
from shared.errors import AccessRefusedError, NotFoundError, ValidationError
from shared.ports import BlobUrls, LocalVms

PORTS = (LocalVms, BlobUrls)
pytestmark = pytest.mark.integration


@pytest.fixture
def local_vms(table_service, blob_service_client, unique_name) -> LocalVms:
    return LocalVmStore(table_service, unique_name("vms"), blob_service_client)


def test_disks_are_made_once_and_a_vm_round_trips(local_vms, unique_name):
    """Disks are page blobs with a first page of data; making them again keeps them; the VM lists and deletes."""
    name = unique_name("vm")
    disks = local_vms.create_disks(name, 4 * PAGE_BYTES, 2)
    assert [d.lun for d in disks] == [OS_DISK_LUN, 0, 1] and all(d.size_bytes == 4 * PAGE_BYTES for d in disks)
    assert local_vms.create_disks(name, 4 * PAGE_BYTES, 2) == disks
    local_vms.put_vm(Vm(name=name, kind=VmKind.LOCAL, disks=tuple(disks)))
    assert [vm.name for vm in local_vms.list_vms()] == [name]
    local_vms.delete_vm(name)
    assert list(local_vms.list_vms()) == []
    with pytest.raises(NotFoundError):
        local_vms.delete_vm(name)


def test_a_vm_without_disks_is_refused(local_vms):
    with pytest.raises(ValidationError):
        local_vms.put_vm(Vm(name="bare", kind=VmKind.LOCAL, disks=()))


@pytest.fixture
def blob(blob_service_client, unique_name):
    container = blob_service_client.create_container(unique_name("urls"))
    client = container.get_blob_client("0.Status.txt")
    client.upload_blob(b"[status]")
    yield client
    container.delete_container()


def _sas(client, permission: str) -> str:
    credential = client.credential
    return generate_blob_sas(client.account_name, client.container_name, client.blob_name,
                             account_key=credential.account_key, permission=BlobSasPermissions.from_string(permission),
                             expiry=datetime.now(timezone.utc) + timedelta(hours=1))


def test_a_blob_is_read_with_its_own_sas_without_asking_for_the_identity(blob):
    def no_identity():
        raise AssertionError("a URL with a SAS needs no storage identity")

    assert BlobUrlReader(no_identity).read(f"{blob.url}?{_sas(blob, 'r')}", max_bytes=100) == b"[status]"


def test_a_blob_without_a_sas_is_read_with_the_identity_and_a_big_one_refused(blob):
    reader = BlobUrlReader(lambda: blob.credential)
    assert reader.read(blob.url, max_bytes=100) == b"[status]"
    with pytest.raises(ValidationError, match="at most 4"):
        reader.read(blob.url, max_bytes=4)


def test_a_missing_blob_is_not_found_and_a_refused_sas_names_no_secret(blob):
    reader = BlobUrlReader(lambda: blob.credential)
    with pytest.raises(NotFoundError):
        reader.read(blob.url.replace("0.Status.txt", "9.Status.txt"), max_bytes=100)
    sas = _sas(blob, "w")       # may write, may not read
    with pytest.raises(AccessRefusedError) as refused:
        reader.read(f"{blob.url}?{sas}", max_bytes=100)
    assert "sig=" not in str(refused.value) and sas.split("sig=")[1][:10] not in str(refused.value)
