"""The RestorePoints contract, on ComputeRestorePoints under the unmodified Compute client talking to the
local Compute endpoint (devhost/compute.py, whose answers tests/contracts/test_compute_api.py binds to the
specification), and on the fake FakeRestorePoints (tests/fakes.py).

What it pins: a VM's collection is made once; a restore point of a name is made once (a second create, and
racing creates, get the one that exists) and finishes with a disk restore point per disk; a failed create's
operation gives ARM's code; what is gone reads None and deletes False (never NotFoundError); a restored disk
keeps its tags and reads back through a read grant; a snapshot of a disk comes and goes."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import pytest
from azure.storage.blob import BlobClient

from devhost.compute import LOCATION, LocalCompute
from shared.adapters.restore_points import ComputeRestorePoints
from shared.domain.inventory import OS_DISK_LUN
from shared.domain.jobs import Consistency
from shared.domain.restore import OWNER_KEY
from shared.ports import RestorePointRefused, RestorePoints
from tests.contracts.conftest import REAL
from tests.fakes import FakeRestorePoints
from tests.polling import eventually

PORTS = (RestorePoints,)

DISK_BYTES = 64 * 1024


@dataclass
class Vm:
    id: str
    disks: dict[int, str]           # LUN -> managed disk id
    content: dict[int, bytes]       # LUN -> what the disk holds


@dataclass
class Rig:
    """The port, and Azure around it: a running VM with an OS disk and a data disk at LUN 0, each holding
    bytes of its own; the next creates failing with an ARM code; a read grant's URL read as a guest would."""

    restore_points: RestorePoints
    add_vm: Callable[[str], Vm]
    fail_next: Callable[[str, str], None]
    read_grant: Callable[[str, int], bytes]


def _contents(name: str) -> dict[int, bytes]:
    return {lun: f"{name} LUN {lun}".encode().ljust(512, b"\0") for lun in (OS_DISK_LUN, 0)}


def _fake() -> Rig:
    fake = FakeRestorePoints()

    def add_vm(name: str) -> Vm:
        content = _contents(name)
        vm_id = fake.add_vm(name, {lun: data.ljust(DISK_BYTES, b"\0") for lun, data in content.items()})
        return Vm(vm_id, dict(fake.vms[vm_id.lower()]), content)

    return Rig(fake, add_vm, lambda code, message: fake.fail_next.append((code, message)),
               lambda url, n: fake.granted[url][:n])


@pytest.fixture(scope="module")
def endpoint(storage_connection_string, tmp_path_factory) -> Iterator[LocalCompute]:
    """One local Compute endpoint for the module (on the session's Azurite); crash-consistent restore points
    only, so no extension runs."""
    with LocalCompute(storage_connection_string, tmp_path_factory.mktemp("vms"), replication_seconds=0.2,
                      delete_seconds=0.1) as compute:
        yield compute


@pytest.fixture(params=["fake", REAL("compute")])
def rig(request, unique_name) -> Iterator[Rig]:
    if request.param == "fake":
        yield _fake()
        return
    endpoint = request.getfixturevalue("endpoint")
    container = request.getfixturevalue("blob_service_client").create_container(unique_name("mdisks"))

    def add_vm(name: str) -> Vm:
        disks, content = [], _contents(name)
        for lun, data in content.items():
            blob = container.get_blob_client(f"{name}-{lun}.vhd")
            blob.create_page_blob(DISK_BYTES)
            blob.upload_page(data, offset=0, length=len(data))
            disks.append((lun, f"{name}-{'os' if lun == OS_DISK_LUN else lun}", blob.url, DISK_BYTES))
        local = endpoint.add_vm(name, disks)
        return Vm(local.id, {d.lun: d.id for d in local.disks}, content)

    yield Rig(ComputeRestorePoints(endpoint.credential(), retry_backoff_factor=0.2, **endpoint.client_options()),
              add_vm, lambda code, message: endpoint.fail_next.append((code, message)),
              lambda url, n: BlobClient.from_blob_url(url).download_blob(offset=0, length=n).readall())
    container.delete_container()


@pytest.fixture
def restore_points(rig) -> RestorePoints:
    return rig.restore_points


@pytest.fixture
def vm(rig, unique_name) -> Vm:
    return rig.add_vm(unique_name("rpvm"))


def _created(restore_points: RestorePoints, vm: Vm, name: str):
    restore_points.ensure_collection(vm.id, LOCATION)
    restore_points.begin_create(vm.id, name, consistency=Consistency.CRASH)
    assert eventually(lambda: restore_points.get(vm.id, name).provisioning_state == "Succeeded", timeout=60)
    return restore_points.get(vm.id, name)


def _group(vm: Vm) -> str:
    return vm.id.split("/virtualMachines/", 1)[0]


def test_a_vm_s_collection_is_made_once(restore_points, vm):
    first = restore_points.ensure_collection(vm.id, LOCATION)
    assert restore_points.ensure_collection(vm.id, LOCATION) == first and "restorePointCollections" in first


