"""The scheduler's shard progress and retention's part progress, the same on the fake and on Table
Storage: every key listed in order, an empty row for one never written, a version per write, and a
change decided on a stale read re-decided on the stored row, so no writer's change is lost."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Callable

import pytest

from shared.adapters.table_progress import TableRetentionProgressStore, TableShardProgressStore
from shared.domain.retention_progress import PARTS
from shared.domain.shards import SHARDS
from shared.ports import RetentionProgressStore, ShardProgressStore
from tests.contracts.conftest import REAL
from tests.scheduling.fakes import InMemoryRetentionProgressStore, InMemoryShardProgressStore

PORTS = (ShardProgressStore, RetentionProgressStore)
T0 = datetime(2026, 3, 1, 22, 30, tzinfo=timezone.utc)


class Kind:
    """One progress store's vocabulary: its keys, and a counter field a change can bump."""

    def __init__(self, keys: tuple[str, ...], key_field: str, counter: str, stamp: str):
        self.keys, self.key_field, self.counter, self.stamp = keys, key_field, counter, stamp

    def bump(self, row: Any) -> Any:
        return replace(row, **{self.counter: getattr(row, self.counter) + 1})


SHARD = Kind(SHARDS, "shard", "items", "settled_until")
RETENTION = Kind(PARTS, "part", "pages", "finished")
_BUILD: dict[str, tuple[Kind, Callable[[], Any], Callable[[Any, str], Any]]] = {
    "shards": (SHARD, InMemoryShardProgressStore, TableShardProgressStore),
    "retention": (RETENTION, InMemoryRetentionProgressStore, TableRetentionProgressStore),
}


@pytest.fixture(params=["fake", REAL("table")])
def progress(request, kind_name) -> tuple[Kind, ShardProgressStore | RetentionProgressStore]:
    kind, fake, table = _BUILD[kind_name]
    if request.param == "fake":
        return kind, fake()
    return kind, table(request.getfixturevalue("table_service"), request.getfixturevalue("unique_name")("prog"))


@pytest.fixture(params=sorted(_BUILD))
def kind_name(request) -> str:
    return request.param


def test_a_key_never_written_reads_empty_and_an_unknown_key_is_refused(progress):
    kind, store = progress
    empty = store.get(kind.keys[0])
    assert (getattr(empty, kind.key_field), getattr(empty, kind.counter), empty.version) == (kind.keys[0], 0, None)
    with pytest.raises(ValueError):
        store.get("no-such-key")


def test_all_lists_every_key_in_order_with_what_was_written(progress):
    """``all`` is every key, in key order, each with its stored values: a row written, others empty."""
    kind, store = progress
    last = kind.keys[-1]
    store.update(last, lambda row: replace(kind.bump(row), **{kind.stamp: T0}))
    rows = store.all()
    assert [getattr(row, kind.key_field) for row in rows] == list(kind.keys)
    assert (getattr(rows[-1], kind.counter), getattr(rows[-1], kind.stamp)) == (1, T0) and rows[-1].version
    assert all(getattr(row, kind.counter) == 0 for row in rows[:-1])


def test_each_write_has_a_new_version_and_reads_back(progress):
    kind, store = progress
    key = kind.keys[0]
    first = store.update(key, kind.bump)
    second = store.update(key, kind.bump)
    assert first.version and second.version and first.version != second.version
    assert store.get(key) == second and getattr(second, kind.counter) == 2


def test_a_change_decided_on_a_stale_read_is_decided_again_on_the_stored_row(progress):
    """Writer A read the row, B wrote it since: A's update (given its stale read) builds on B's write."""
    kind, store = progress
    key = kind.keys[0]
    stale = store.get(key)
    store.update(key, kind.bump)                            # B
    result = store.update(key, kind.bump, current=stale)    # A, on what it read before B
    assert getattr(result, kind.counter) == 2 and store.get(key) == result


def test_concurrent_updates_lose_nothing(progress):
    kind, store = progress
    key = kind.keys[0]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: store.update(key, kind.bump), range(8)))
    assert getattr(store.get(key), kind.counter) == 8
