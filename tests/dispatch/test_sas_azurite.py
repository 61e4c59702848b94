"""SAS minted at dispatch, on real Azurite: each one can do its one job and nothing else."""
from __future__ import annotations

import http.client
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.adapters.blob_sas import BlobSasMinter, StatusBlobStore
from shared.clock import FixedClock
from shared.errors import ConflictError, PermanentError


def _http(method: str, url: str, headers: dict | None = None, body: bytes = b"") -> tuple[int, bytes]:
    """One raw request, as the handler sends them (http.client, no SDK, no x-ms-version)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, f"{parts.path}?{parts.query}", body=body,
                     headers={"Content-Length": str(len(body)), **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _query(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest.fixture
def clock():
    return FixedClock(datetime.now(timezone.utc))


@pytest.fixture
def minter(blob_service, clock):
    return BlobSasMinter(blob_service, clock=clock)


@pytest.fixture
def status_store(blob_service, unique_name):
    return StatusBlobStore(blob_service, unique_name("status"))


def test_disk_sas_can_snapshot_its_disk_with_metadata(make_vm, minter, blob_service):
    """The extension's snapshot PUT succeeds and the snapshot carries the job's metadata."""
    vm = make_vm()
    disk = vm.disks[0]
    sas_url = minter.disk_sas_url(disk.blob_url)
    status, _ = _http("PUT", sas_url + "&comp=snapshot", {"x-ms-meta-jobId": "j-42"})
    assert status == 201
    container = blob_service.get_container_client(sas_url.split("/")[4])
    snapshots = [b for b in container.list_blobs(include=["snapshots", "metadata"])
                 if b.snapshot and b.name == disk.blob_url.rsplit("/", 1)[1]]
    assert len(snapshots) == 1 and snapshots[0].metadata == {"jobId": "j-42"}


def test_disk_sas_is_create_only_and_touches_nothing_else(make_vm, minter, blob_service):
    """A leaked disk SAS cannot read the disk, change it, delete it, or snapshot another disk."""
    vm = make_vm(data_luns=(0,))
    os_disk, data_disk = vm.disks
    sas_url = minter.disk_sas_url(os_disk.blob_url)
    query = urlsplit(sas_url).query
    assert _query(sas_url)["sp"] == "c" and _query(sas_url)["sr"] == "b"
    refused = {
        "read": _http("GET", sas_url),
        "properties": _http("HEAD", sas_url),
        "write pages": _http("PUT", sas_url + "&comp=page", {"x-ms-page-write": "update",
                             "x-ms-range": "bytes=0-511", "x-ms-version": "2021-08-06"}, b"x" * 512),
        "overwrite": _http("PUT", sas_url, {"x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"}, b"abc"),
        "delete": _http("DELETE", sas_url, {"x-ms-delete-snapshots": "include", "x-ms-version": "2021-08-06"}),
        "snapshot another disk": _http("PUT", f"{data_disk.blob_url}?{query}&comp=snapshot"),
    }
    assert {name: status for name, (status, _) in refused.items()} == {name: 403 for name in refused}
    props = blob_service.get_blob_client(*os_disk.blob_url.split("/")[-2:]).get_blob_properties()
    assert props.blob_type == "PageBlob" and props.size == 1024


def test_status_sas_reads_and_writes_its_blob_like_the_handler(status_store, minter):
    """The handler's GET-then-PUT on the status blob works with its SAS."""
    status_name, _ = status_store.create_attempt_blobs("job-a", 1)
    sas_url = minter.status_sas_url(status_store.url(status_name))
    assert _query(sas_url)["sp"] == "rw"
    status, body = _http("GET", sas_url)
    assert (status, body) == (200, b"")
    status, _ = _http("PUT", sas_url, {"x-ms-blob-type": "BlockBlob"}, b'[{"status": {"code": "4"}}]')
    assert status == 201
    assert status_store.read(status_name) == b'[{"status": {"code": "4"}}]'


def test_status_sas_cannot_touch_another_blob_or_delete(status_store, minter):
    """A status SAS cannot read or overwrite another job's status, nor delete its own blob."""
    status_name, log_name = status_store.create_attempt_blobs("job-b", 1)
    other_name, _ = status_store.create_attempt_blobs("job-c", 1)
    query = urlsplit(minter.status_sas_url(status_store.url(status_name))).query
    for name in (log_name, other_name):
        other = f"{status_store.url(name)}?{query}"
        assert _http("GET", other)[0] == 403
        assert _http("PUT", other, {"x-ms-blob-type": "BlockBlob"}, b"x")[0] == 403
    own = f"{status_store.url(status_name)}?{query}"
    assert _http("DELETE", own, {"x-ms-version": "2021-08-06"})[0] == 403
    assert status_store.read(status_name) == b"" and status_store.read(other_name) == b""


