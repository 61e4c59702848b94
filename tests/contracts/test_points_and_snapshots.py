"""The recovery point store and the blob snapshot store, the same on the fake and on the real adapter:
a point's state (Unavailable with its reason) survives a round trip, ETags guard every write, far-off
times still make a key, and a snapshot deleted behind the service's back is seen as gone."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from shared.domain.recovery import DiskSnapshot, PointState, RecoveryPoint, Rule
from shared.errors import ValidationError
from shared.ports import RecoveryPointStore, SnapshotStore

PORTS = (RecoveryPointStore, SnapshotStore)

T0 = datetime(2026, 3, 1, 22, 30, tzinfo=timezone.utc)


def _point(name: str, at: datetime = T0, vm: str = "Contract-VM") -> RecoveryPoint:
    return RecoveryPoint(name=name, vm_name=vm, created_at=at, job_id=f"job-{name}",
                         disks=(DiskSnapshot(lun=-1, source="http://h/a/os.vhd",
                                             snapshot="http://h/a/os.vhd?snapshot=2026-03-01T22:31:00.0000000Z"),))


def test_a_point_is_added_once_and_read_back_whatever_the_vm_name_s_case(point_store):
    assert point_store.add_if_absent(_point("100")) is True
    assert point_store.add_if_absent(_point("100")) is False
    got = point_store.get("contract-vm", "100")
    assert (got.name, got.vm_name, got.created_at, got.state) == ("100", "Contract-VM", T0, PointState.AVAILABLE)
    assert got.version


def test_an_unavailable_point_keeps_its_state_and_reason(point_store):
    point_store.add_if_absent(_point("101"))
    broken = point_store.get("Contract-VM", "101").unavailable("the snapshot of disk LUN -1 is gone", T0)
    (saved,), lost = point_store.save_many([broken])
    got = point_store.get("Contract-VM", "101")
    assert lost == [] and got.state is PointState.UNAVAILABLE
    assert got.unavailable_reason == "the snapshot of disk LUN -1 is gone" and got.state_changed_at == T0
    assert saved.version == got.version


def test_a_write_from_a_stale_read_is_not_saved(point_store):
    point_store.add_if_absent(_point("102"))
    first = point_store.get("Contract-VM", "102")
    point_store.save_many([first.unavailable("gone", T0)])
    saved, lost = point_store.save_many([first.claimed(Rule.DAILY, T0)])
    assert (saved, lost) == ([], ["102"])
    assert point_store.get("Contract-VM", "102").state is PointState.UNAVAILABLE


def test_points_list_newest_first_including_times_far_in_the_future(point_store):
    """A point stamped in year 9999 (written before tasks were bounded) still lists, first."""
    for name, at in (("1", T0), ("2", T0 + timedelta(days=1)), ("3", datetime(9999, 12, 31, tzinfo=timezone.utc))):
        point_store.add_if_absent(_point(name, at))
    assert [p.name for p in point_store.list_for_vm("contract-vm")] == ["3", "2", "1"]
    assert [p.name for p in point_store.list_for_vm("contract-vm", since=T0 + timedelta(hours=1),
                                                    until=T0 + timedelta(days=2))] == ["2"]
    (group,) = list(point_store.scan("contract-vm"))
    assert sorted(p.name for p in group) == ["1", "2", "3"]


def test_a_snapshot_exists_until_it_is_deleted_behind_the_service_s_back(snapshot_store):
    store, take, forget = snapshot_store
    kept, lost = take(), take()
    forget(lost)
    assert store.snapshot_exists(kept) is True
    assert store.snapshot_exists(lost) is False
    assert [s.url for s in store.list_snapshots(kept.partition("?")[0])] == [kept]


def test_a_url_that_names_no_snapshot_is_refused(snapshot_store):
    store, take, _ = snapshot_store
    with pytest.raises(ValidationError):
        store.snapshot_exists(take().partition("?")[0])


def test_a_deleted_snapshot_is_deleted_once(snapshot_store):
    store, take, _ = snapshot_store
    url = take()
    assert store.delete_snapshot(url) is True and store.delete_snapshot(url) is False
    assert store.snapshot_exists(url) is False


@pytest.mark.parametrize("field, value", [("state", PointState.DELETING), ("deleted_by", Rule.DAILY)])
def test_every_field_a_run_writes_survives(point_store, field, value):
    point_store.add_if_absent(_point("103"))
    changed = replace(point_store.get("Contract-VM", "103"), **{field: value})
    point_store.save_many([changed])
    assert getattr(point_store.get("Contract-VM", "103"), field) == value


def test_each_saved_write_gives_the_point_a_new_version(point_store):
    """The version is the point's ETag: a save changes it, so a copy read before the save is stale."""
    point_store.add_if_absent(_point("103"))
    first = point_store.get("Contract-VM", "103")
    (saved,), _ = point_store.save_many([first.claimed(Rule.DAILY, T0)])
    assert saved.version and saved.version != first.version
    assert point_store.get("Contract-VM", "103").version == saved.version


def test_of_writers_racing_from_one_read_exactly_one_saves(point_store):
    """Eight retention runs that read the same point and each save a change: one wins, seven are told."""
    point_store.add_if_absent(_point("104"))
    read = point_store.get("Contract-VM", "104")
    barrier = threading.Barrier(8)

    def save(n: int):
        barrier.wait(timeout=60)
        return point_store.save_many([read.unavailable(f"reason {n}", T0)])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(save, range(8)))
    winners = [saved[0] for saved, lost in results if saved]
    assert len(winners) == 1 and sum(len(lost) for _, lost in results) == 7
    assert point_store.get("Contract-VM", "104").unavailable_reason == winners[0].unavailable_reason
