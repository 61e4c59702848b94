"""Copy Blob on the project's Azurite (patches/, docs/local-stack.md): the copy source is checked with a
HEAD, not a whole download, so a restore's server-side copy costs what a copy costs, at any disk size,
and a source Azurite cannot read is still refused with the reason."""
from __future__ import annotations

import pytest
from azure.storage.blob import BlobServiceClient, ContentSettings

from shared.adapters.snapshots import BlobSnapshots
from shared.clock import SystemClock
from tests.polling import eventually

pytestmark = pytest.mark.integration
GIB = 2**30


@pytest.fixture
def service(storage_connection_string):
    with BlobServiceClient.from_connection_string(storage_connection_string) as client:
        yield client


def _copied(service, container: str, name: str) -> str:
    blob = service.get_blob_client(container, name)
    assert eventually(lambda: blob.get_blob_properties().copy.status != "pending", timeout=120), \
        f"the copy into {container}/{name} never ended"
    return str(blob.get_blob_properties().copy.status)


def test_a_1_gib_disk_snapshot_copies_through_its_read_sas(service, unique_name):
    """A 1 GiB disk restores: Azurite's old check downloaded the whole source as one string, which V8
    cannot hold past 512 MiB, so the copy failed (500) however little the disk held."""
    container = service.get_container_client(unique_name("vhds"))
    container.create_container()
    disk = container.get_blob_client("os.vhd")
    disk.create_page_blob(GIB)              # sparse: nothing to upload, but a 1 GiB download all the same
    disk.upload_page(b"\x5a" * 512, offset=GIB - 512, length=512)
    snapshot = f"{disk.url}?snapshot={disk.create_snapshot()['snapshot']}"
    target = unique_name("restored")

    BlobSnapshots(service, clock=SystemClock()).start_copy(snapshot, target, "os.vhd", owner="job-1")

    assert _copied(service, target, "os.vhd") == "success"
    copy = service.get_blob_client(target, "os.vhd")
    assert copy.get_blob_properties().size == GIB
    assert copy.download_blob(offset=GIB - 512, length=512).readall() == b"\x5a" * 512


def test_a_source_that_declares_gzip_over_plain_bytes_copies(service, unique_name):
    """The check no longer decodes the source's body (Azure/Azurite#2680's case): a blob whose
    Content-Encoding says gzip over bytes that are not copies as it is."""
    container = service.get_container_client(unique_name("src"))
    container.create_container()
    blob = container.get_blob_client("plain.txt")
    blob.upload_blob(b"hello", content_settings=ContentSettings(content_encoding="gzip"))
    snapshot = f"{blob.url}?snapshot={blob.create_snapshot()['snapshot']}"
    target = unique_name("dst")

    BlobSnapshots(service, clock=SystemClock()).start_copy(snapshot, target, "plain.txt", owner="job-2")

    assert _copied(service, target, "plain.txt") == "success"
    assert service.get_blob_client(target, "plain.txt").download_blob(decompress=False).readall() == b"hello"


def test_a_source_the_sas_cannot_read_is_still_refused_with_the_reason(service, unique_name):
    """A bad signature on the source fails the copy with Azurite's CannotVerifyCopySource and the
    reason from the source's answer (the refused HEAD falls back to the request that has a body)."""
    container = service.get_container_client(unique_name("src"))
    container.create_container()
    blob = container.get_blob_client("disk.vhd")
    blob.create_page_blob(4096)
    stamp = blob.create_snapshot()["snapshot"]
    forged = (f"{blob.url}?snapshot={stamp}&sv=2021-08-06&sr=bs&sp=r&se=2099-01-01T00:00:00Z"
              f"&sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D")
    target = service.get_blob_client(unique_name("dst"), "disk.vhd")
    service.create_container(target.container_name)

    with pytest.raises(Exception) as refused:
        target.start_copy_from_url(forged)

    assert "CannotVerifyCopySource" in str(refused.value)
    assert "failed to authenticate the request" in str(refused.value)      # the source's own reason
