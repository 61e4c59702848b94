"""The local host's blob receipts: written in batches to the host's storage, read back after a restart,
shared by the instances of one host id, and compacted without losing a receipt, also when two
instances write and compact at the same time."""
from __future__ import annotations

import functools
import threading
import time

import pytest
from azure.storage.blob import BlobServiceClient

import devhost.host
from devhost.host import HOSTS_CONTAINER, LocalFunctionsHost
from devhost.receipts import CHUNK_SUFFIX, Receipt, ReceiptJournal, journal_prefix, read_receipts
from tests.devhost.test_blob_detection import blob_app

pytestmark = [pytest.mark.timeout(120), pytest.mark.integration]


@pytest.fixture
def env(azurite, unique_name):
    return {"CONTAINER": unique_name("status"), "ST": azurite.connection_string,
            "AzureWebJobsStorage": azurite.host_connection_string}


@pytest.fixture
def hosts(azurite):
    with BlobServiceClient.from_connection_string(azurite.host_connection_string) as service:
        container = service.get_container_client(HOSTS_CONTAINER)
        if not container.exists():
            container.create_container()
        yield container


def _chunks(hosts, prefix: str) -> list[str]:
    return [name for name in hosts.list_blob_names(name_starts_with=prefix) if name.endswith(CHUNK_SUFFIX)]


def _upload(container, count: int, stem: str = "job", data: bytes = b"report") -> list[str]:
    names = [f"{stem}{i:03d}/1.Status.txt" for i in range(count)]
    for name in names:
        container.upload_blob(name, data, overwrite=True)
    return names


# Journals that flush only when a pass ends (or a batch fills): what a pass writes then does not depend on
# how long the machine takes over it. The flush after ``interval`` has a test of its own below.
PASS_END_ONLY = 3600.0


def test_a_pass_writes_its_receipts_as_one_blob(env, container, hosts, unique_name, monkeypatch):
    """Forty handled blobs leave one stored chunk, not forty receipt blobs; a new host reads it back."""
    monkeypatch.setattr(devhost.host, "ReceiptJournal", functools.partial(ReceiptJournal, interval=PASS_END_ONLY))
    names = _upload(container, 40)
    host_id = unique_name("host")
    requests: list[tuple[str, str]] = []
    options = {"raw_request_hook": lambda r: requests.append((r.http_request.method, r.http_request.url))}
    with LocalFunctionsHost(blob_app([]), env, host_id=host_id, storage_client_options=options) as host:
        assert host.scan_blobs("status") == 40
    prefix = journal_prefix(host_id, "status", env["CONTAINER"])
    assert len(_chunks(hosts, prefix)) == 1
    assert [method for method, url in requests if HOSTS_CONTAINER + "/" in url and method == "PUT"] == ["PUT"]
    receipts = read_receipts(hosts, host_id, "status", env["CONTAINER"])
    assert sorted(r.blob for r in receipts) == sorted(names)
    assert not any(r.poison for r in receipts)


def test_a_host_killed_before_its_flush_runs_those_blobs_again(env, container, unique_name):
    """Receipts are durable per flush: a host that dies before it writes them hands the blobs to the
    next start (at least once, as in Azure); the flushed ones are not run again."""
    _upload(container, 3, stem="early")
    host_id = unique_name("host")
    seen: list[str] = []
    first = LocalFunctionsHost(blob_app(seen), env, host_id=host_id)
    assert first.scan_blobs("status") == 3                  # flushed at the end of the pass
    _upload(container, 2, stem="late")
    state = first._blob_state["status"]
    state.journal.flush = lambda wait=True: False           # the process dies before its next write
    assert first.scan_blobs("status") == 2
    first.stop()
    with LocalFunctionsHost(blob_app(seen), env, host_id=host_id) as second:
        assert second.scan_blobs("status") == 2             # the two late ones, not the three early
    assert sorted(seen[-2:]) == sorted(seen[3:5])


def test_receipts_are_flushed_during_a_long_pass(hosts, unique_name):
    """A full batch is written at once, and so is whatever waited longer than the interval."""
    journal = ReceiptJournal(hosts, unique_name("host"), "status", "c", batch=10, interval=3600)
    for i in range(25):
        journal.add(Receipt(f"b{i}", f"0x{i}"))
    assert len(_chunks(hosts, journal.prefix)) == 2          # two batches of 10; five wait
    timed = ReceiptJournal(hosts, unique_name("host"), "status", "c", batch=1000, interval=0.0)
    timed.add(Receipt("b", "0x1"))
    assert len(_chunks(hosts, timed.prefix)) == 1


def test_compaction_keeps_every_receipt_a_listing_still_shows(env, container, hosts, unique_name, monkeypatch):
    """After many passes the chunks are merged into one; receipts of deleted blobs are dropped, in
    storage and in memory, and nothing handled runs again."""
    monkeypatch.setattr(devhost.host, "ReceiptJournal",
                        functools.partial(ReceiptJournal, compact_after=3, interval=PASS_END_ONLY))
    host_id = unique_name("host")
    seen: list[str] = []
    with LocalFunctionsHost(blob_app(seen), env, host_id=host_id) as host:
        for round_ in range(5):
            if round_ == 4:                                     # four chunks stored: compaction is due
                container.delete_blob("r0-000/1.Status.txt")
            _upload(container, 2, stem=f"r{round_}-")
            assert host.scan_blobs("status") == 2
        assert host.scan_blobs("status") == 0
        memory = host._blob_state["status"].receipts
    prefix = journal_prefix(host_id, "status", env["CONTAINER"])
    assert len(_chunks(hosts, prefix)) <= 2
    stored = {r.blob for r in read_receipts(hosts, host_id, "status", env["CONTAINER"])}
    assert stored == {f"r{r}-{i:03d}/1.Status.txt" for r in range(5) for i in range(2)} - {"r0-000/1.Status.txt"}
    assert "r0-000/1.Status.txt" not in {blob for blob, _ in memory}
    assert len(seen) == 10
    with LocalFunctionsHost(blob_app(seen), env, host_id=host_id) as again:
        assert again.scan_blobs("status") == 0


def test_two_instances_writing_and_compacting_at_once_lose_no_receipt(hosts, unique_name):
    """Two journals of one host id (two instances) add, flush and compact in parallel threads; every
    receipt either added is stored at the end."""
    host_id = unique_name("host")
    journals = [ReceiptJournal(hosts, host_id, "status", "c", batch=7, interval=3600, compact_after=2)
                for _ in range(2)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    # Chunks written since a listing began are kept whole by compaction: here every chunk is, however
    # long the test takes (the listing is empty, so a chunk older than it would lose its receipts).
    listed_since = time.time_ns()

    def work(index: int) -> None:
        try:
            start.wait()
            for i in range(120):
                journals[index].add(Receipt(f"i{index}-{i:03d}", f"0x{i}"))
                if i % 15 == 14 and journals[index].compaction_due:
                    assert journals[index].compact(set(), listed_since) is not None
            journals[index].flush()
        except BaseException as exc:         # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stored = {r.blob for r in read_receipts(hosts, host_id, "status", "c")}
    assert stored == {f"i{index}-{i:03d}" for index in range(2) for i in range(120)}