def test_a_restore_point_is_made_once_and_finishes_with_a_disk_restore_point_per_disk(restore_points, vm):
    restore_points.ensure_collection(vm.id, LOCATION)
    started = restore_points.begin_create(vm.id, "rp1", consistency=Consistency.CRASH)
    assert started.name == "rp1" and started.operation
    again = restore_points.begin_create(vm.id, "rp1", consistency=Consistency.CRASH)
    assert again.id == started.id
    assert eventually(lambda: restore_points.get(vm.id, "rp1").provisioning_state == "Succeeded", timeout=60)
    done = restore_points.get(vm.id, "rp1")
    assert sorted(d.disk_id.lower() for d in done.disks) == sorted(d.lower() for d in vm.disks.values())
    assert restore_points.operation_failure(started.operation) is None


def test_of_racing_creates_of_one_name_every_racer_gets_the_one_restore_point(restore_points, vm):
    """Redelivered tasks creating the same restore point at once: one is made, each racer carries on with it."""
    restore_points.ensure_collection(vm.id, LOCATION)
    barrier = threading.Barrier(4)

    def create(_: int) -> str:
        barrier.wait(timeout=60)
        return restore_points.begin_create(vm.id, "raced", consistency=Consistency.CRASH).id

    with ThreadPoolExecutor(4) as pool:
        assert len(set(pool.map(create, range(4)))) == 1


def test_a_failed_create_s_operation_gives_arm_s_code(restore_points, vm, rig):
    restore_points.ensure_collection(vm.id, LOCATION)
    rig.fail_next("VMRestorePointInternalError", "Restore point creation failed: storage.")
    started = restore_points.begin_create(vm.id, "failing", consistency=Consistency.CRASH)
    assert eventually(lambda: restore_points.operation_failure(started.operation) is not None, timeout=60)
    assert restore_points.operation_failure(started.operation).code == "VMRestorePointInternalError"
    assert restore_points.get(vm.id, "failing").provisioning_state == "Failed"


def test_what_is_gone_reads_none_and_deletes_false(restore_points, vm):
    point = _created(restore_points, vm, "rp-gone")
    assert restore_points.delete(point.id) is True
    assert restore_points.get(vm.id, "rp-gone") is None and restore_points.delete(point.id) is False
    group = _group(vm)
    assert restore_points.get_disk(f"{group}/disks/never-made") is None
    assert restore_points.delete_disk(f"{group}/disks/never-made") is False
    assert restore_points.get_snapshot(f"{group}/snapshots/never-made") is None
    assert restore_points.delete_snapshot(f"{group}/snapshots/never-made") is False
    assert restore_points.vm_disks(f"{group}/virtualMachines/never-made") is None


def test_a_vm_s_disks_and_power_state_read_back(restore_points, vm):
    disks = restore_points.vm_disks(vm.id)
    assert {lun: d.lower() for lun, d in disks.disks.items()} == {lun: d.lower() for lun, d in vm.disks.items()}
    assert disks.power_state == restore_points.vm_power_state(vm.id) == "PowerState/running"


def test_a_restored_disk_keeps_its_tags_and_reads_back_through_a_read_grant(restore_points, vm, rig, unique_name):
    point = _created(restore_points, vm, "rp-restore")
    source = next(d for d in point.disks if d.disk_id.lower() == vm.disks[0].lower())
    disk_id = restore_points.restore_disk(source.id, f"{_group(vm)}/disks/{unique_name('restored')}",
                                          location=LOCATION, tags={OWNER_KEY: "job-7"})
    state = restore_points.get_disk(disk_id)
    assert (state.size_bytes, state.owner) == (DISK_BYTES, "job-7")
    url = restore_points.grant_read(disk_id, 600)
    assert rig.read_grant(url, 512) == vm.content[0]
    restore_points.revoke_read(disk_id)
    assert restore_points.delete_disk(disk_id) is True and restore_points.get_disk(disk_id) is None


def test_a_snapshot_of_a_disk_comes_and_goes(restore_points, vm, unique_name):
    snapshot_id = restore_points.snapshot_disk(vm.disks[0], f"{_group(vm)}/snapshots/{unique_name('snap')}",
                                               location=LOCATION, tags={OWNER_KEY: "job-8"})
    assert restore_points.get_snapshot(snapshot_id).owner == "job-8"
    assert restore_points.delete_snapshot(snapshot_id) is True and restore_points.get_snapshot(snapshot_id) is None


def test_a_refusal_is_restore_point_refused_with_arm_s_code_and_no_token(restore_points, vm):
    """A restore point of a VM ARM does not know is refused for good, with ARM's code kept for the job."""
    missing = f"{_group(vm)}/virtualMachines/never-made"
    with pytest.raises(RestorePointRefused) as refused:
        restore_points.ensure_collection(missing, LOCATION)
        restore_points.begin_create(missing, "rp", consistency=Consistency.CRASH)
    assert refused.value.arm_code and "local-compute-token" not in str(refused.value)