def test_log_sas_is_read_write_on_the_log_blob_only(status_store, minter):
    """The log SAS writes the log blob and cannot write the status blob."""
    status_name, log_name = status_store.create_attempt_blobs("job-d", 1)
    sas_url = minter.log_sas_url(status_store.url(log_name))
    assert _http("PUT", sas_url, {"x-ms-blob-type": "BlockBlob"}, b"log line")[0] == 201
    other = f"{status_store.url(status_name)}?{urlsplit(sas_url).query}"
    assert _http("PUT", other, {"x-ms-blob-type": "BlockBlob"}, b"x")[0] == 403


def test_sas_window_covers_the_extension_deadline(make_vm, minter, clock):
    """Every SAS starts 15 min early (clock skew) and lasts the 140-min window plus 30 min."""
    now = clock.now()
    url = minter.disk_sas_url(make_vm().disks[0].blob_url)
    start = datetime.fromisoformat(_query(url)["st"].replace("Z", "+00:00"))
    expiry = datetime.fromisoformat(_query(url)["se"].replace("Z", "+00:00"))
    assert abs(start - (now - timedelta(minutes=15))) < timedelta(seconds=1)
    assert abs(expiry - (now + timedelta(minutes=170))) < timedelta(seconds=1)
    assert timedelta(minutes=140) < expiry - now <= timedelta(minutes=171)


def test_sas_minted_with_a_clock_in_the_past_is_refused(make_vm, blob_service):
    """A command that sat for hours carries expired SAS: Storage refuses the snapshot."""
    vm = make_vm()
    stale = BlobSasMinter(blob_service, clock=FixedClock(datetime.now(timezone.utc) - timedelta(hours=3)))
    status, body = _http("PUT", stale.disk_sas_url(vm.disks[0].blob_url) + "&comp=snapshot")
    assert status == 403 and b"AuthorizationFailure" in body, body


def test_no_sas_for_a_blob_in_another_account(minter):
    """A disk outside the backup storage account fails clearly instead of getting a useless SAS."""
    with pytest.raises(PermanentError, match="not in storage account"):
        minter.disk_sas_url("https://elsewhere.blob.core.windows.net/vhds/os.vhd")


def test_each_attempt_gets_its_own_empty_pair(status_store):
    """Every attempt has an empty status and log blob of its own, named after job and attempt."""
    first = status_store.create_attempt_blobs("job-e", 1)
    second = status_store.create_attempt_blobs("job-e", 2)
    assert first == ("job-e/1.Status.txt", "job-e/1.Logs.txt")
    assert second == ("job-e/2.Status.txt", "job-e/2.Logs.txt")
    assert all(status_store.read(name) == b"" for name in first + second)


def test_a_written_blob_is_never_reused(status_store):
    """Once the extension wrote an attempt's status, that attempt cannot be set up again."""
    status_name, _ = status_store.create_attempt_blobs("job-f", 1)
    assert status_store.create_attempt_blobs("job-f", 1)       # still empty: an interrupted try
    status_store._service.get_blob_client(status_store.container, status_name).upload_blob(
        b'[{"status": {}}]', overwrite=True)
    with pytest.raises(ConflictError, match="non-empty"):
        status_store.create_attempt_blobs("job-f", 1)
    assert status_store.read(status_name) == b'[{"status": {}}]'


def test_managed_identity_gets_user_delegation_sas():
    """With a managed identity (no account key) the SAS is a user-delegation SAS, one key for many."""
    from azure.storage.blob import BlobServiceClient

    from tests.dispatch.recording import RecordingTransport, StaticCredential

    now = datetime.now(timezone.utc).replace(microsecond=0)
    key_xml = (
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><UserDelegationKey>"
        "<SignedOid>11111111-1111-1111-1111-111111111111</SignedOid>"
        "<SignedTid>22222222-2222-2222-2222-222222222222</SignedTid>"
        f"<SignedStart>{(now - timedelta(minutes=15)).strftime('%Y-%m-%dT%H:%M:%SZ')}</SignedStart>"
        f"<SignedExpiry>{(now + timedelta(hours=12)).strftime('%Y-%m-%dT%H:%M:%SZ')}</SignedExpiry>"
        "<SignedService>b</SignedService><SignedVersion>2025-11-05</SignedVersion>"
        "<Value>a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U=</Value></UserDelegationKey>").encode()
    transport = RecordingTransport(200, key_xml, {"Content-Type": "application/xml"})
    service = BlobServiceClient("https://acct.blob.core.windows.net", credential=StaticCredential(),
                                transport=transport, retry_total=0)
    minter = BlobSasMinter(service, clock=FixedClock(now))
    status = _query(minter.status_sas_url("https://acct.blob.core.windows.net/status/j/1.Status.txt"))
    disk = _query(minter.disk_sas_url("https://acct.blob.core.windows.net/vhds/os.vhd"))
    assert status["skoid"] == "11111111-1111-1111-1111-111111111111" and status["sp"] == "rw"
    assert disk["sp"] == "c" and disk["spr"] == "https" and disk["sig"]
    assert [r.url.split("?")[1] for r in transport.requests] == ["restype=service&comp=userdelegationkey"]
