"""The snapshot digest on Azurite (real SDK): the first verification of a snapshot reads both blobs and
records the digest, a later one reads the copy only and still catches a flipped byte; a digest that cannot
vouch for the snapshot (another length, wrong hashes) is not trusted and is replaced; two verifications at
once leave one valid digest; deleting the snapshot deletes its digest; a restore leaves it behind."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import pytest
from azure.storage.blob import BlobServiceClient

from shared.adapters.snapshots import BlobSnapshots
from shared.adapters.verification import DIGEST_CONTAINER, VERIFY_PIECE
from shared.domain.disk_digest import DiskDigest, decode
from shared.domain.inventory import OS_DISK_LUN
from shared.services.restore import request_restore, run_restore
from shared.domain.restore import RestoreTask
from tests.polling import eventually
from tests.restore.conftest import MIB, Backed, digest_blob


class _Reads:
    """Ranged GETs on the wire, by side: a snapshot's (``snapshot=`` in the URL) or a base blob's."""

    def __init__(self):
        self.snapshot = self.copy = 0
        self._lock = threading.Lock()

    def __call__(self, request) -> None:
        http = request.http_request
        if http.method == "GET" and "x-ms-range" in http.headers and DIGEST_CONTAINER not in http.url:
            with self._lock:
                if "snapshot=" in http.url:
                    self.snapshot += 1
                else:
                    self.copy += 1


def _copier(storage_connection_string, svc) -> tuple[BlobSnapshots, _Reads]:
    reads = _Reads()
    service = BlobServiceClient.from_connection_string(storage_connection_string, raw_request_hook=reads)
    return BlobSnapshots(service, clock=svc.clock), reads


def _copy(copier: BlobSnapshots, snapshot_url: str, container: str, name: str) -> str:
    copier.start_copy(snapshot_url, container, name, owner="test")
    assert eventually(lambda: copier.inspect(container, name).copy_status in (None, "success"))
    return copier.target_url(container, name)


@dataclass
class _Point:
    backed: Backed
    snapshot: str               # the OS disk's
    copier: BlobSnapshots       # on a client that counts its reads
    reads: _Reads
    container: str              # where copies go


@pytest.fixture
def point(svc, backed_up, storage_connection_string, unique_name) -> _Point:
    backed = backed_up()
    copier, reads = _copier(storage_connection_string, svc)
    return _Point(backed, next(d.snapshot for d in backed.point.disks if d.lun == OS_DISK_LUN), copier, reads,
                  unique_name("restored"))


def test_the_first_verification_records_the_digest_and_a_later_one_reads_the_copy_only(svc, point):
    snapshot, copier, reads, container = point.snapshot, point.copier, point.reads, point.container

    first = copier.verify(snapshot, _copy(copier, snapshot, container, "one.vhd"))
    assert first.equal and first.digest == "recorded" and reads.snapshot > 0
    assert digest_blob(svc, snapshot).exists()

    reads.snapshot = reads.copy = 0
    later = copier.verify(snapshot, _copy(copier, snapshot, container, "two.vhd"))
    assert later.equal and later.digest == "used"
    assert reads.snapshot == 0 and reads.copy > 0


def test_a_verification_that_trusts_the_digest_still_catches_a_flipped_byte_in_the_copy(svc, point):
    snapshot, copier, container = point.snapshot, point.copier, point.container
    assert copier.verify(snapshot, _copy(copier, snapshot, container, "good.vhd")).digest == "recorded"
    # The bad copy is written page by page, not copied: a page written into an Azurite copy of a page blob
    # changes its source snapshot too (Azurite copies by reference; docs/restore.md).
    data = bytearray(point.backed.data[OS_DISK_LUN])
    data[3 * MIB + 100] ^= 0x01
    bad = svc.blob_service.get_blob_client(container, "bad.vhd")
    bad.create_page_blob(len(data))
    for offset in (0, 3 * MIB, 5 * MIB):
        bad.upload_page(bytes(data[offset:offset + MIB]), offset=offset, length=MIB)
    target = bad.url

    result = copier.verify(snapshot, target)

    assert not result.equal and str(3 * MIB + 100) in result.detail
    assert copier.verify(snapshot, _copy(copier, snapshot, container, "again.vhd")).digest == "used"


def test_a_digest_of_another_length_or_with_wrong_hashes_is_not_trusted_and_is_replaced(svc, point):
    snapshot, copier, reads = point.snapshot, point.copier, point.reads
    target = _copy(copier, snapshot, point.container, "one.vhd")
    assert copier.verify(snapshot, target).digest == "recorded"
    blob = digest_blob(svc, snapshot)
    good = blob.download_blob()
    recorded, metadata = good.readall(), good.properties.metadata
    length = len(point.backed.data[OS_DISK_LUN])
    right = decode(recorded, length=length, piece=VERIFY_PIECE)

    for wrong in (DiskDigest(length + VERIFY_PIECE, VERIFY_PIECE, right.hashes + bytes(32)),
                  DiskDigest(length, VERIFY_PIECE, bytes(b ^ 0xFF for b in right.hashes))):
        blob.upload_blob(wrong.encode(), overwrite=True, metadata=metadata)
        reads.snapshot = 0
        result = copier.verify(snapshot, target)
        assert result.equal and result.digest == "recorded" and reads.snapshot > 0
        assert blob.download_blob().readall() == recorded


def test_two_verifications_of_the_same_snapshot_at_once_both_pass_and_leave_one_valid_digest(svc, point):
    snapshot, copier = point.snapshot, point.copier
    targets = [_copy(copier, snapshot, point.container, f"{n}.vhd") for n in range(2)]
    barrier, results = threading.Barrier(2), []

    def verify(target: str) -> None:
        barrier.wait()
        results.append(copier.verify(snapshot, target))

    threads = [threading.Thread(target=verify, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 2 and all(r.equal for r in results)
    listed = list(svc.blob_service.get_container_client(DIGEST_CONTAINER).list_blobs(
        name_starts_with=digest_blob(svc, snapshot).blob_name))
    assert len(listed) == 1
    assert copier.verify(snapshot, targets[0]).digest == "used"


def test_deleting_a_snapshot_deletes_its_digest(svc, point):
    snapshot, copier = point.snapshot, point.copier
    copier.verify(snapshot, _copy(copier, snapshot, point.container, "one.vhd"))
    assert digest_blob(svc, snapshot).exists()

    assert svc.snapshots.delete_snapshot(snapshot)

    assert not digest_blob(svc, snapshot).exists()


def test_a_restore_records_the_digest_of_each_disk_and_the_next_restore_of_the_point_uses_it(
        svc, backed_up, unique_name, caplog):
    backed = backed_up()
    for run, expected in enumerate(("recorded", "used")):
        caplog.clear()
        job = request_restore(svc, backed.vm.name, backed.point.name, unique_name("restored"))
        with caplog.at_level(logging.INFO, logger="shared.services.restore"):
            done = run_restore(svc, RestoreTask(job.job_id, backed.vm.name))

        assert done is not None and done.status.value == "Completed", done
        assert all(digest_blob(svc, d.snapshot).exists() for d in backed.point.disks)
        verified = [r.getMessage() for r in caplog.records if "snapshot digest" in r.getMessage()]
        assert len(verified) == 2 and all(f"snapshot digest {expected}" in m for m in verified), verified
