"""The DiskCopier contract (restore's server-side copies), on the fake and on the Blob adapter (Azurite): a
snapshot is copied into a page blob that names its restore job; an existing blob is replaced only when asked
(of racing first copies one wins); a snapshot that is gone is NotFoundError, a URL naming no snapshot a
ValidationError; only the job that made a blob deletes it; a safety snapshot puts a replaced blob back;
verification tells an exact copy from a changed one; ranged reads end with the blob; a container goes only
once empty. (How verify reads, pages or digest, is the adapter's: only its answer is pinned here.)"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import pytest
from azure.storage.blob import BlobClient

from shared.adapters.snapshots import BlobSnapshots
from shared.clock import SystemClock
from shared.errors import ConflictError, NotFoundError, ValidationError
from shared.ports import DiskCopier
from tests.contracts.conftest import REAL
from tests.fakes import FakeDiskCopier
from tests.polling import eventually

PORTS = (DiskCopier,)

DISK = bytes(range(256)) * 32                       # 8 KiB: sixteen 512-byte pages
CHANGED = DISK[:5000] + b"\xff" + DISK[5001:]       # one byte differs, at 5000
OWNER, OTHER = "restore-job-1", "restore-job-2"


@dataclass
class Rig:
    """The copier, and the storage around it: disks written and snapshotted as a backup would, a snapshot
    deleted behind the service's back, and containers of the test's own (removed afterwards)."""

    copier: DiskCopier
    put: Callable[[str, str, bytes], str]
    snapshot: Callable[[str, str], str]
    forget: Callable[[str], None]
    new_container: Callable[[], str]
    containers: list[str] = field(default_factory=list)

    def backed_up(self, data: bytes = DISK) -> str:
        """A snapshot of a disk holding ``data``."""
        disks = self.new_container()
        self.put(disks, "disk.vhd", data)
        return self.snapshot(disks, "disk.vhd")

    def copied(self, snapshot_url: str, container: str, name: str = "restored.vhd", *, replace: bool = False) -> None:
        """Copy as the restore job OWNER and wait for storage to finish it."""
        self.copier.start_copy(snapshot_url, container, name, owner=OWNER, replace=replace)
        assert eventually(lambda: self.copier.inspect(container, name).copy_status == "success", timeout=60)


def _fake(unique_name) -> Rig:
    fake = FakeDiskCopier()

    def forget(url: str) -> None:
        del fake.snapshots[fake._locate(url)][url.partition("snapshot=")[2]]

    return Rig(fake, fake.put, fake.snapshot, forget, lambda: unique_name("restore"))


@pytest.fixture(params=["fake", REAL("azurite")])
def copier_rig(request, unique_name) -> Iterator[Rig]:
    if request.param == "fake":
        yield _fake(unique_name)
        return
    service = request.getfixturevalue("blob_service_client")
    made: list[str] = []

    def new_container() -> str:
        name = unique_name("restore")
        made.append(name)
        return name

    def put(container: str, name: str, data: bytes) -> str:
        client = service.get_container_client(container)
        if not client.exists():
            client.create_container()
        blob = client.get_blob_client(name)
        if not blob.exists():
            blob.create_page_blob(len(data))
        blob.upload_page(data, offset=0, length=len(data))
        return str(blob.url)

    def snapshot(container: str, name: str) -> str:
        blob = service.get_blob_client(container, name)
        return f"{blob.url}?snapshot={blob.create_snapshot()['snapshot']}"

    def forget(url: str) -> None:
        BlobClient.from_blob_url(url, credential=service.credential).delete_blob()

    yield Rig(BlobSnapshots(service, clock=SystemClock()), put, snapshot, forget, new_container)
    for name in made:
        client = service.get_container_client(name)
        if client.exists():
            client.delete_container()


def test_a_snapshot_is_copied_into_a_new_blob_that_names_its_job(copier_rig):
    copier, target = copier_rig.copier, copier_rig.new_container()
    assert copier.inspect(target, "restored.vhd").exists is False
    copier_rig.copied(copier_rig.backed_up(), target)
    found = copier.inspect(target, "restored.vhd")
    assert (found.exists, found.owner, found.bytes_total) == (True, OWNER, len(DISK))
    assert copier.read_range(copier.target_url(target, "restored.vhd"), 0, len(DISK)) == DISK
    assert copier.list_owned(target, OWNER) == ["restored.vhd"] and copier.list_owned(target, OTHER) == []


def test_an_existing_blob_is_replaced_only_when_asked(copier_rig):
    copier, target = copier_rig.copier, copier_rig.new_container()
    copier_rig.copied(copier_rig.backed_up(), target)
    changed = copier_rig.backed_up(CHANGED)
    with pytest.raises(ConflictError):
        copier.start_copy(changed, target, "restored.vhd", owner=OWNER)
    assert copier.read_range(copier.target_url(target, "restored.vhd"), 0, len(DISK)) == DISK
    copier_rig.copied(changed, target, replace=True)
    assert copier.read_range(copier.target_url(target, "restored.vhd"), 0, len(DISK)) == CHANGED


def test_of_racing_first_copies_into_one_blob_exactly_one_starts(copier_rig):
    """Two deliveries of one restore task: the blob is written once, the other delivery is told."""
    copier, target, snapshot = copier_rig.copier, copier_rig.new_container(), copier_rig.backed_up()
    copier_rig.put(target, "placeholder.vhd", DISK[:512])       # the container exists: only the blob races
    barrier = threading.Barrier(6)

    def copy(_: int) -> str:
        barrier.wait(timeout=60)
        try:
            copier.start_copy(snapshot, target, "restored.vhd", owner=OWNER)
            return "started"
        except ConflictError:
            return "conflict"

    with ThreadPoolExecutor(6) as pool:
        assert sorted(pool.map(copy, range(6))) == ["conflict"] * 5 + ["started"]


def test_a_snapshot_that_is_gone_is_not_found_and_leaves_nothing(copier_rig):
    copier, target, snapshot = copier_rig.copier, copier_rig.new_container(), copier_rig.backed_up()
    copier_rig.forget(snapshot)
    with pytest.raises(NotFoundError):
        copier.start_copy(snapshot, target, "restored.vhd", owner=OWNER)
    assert copier.inspect(target, "restored.vhd").exists is False


def test_a_url_naming_no_snapshot_is_refused(copier_rig):
    """A base blob is never a copy's source nor rolled back to: only a snapshot is."""
    copier, base = copier_rig.copier, copier_rig.backed_up().partition("?")[0]
    with pytest.raises(ValidationError):
        copier.start_copy(base, copier_rig.new_container(), "restored.vhd", owner=OWNER)
    with pytest.raises(ValidationError):
        copier.restore_from(base)


