"""Digests recorded right after the backup, on Azurite (real SDK): a new point of blob snapshots is one digest
request, wherever its success is applied (again when applied again: the queue drops the repeat); the worker
reads each snapshot once and records its digest, so the point's first restore reads its copy only; a second
worker at once, or a redelivery, records nothing twice; a snapshot already gone is reported, not an error; a
snapshot this service cannot read (another account) is counted refused, not retried; a request for a point
that no longer exists, or a hostile one, does nothing."""
from __future__ import annotations

import dataclasses
import logging
import threading

import pytest

from shared.adapters.verification import DIGEST_CONTAINER
from shared.domain.disk_digest import DigestRequest
from shared.domain.inventory import BackupMethod, OS_DISK_LUN
from shared.domain.restore import RestoreTask
from shared.errors import ValidationError
from shared.ports import Digested
from shared.services.point_data import record_point_digests, request_digests
from shared.services.restore import request_restore, run_restore
from tests.fakes import RecordingDigestQueue
from tests.restore.conftest import digest_blob
from tests.restore.test_digests import _copier, _copy


@pytest.fixture
def digest_svc(svc):
    """The restore services with digests at backup time on, their queue a list the test drains."""
    svc.settings = dataclasses.replace(svc.settings, digest_after_backup=True)
    svc.__dict__["digest_queue"] = RecordingDigestQueue()
    return svc


def test_a_new_point_is_one_request_and_its_worker_records_every_disk_once(digest_svc, backed_up):
    backed = backed_up()
    assert request_digests(digest_svc, backed.point) and request_digests(digest_svc, backed.point)
    assert [r.message_id for r in digest_svc.digest_queue.sent] == [DigestRequest(backed.vm.name,
                                                                                   backed.point.name).message_id]

    (counts,) = digest_svc.digest_queue.drain(digest_svc)

    assert counts[Digested.RECORDED] == 2 and all(digest_blob(digest_svc, d.snapshot).exists()
                                                  for d in backed.point.disks)
    # A redelivery reads the digests, records nothing again.
    again = record_point_digests(digest_svc, DigestRequest(backed.vm.name, backed.point.name))
    assert again[Digested.PRESENT] == 2 and again[Digested.RECORDED] == 0


def test_the_first_restore_of_a_point_digested_after_its_backup_reads_the_copy_only(digest_svc, backed_up,
                                                                                   unique_name, caplog):
    backed = backed_up()
    request_digests(digest_svc, backed.point)
    digest_svc.digest_queue.drain(digest_svc)

    job = request_restore(digest_svc, backed.vm.name, backed.point.name, unique_name("restored"))
    with caplog.at_level(logging.INFO, logger="shared.services.restore"):
        done = run_restore(digest_svc, RestoreTask(job.job_id, backed.vm.name))

    assert done is not None and done.status.value == "Completed", done
    verified = [r.getMessage() for r in caplog.records if "snapshot digest" in r.getMessage()]
    assert len(verified) == 2 and all("snapshot digest used" in m for m in verified), verified


def test_a_recorded_digest_serves_a_verification_that_reads_no_byte_of_the_snapshot(
        digest_svc, backed_up, storage_connection_string, unique_name):
    backed = backed_up()
    snapshot = next(d.snapshot for d in backed.point.disks if d.lun == OS_DISK_LUN)
    copier, reads = _copier(storage_connection_string, digest_svc)
    assert copier.record_digest(snapshot) is Digested.RECORDED
    target = _copy(copier, snapshot, unique_name("restored"), "one.vhd")
    reads.snapshot = reads.copy = 0

    result = copier.verify(snapshot, target)

    assert result.equal and result.digest == "used" and reads.snapshot == 0 and reads.copy > 0


def test_two_workers_at_once_record_one_digest_per_snapshot(digest_svc, backed_up):
    backed = backed_up()
    request = DigestRequest(backed.vm.name, backed.point.name)
    barrier, results = threading.Barrier(2), []

    def work() -> None:
        barrier.wait()
        results.append(record_point_digests(digest_svc, request))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 2 and sum(r[Digested.RECORDED] + r[Digested.PRESENT] for r in results) == 4
    for disk in backed.point.disks:
        listed = list(digest_svc.blob_service.get_container_client(DIGEST_CONTAINER).list_blobs(
            name_starts_with=digest_blob(digest_svc, disk.snapshot).blob_name))
        assert len(listed) == 1


def test_a_snapshot_gone_before_its_digest_is_counted_gone_and_leaves_no_digest(digest_svc, backed_up):
    backed = backed_up()
    gone = backed.point.disks[0].snapshot
    assert digest_svc.snapshots.delete_snapshot(gone)

    counts = record_point_digests(digest_svc, DigestRequest(backed.vm.name, backed.point.name))

    assert counts[Digested.GONE] == 1 and counts[Digested.RECORDED] == 1
    assert not digest_blob(digest_svc, gone).exists()


def test_a_snapshot_in_another_account_is_refused_not_retried_and_the_rest_is_recorded(digest_svc, backed_up):
    backed = backed_up()
    foreign = dataclasses.replace(backed.point.disks[0], snapshot="https://acct.blob.core.windows.net/vhds/os.vhd"
                                                                  "?snapshot=2025-03-01T02:03:40.1234567Z")
    point = dataclasses.replace(backed.point, name="000000000000000042", disks=(foreign, backed.point.disks[1]))
    assert digest_svc.recovery_points.add_if_absent(point)

    counts = record_point_digests(digest_svc, DigestRequest(point.vm_name, point.name))

    assert counts[Digested.REFUSED] == 1 and counts[Digested.RECORDED] == 1


def test_nothing_is_requested_when_turned_off_or_for_a_point_with_no_blob_snapshot(digest_svc, backed_up):
    backed = backed_up()
    restore_point = dataclasses.replace(backed.point, method=BackupMethod.RESTORE_POINT,
                                        restore_point_id="/subscriptions/s/rp/1")
    assert not request_digests(digest_svc, restore_point)
    digest_svc.settings = dataclasses.replace(digest_svc.settings, digest_after_backup=False)
    assert not request_digests(digest_svc, backed.point)
    assert digest_svc.digest_queue.sent == []


def test_a_request_for_a_point_that_is_gone_does_nothing(digest_svc):
    counts = record_point_digests(digest_svc, DigestRequest("no-such-vm", "000000000000000001"))
    assert not any(counts.values())


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"schema": "vmsnap.digest.v0", "vmName": "vm1", "rpName": "1"}',
    b'{"schema": "vmsnap.digest.v1", "vmName": "a/b#c", "rpName": "1"}',
    b'{"schema": "vmsnap.digest.v1", "vmName": "vm1", "rpName": "1/../2"}',
    b'{"schema": "vmsnap.digest.v1", "vmName": "vm1"}',
    b'{"schema": "vmsnap.digest.v1", "vmName": "' + b"v" * 65 + b'", "rpName": "1"}',
])
def test_a_hostile_request_is_refused_with_a_reason(body):
    with pytest.raises(ValidationError):
        DigestRequest.from_json(body)
    request = DigestRequest("vm1", "123")
    assert DigestRequest.from_json(request.to_json()) == request
