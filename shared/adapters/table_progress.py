"""The scheduler's per-shard progress in Table Storage: one row per shard (PartitionKey ``progress``,
RowKey the shard's hex digit), ETag-guarded, in its own table so the items table holds items only."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, Callable

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.adapters.azure_errors import EtagRetry
from shared.adapters.table_protection import _open_table, _storage_errors
from shared.clock import utc
from shared.domain.progress import ShardProgress
from shared.domain.shards import SHARDS, check_shard

PARTITION = "progress"


class TableShardProgressStore:
    def __init__(self, table_service, table_name: str, *,
                 etag_retry: EtagRetry = EtagRetry(races=(ResourceModifiedError, ResourceExistsError))):
        self._table = _open_table(table_service, table_name)
        self._etag_retry = etag_retry

    def get(self, shard: str) -> ShardProgress:
        check_shard(shard)
        try:
            with _storage_errors(f"reading the scheduler's progress of shard {shard}"):
                return _from(self._table.get_entity(PARTITION, shard))
        except ResourceNotFoundError:
            return ShardProgress(shard=shard)

    def all(self) -> list[ShardProgress]:
        with _storage_errors("reading the scheduler's progress"):
            found = {e["RowKey"]: _from(e) for e in self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": PARTITION})}
        return [found.get(shard) or ShardProgress(shard=shard) for shard in SHARDS]

    def update(self, shard: str, change: Callable[[ShardProgress], ShardProgress], *,
               current: ShardProgress | None = None) -> ShardProgress:
        """Read, change, write back only if nobody wrote in between; a lost race is merged again.
        ``current`` (as read earlier) saves the first read; if it is stale, the write fails and the
        next try reads."""
        known = [current] if current is not None else []

        def attempt() -> ShardProgress:
            current = known.pop() if known else self.get(shard)
            changed = change(current)
            if changed == current:
                return current
            with _storage_errors(f"saving the scheduler's progress of shard {shard}"):
                if current.version is None:
                    meta = self._table.create_entity(_entity(changed))
                else:
                    meta = self._table.update_entity(_entity(changed), mode=UpdateMode.REPLACE,
                                                     etag=current.version,
                                                     match_condition=MatchConditions.IfNotModified)
            return replace(changed, version=meta.get("etag"))

        return self._etag_retry.run(attempt, what=f"scheduler progress of shard {shard}")


def _entity(progress: ShardProgress) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": PARTITION, "RowKey": progress.shard, "Items": progress.items}
    for key, value in (("SettledUntil", progress.settled_until), ("SeenFrom", progress.seen_from),
                       ("RunStarted", progress.run_started), ("RunHorizon", progress.run_horizon)):
        if value is not None:
            entity[key] = utc(value)
    if progress.run_through is not None:
        entity["RunThrough"] = progress.run_through
    return entity


def _from(entity) -> ShardProgress:
    def when(key: str) -> datetime | None:
        value = entity.get(key)
        # The SDK's datetime subclass, made a plain datetime so progress compares and prints as one.
        return utc(datetime.fromisoformat(value.isoformat())) if value is not None else None

    return ShardProgress(shard=entity["RowKey"], settled_until=when("SettledUntil"), seen_from=when("SeenFrom"),
                         items=int(entity.get("Items") or 0), run_started=when("RunStarted"),
                         run_horizon=when("RunHorizon"), run_through=entity.get("RunThrough"),
                         version=entity.metadata.get("etag"))