def test_only_the_job_that_made_a_blob_deletes_it(copier_rig):
    copier, target = copier_rig.copier, copier_rig.new_container()
    copier_rig.copied(copier_rig.backed_up(), target)
    assert copier.delete_owned(target, "restored.vhd", OTHER) is False
    assert copier.inspect(target, "restored.vhd").exists is True
    assert copier.delete_owned(target, "restored.vhd", OWNER) is True
    assert copier.delete_owned(target, "restored.vhd", OWNER) is False
    assert copier.inspect(target, "restored.vhd").exists is False


def test_a_safety_snapshot_puts_a_replaced_blob_back(copier_rig):
    """An in-place restore that fails rolls the disk back to what it held before."""
    copier, disks = copier_rig.copier, copier_rig.new_container()
    url = copier_rig.put(disks, "live.vhd", DISK)
    safety = copier.safety_snapshot(disks, "live.vhd", OWNER)
    assert "snapshot=" in safety and "sig=" not in safety
    copier_rig.put(disks, "live.vhd", CHANGED)
    copier.restore_from(safety)
    assert copier.read_range(url, 0, len(DISK)) == DISK
    with pytest.raises(NotFoundError):
        copier.safety_snapshot(disks, "never-written.vhd", OWNER)


def test_verification_tells_an_exact_copy_from_a_changed_one(copier_rig):
    copier, target, snapshot = copier_rig.copier, copier_rig.new_container(), copier_rig.backed_up()
    copier_rig.copied(snapshot, target, "exact.vhd")
    copier_rig.copied(copier_rig.backed_up(CHANGED), target, "changed.vhd")
    copier_rig.copied(copier_rig.backed_up(DISK + DISK), target, "longer.vhd")
    exact = copier.verify(snapshot, copier.target_url(target, "exact.vhd"))
    assert (exact.equal, exact.length) == (True, len(DISK)) and 0 < exact.compared_bytes <= len(DISK)
    changed = copier.verify(snapshot, copier.target_url(target, "changed.vhd"))
    assert changed.equal is False and "5000" in changed.detail
    assert copier.verify(snapshot, copier.target_url(target, "longer.vhd")).equal is False
    with pytest.raises(NotFoundError):
        copier.verify(snapshot, copier.target_url(target, "never-written.vhd"))


def test_the_first_verification_of_a_snapshot_records_its_digest_and_later_ones_use_it(copier_rig):
    """Each restore of a point is checked against it; only the first reads the point itself."""
    copier, target, snapshot = copier_rig.copier, copier_rig.new_container(), copier_rig.backed_up()
    copier_rig.copied(snapshot, target, "one.vhd")
    copier_rig.copied(snapshot, target, "two.vhd")
    copier_rig.copied(copier_rig.backed_up(CHANGED), target, "changed.vhd")
    first = copier.verify(snapshot, copier.target_url(target, "one.vhd"))
    later = copier.verify(snapshot, copier.target_url(target, "two.vhd"))
    assert (first.equal, first.digest) == (True, "recorded") and (later.equal, later.digest) == (True, "used")
    wrong = copier.verify(snapshot, copier.target_url(target, "changed.vhd"))
    assert wrong.equal is False and "5000" in wrong.detail        # a digest never hides a difference


def test_a_ranged_read_ends_with_the_blob(copier_rig):
    copier, snapshot = copier_rig.copier, copier_rig.backed_up()
    assert copier.read_range(snapshot, 512, 100) == DISK[512:612]
    assert copier.read_range(snapshot, len(DISK) - 100, 1000) == DISK[-100:]
    assert copier.read_range(snapshot, len(DISK) + 512, 100) == b""
    with pytest.raises(NotFoundError):
        copier.read_range(copier.target_url(copier_rig.new_container(), "never-written.vhd"), 0, 100)


def test_a_container_is_deleted_only_once_empty(copier_rig):
    copier, target = copier_rig.copier, copier_rig.new_container()
    assert copier.delete_container_if_empty(target) is False        # never made
    assert copier.list_owned(target, OWNER) == []
    copier_rig.copied(copier_rig.backed_up(), target)
    assert copier.delete_container_if_empty(target) is False
    copier.delete_owned(target, "restored.vhd", OWNER)
    assert copier.delete_container_if_empty(target) is True
    assert copier.delete_container_if_empty(target) is False
