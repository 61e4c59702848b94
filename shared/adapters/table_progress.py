"""Progress rows in Table Storage, in their own table so the items table holds items only: the
scheduler's, one per shard (PartitionKey ``progress``, RowKey the shard's hex digit), and retention's,
one per part (PartitionKey ``retention``, RowKey the shard's digit or ``blobs``). Each row is
ETag-guarded: a change is merged again when another writer came first."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, Callable, Generic, TypeVar

from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, TableServiceClient

from shared.adapters.azure_errors import EtagRetry
from shared.adapters.table_protection import _open_table, _storage_errors, save_versioned
from shared.clock import utc
from shared.domain.progress import ShardProgress
from shared.domain.retention_progress import PARTS, RetentionProgress
from shared.domain.shards import SHARDS, check_shard

PARTITION = "progress"
RETENTION_PARTITION = "retention"

P = TypeVar("P", ShardProgress, RetentionProgress)


class _ProgressRows(Generic[P]):
    """One partition of progress rows, a row per key, read and changed under the row's ETag."""

    def __init__(self, table_service: TableServiceClient, table_name: str, partition: str, what: str, *,
                 empty: Callable[[str], P], to_entity: Callable[[P], dict[str, Any]],
                 from_entity: Callable[[TableEntity], P], etag_retry: EtagRetry):
        self._table = _open_table(table_service, table_name)
        self._partition = partition
        self._what = what
        self._empty: Callable[[str], P] = empty
        self._to_entity: Callable[[P], dict[str, Any]] = to_entity
        self._from_entity: Callable[[TableEntity], P] = from_entity
        self._etag_retry = etag_retry

    def get(self, key: str) -> P:
        try:
            with _storage_errors(f"reading {self._what} of {key}"):
                return self._from_entity(self._table.get_entity(self._partition, key))
        except ResourceNotFoundError:
            return self._empty(key)

    def all(self, keys: tuple[str, ...]) -> list[P]:
        with _storage_errors(f"reading {self._what}"):
            found = {e["RowKey"]: self._from_entity(e) for e in self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": self._partition})}
        return [found.get(key) or self._empty(key) for key in keys]

    def update(self, key: str, change: Callable[[P], P], current: P | None) -> P:
        """Read (unless ``current`` is given), change, write back only if nobody wrote in between; a
        lost race is merged again. A stale ``current`` fails the write, and the next try reads."""
        known = [current] if current is not None else []

        def attempt() -> P:
            current = known.pop() if known else self.get(key)
            changed = change(current)
            if changed == current:
                return current
            entity = {"PartitionKey": self._partition, "RowKey": key, **self._to_entity(changed)}
            return replace(changed, version=save_versioned(self._table, entity, current.version,
                                                           f"{self._what} of {key}"))

        return self._etag_retry.run(attempt, what=f"{self._what} of {key}")


_RACES = EtagRetry(races=(ResourceModifiedError, ResourceExistsError))


class TableShardProgressStore:
    def __init__(self, table_service: TableServiceClient, table_name: str, *, etag_retry: EtagRetry = _RACES):
        self._rows = _ProgressRows[ShardProgress](
            table_service, table_name, PARTITION, "the scheduler's progress", empty=lambda s: ShardProgress(shard=s),
            to_entity=_shard_entity, from_entity=_shard_from, etag_retry=etag_retry)

    def get(self, shard: str) -> ShardProgress:
        return self._rows.get(check_shard(shard))

    def all(self) -> list[ShardProgress]:
        return self._rows.all(SHARDS)

    def update(self, shard: str, change: Callable[[ShardProgress], ShardProgress], *,
               current: ShardProgress | None = None) -> ShardProgress:
        """Read (unless ``current`` is given), change, write back only if nobody wrote in between."""
        return self._rows.update(check_shard(shard), change, current)


class TableRetentionProgressStore:
    def __init__(self, table_service: TableServiceClient, table_name: str, *, etag_retry: EtagRetry = _RACES):
        self._rows = _ProgressRows[RetentionProgress](
            table_service, table_name, RETENTION_PARTITION, "retention's progress",
            empty=lambda p: RetentionProgress(part=p), to_entity=_retention_entity, from_entity=_retention_from,
            etag_retry=etag_retry)

    def get(self, part: str) -> RetentionProgress:
        return self._rows.get(_check_part(part))

    def all(self) -> list[RetentionProgress]:
        return self._rows.all(PARTS)

    def update(self, part: str, change: Callable[[RetentionProgress], RetentionProgress], *,
               current: RetentionProgress | None = None) -> RetentionProgress:
        """Read (unless ``current`` is given), change, write back only if nobody wrote in between."""
        return self._rows.update(_check_part(part), change, current)


def _check_part(part: str) -> str:
    if part not in PARTS:
        raise ValueError(f"part {part!r} is not one of {', '.join(PARTS)}")
    return part


def _times(entity: dict[str, Any], values: dict[str, datetime | None]) -> dict[str, Any]:
    entity.update({key: utc(value) for key, value in values.items() if value is not None})
    return entity


def _time(entity: Any, key: str) -> datetime | None:
    value = entity.get(key)
    # The SDK's datetime subclass, made a plain datetime so progress compares and prints as one.
    return utc(datetime.fromisoformat(value.isoformat())) if value is not None else None


def _shard_entity(progress: ShardProgress) -> dict[str, Any]:
    entity = _times({"Items": progress.items}, {
        "SettledUntil": progress.settled_until, "SeenFrom": progress.seen_from,
        "RunStarted": progress.run_started, "RunHorizon": progress.run_horizon})
    if progress.run_through is not None:
        entity["RunThrough"] = progress.run_through
    return entity


def _shard_from(entity: Any) -> ShardProgress:
    return ShardProgress(shard=entity["RowKey"], settled_until=_time(entity, "SettledUntil"),
                         seen_from=_time(entity, "SeenFrom"), items=int(entity.get("Items") or 0),
                         run_started=_time(entity, "RunStarted"), run_horizon=_time(entity, "RunHorizon"),
                         run_through=entity.get("RunThrough"), version=entity.metadata.get("etag"))


def _retention_entity(progress: RetentionProgress) -> dict[str, Any]:
    entity = _times({"Pages": progress.pages}, {
        "Run": progress.run, "Since": progress.since, "Unsettled": progress.unsettled,
        "Finished": progress.finished, "Settled": progress.settled})
    if progress.cursor is not None:
        entity["Cursor"] = progress.cursor
    return entity


def _retention_from(entity: Any) -> RetentionProgress:
    return RetentionProgress(part=entity["RowKey"], run=_time(entity, "Run"), cursor=entity.get("Cursor"),
                             pages=int(entity.get("Pages") or 0), since=_time(entity, "Since"),
                             unsettled=_time(entity, "Unsettled"), finished=_time(entity, "Finished"),
                             settled=_time(entity, "Settled"), version=entity.metadata.get("etag"))
