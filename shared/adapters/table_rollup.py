"""The compliance report's roll-up in Table Storage: the RollupStore port (shared/domain/rollup.py).

Rows: ``PartitionKey = "M" + shard + yyyymm`` (the item's shard, the month of the jobs' slots, UTC),
``RowKey = <vm name, lower-cased>``, holding ``Successes`` (the slots of the month's successful backups, in
milliseconds after the month's first instant, comma-separated, continued in ``Successes1``, ``Successes2`` ...
past 30,000 characters) and the newest failed backup (``FailedJob``, ``FailedMs``, ``FailedError``). A report
reads, per shard, the PartitionKey range of its months, side by side; retention deletes whole months.
The state: ``PartitionKey = "S"``, ``RowKey = "state"``.

Rows are only merged into (a union), under their ETag: a transaction per partition and 100 rows, and a
transaction that lost a race (a row written or created meanwhile) is redone row by row.
"""
from __future__ import annotations

import json
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, TableServiceClient, TableTransactionError, UpdateMode

from shared.adapters.azure_errors import EtagRetry
from shared.adapters.metering import in_context
from shared.adapters.table_protection import BATCH_LIMIT, _open_table, _storage_errors, delete_matching, save_versioned
from shared.clock import utc
from shared.domain.compliance import LastError
from shared.domain.jobs import JobError
from shared.domain.rollup import MonthRollup, RollupState, merge_rows, month_of
from shared.domain.shards import SHARDS, shard_of

_MS = timedelta(milliseconds=1)
_CHUNK = 30_000          # characters per string property (a property holds 32K UTF-16 units)
_READERS = 16            # the shards' ranges read side by side
_STATE = ("S", "state")
T = TypeVar("T")


class TableRollupStore:
    def __init__(self, table_service: TableServiceClient, table_name: str, *,
                 etag_retry: EtagRetry = EtagRetry(races=(ResourceModifiedError, ResourceExistsError))):
        self._table = _open_table(table_service, table_name)
        self._etag_retry = etag_retry

    # --- rows -----------------------------------------------------------------------------------
    def merge_many(self, rows: Sequence[MonthRollup]) -> int:
        by_partition: dict[str, list[MonthRollup]] = defaultdict(list)
        for row in merge_rows(rows).values():
            by_partition[_partition(row.vm_name, row.month)].append(row)
        chunks = [(partition, group[i:i + BATCH_LIMIT]) for partition, group in by_partition.items()
                  for i in range(0, len(group), BATCH_LIMIT)]
        if len(chunks) <= 1:
            return sum(self._merge_chunk(*chunk) for chunk in chunks)
        return sum(_side_by_side(lambda chunk: self._merge_chunk(*chunk), chunks))

    def months(self, since: datetime, until: datetime, vm_name: str | None = None) -> list[MonthRollup]:
        low, high = _month_key(since), _month_key(until)
        if vm_name is not None:
            shard = shard_of(vm_name)
            return self._rows("PartitionKey ge @low and PartitionKey le @high and RowKey eq @vm",
                              {"low": f"M{shard}{low}", "high": f"M{shard}{high}", "vm": vm_name.lower()})

        def shard_rows(shard: str) -> list[MonthRollup]:
            return self._rows("PartitionKey ge @low and PartitionKey le @high",
                              {"low": f"M{shard}{low}", "high": f"M{shard}{high}"})

        return [row for found in _side_by_side(shard_rows, SHARDS) for row in found]

    def prune(self, before: datetime, *, limit: int) -> int:
        deleted = 0
        for shard in SHARDS:
            deleted += delete_matching(self._table, "PartitionKey ge @low and PartitionKey lt @high",
                                       {"low": f"M{shard}", "high": f"M{shard}{_month_key(before)}"},
                                       limit=limit - deleted, what="roll-up rows")
            if deleted >= limit:
                break
        return deleted

    # --- state ----------------------------------------------------------------------------------
    def state(self) -> RollupState:
        entity = self._point(*_STATE)
        if entity is None:
            return RollupState()
        return RollupState(covered_from=_maybe_time(entity.get("CoveredFrom")),
                           folded_through=_maybe_time(entity.get("FoldedThrough")),
                           version=entity.metadata.get("etag"))

    def update_state(self, change: Callable[[RollupState], RollupState | None]) -> RollupState:
        def attempt() -> RollupState:
            current = self.state()
            changed = change(current)
            if changed is None:
                return current
            entity: dict[str, Any] = {"PartitionKey": _STATE[0], "RowKey": _STATE[1]}
            entity.update({k: utc(v) for k, v in (("CoveredFrom", changed.covered_from),
                                                  ("FoldedThrough", changed.folded_through)) if v is not None})
            return replace(changed, version=save_versioned(self._table, entity, current.version,
                                                           "the roll-up's state"))

        return self._etag_retry.run(attempt, what="the roll-up's state")

    # --- internals ------------------------------------------------------------------------------
    def _merge_chunk(self, partition: str, rows: list[MonthRollup]) -> int:
        stored = self._stored(partition, [row.vm_name.lower() for row in rows])
        operations: list[tuple[Any, ...]] = []     # (verb, entity) or (verb, entity, options)
        for row in rows:
            current = stored.get(row.vm_name.lower())
            if current is None:
                operations.append(("create", _entity(partition, row)))
            elif not current.holds(row):
                operations.append(("update", _entity(partition, current.merged(row)),
                                   {"mode": UpdateMode.REPLACE, "etag": current.version,
                                    "match_condition": MatchConditions.IfNotModified}))
        if not operations:
            return 0
        try:
            with _storage_errors("merging into the roll-up"):
                self._table.submit_transaction(operations)
            return len(operations)
        except (TableTransactionError, ResourceExistsError, ResourceModifiedError):
            pass        # a row changed or appeared meanwhile: the whole transaction was refused
        return sum(self._merge_one(partition, row) for row in rows)

    def _merge_one(self, partition: str, row: MonthRollup) -> int:
        def attempt() -> int:
            current = self._stored(partition, [row.vm_name.lower()]).get(row.vm_name.lower())
            with _storage_errors("merging into the roll-up"):
                if current is None:
                    self._table.create_entity(_entity(partition, row))
                elif current.holds(row):
                    return 0
                else:
                    self._table.update_entity(_entity(partition, current.merged(row)), mode=UpdateMode.REPLACE,
                                              etag=current.version, match_condition=MatchConditions.IfNotModified)
            return 1

        return self._etag_retry.run(attempt, what=f"the roll-up of {row.vm_name}")

    def _stored(self, partition: str, keys: list[str]) -> dict[str, MonthRollup]:
        """The stored rows of these RowKeys in one partition: a point read, or one range read."""
        if len(keys) == 1:
            entity = self._point(partition, keys[0])
            return {} if entity is None else {keys[0]: _row_from(entity)}
        wanted = set(keys)
        rows = self._rows("PartitionKey eq @pk and RowKey ge @low and RowKey le @high",
                          {"pk": partition, "low": min(keys), "high": max(keys)})
        return {row.vm_name.lower(): row for row in rows if row.vm_name.lower() in wanted}

    def _rows(self, text: str, params: dict[str, Any]) -> list[MonthRollup]:
        with _storage_errors("reading the roll-up"):
            return [_row_from(e) for e in self._table.query_entities(text, parameters=params, results_per_page=1000)]

    def _point(self, partition: str, row: str) -> TableEntity | None:
        try:
            with _storage_errors("reading the roll-up"):
                return self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None


def _side_by_side(fn: Callable[[Any], T], work: Sequence[Any]) -> list[T]:
    """``fn`` over ``work`` in a pool, each call in a copy of the caller's context (its request meter)."""
    with ThreadPoolExecutor(min(len(work), _READERS), thread_name_prefix="rollup") as pool:
        return [future.result() for future in [pool.submit(in_context(fn), each) for each in work]]


# --- entity mapping ------------------------------------------------------------------------------

def _month_key(when: datetime) -> str:
    return month_of(when).strftime("%Y%m")


def _partition(vm_name: str, month: datetime) -> str:
    return f"M{shard_of(vm_name)}{_month_key(month)}"


def _entity(partition: str, row: MonthRollup) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": row.vm_name.lower(), "VmName": row.vm_name}
    text = ",".join(str((s - row.month) // _MS) for s in sorted(row.successes))
    for n, start in enumerate(range(0, len(text), _CHUNK)):
        entity[f"Successes{n or ''}"] = text[start:start + _CHUNK]
    failure = row.last_failure
    if failure is not None:
        entity.update(FailedJob=failure.job_id, FailedMs=str((failure.slot - row.month) // _MS),
                      FailedError=json.dumps(asdict(failure.error)) if failure.error else None)
    return {k: v for k, v in entity.items() if v is not None}


def _row_from(entity: Any) -> MonthRollup:
    month = datetime.strptime(entity["PartitionKey"][2:], "%Y%m").replace(tzinfo=timezone.utc)
    parts, n = [], 0
    while (part := entity.get(f"Successes{n or ''}")) is not None:
        parts.append(part)
        n += 1
    text = "".join(parts)
    successes = frozenset(month + int(ms) * _MS for ms in text.split(",")) if text else frozenset()
    failure = None
    if entity.get("FailedJob"):
        error = entity.get("FailedError")
        failure = LastError(job_id=entity["FailedJob"], slot=month + int(entity["FailedMs"]) * _MS,
                            error=JobError(**json.loads(error)) if error else None)
    return MonthRollup(vm_name=entity.get("VmName") or entity["RowKey"], month=month, successes=successes,
                       last_failure=failure, version=entity.metadata.get("etag"))


def _maybe_time(value: Any) -> datetime | None:
    if value is None:
        return None
    return utc(datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                        value.microsecond, tzinfo=value.tzinfo or timezone.utc))
