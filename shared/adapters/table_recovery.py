"""Recovery points in Azure Table Storage: the RecoveryPointStore port on one table (created if missing).

Keys. ``PartitionKey = "P" + vm name (lower case)``, ``RowKey = inv(created ms) + "_" + name`` with
``inv(ms) = 9999999999999 - ms`` (13 digits), so one VM's points are one partition, newest first:
``recoverypoint list`` is a partition read, a time range is a RowKey range inside it, and the
retention scan is one pass over the table whose rows arrive grouped by VM (1,000 a page). A point's
RowKey follows from its job (name and time both do), so recording a job twice hits the same row.
Updates are ETag-guarded and batched per VM (transactions of up to 100); points are never removed,
only marked Deleted with the rule that removed them. URLs are stored without SAS.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator, Sequence

from azure.core import MatchConditions
from azure.core.exceptions import (AzureError, ResourceExistsError, ResourceModifiedError,
                                   ResourceNotFoundError)
from azure.data.tables import TableServiceClient, TableTransactionError, UpdateMode

from shared.adapters.azure_errors import TABLE_REFUSED_HINT, translate
from shared.clock import utc
from shared.domain.jobs import Consistency
from shared.domain.recovery import POINT_METHOD, DiskSnapshot, PointState, RecoveryPoint, Rule
from shared.domain.status import DirectDriveSnapshot
from shared.domain.task import Trigger

log = logging.getLogger(__name__)

SCHEMA = 1
BATCH = 100
PAGE = 1000
_MAX_MS = 10**13 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class TableRecoveryPointStore:
    def __init__(self, table_service: TableServiceClient, table_name: str):
        self._service = table_service
        self._name = table_name
        self._table = table_service.get_table_client(table_name)
        self._ready = False

    def add_if_absent(self, point: RecoveryPoint) -> bool:
        self._ensure_table()
        try:
            self._call(self._table.create_entity, point_entity(point))
            return True
        except ResourceExistsError:
            return False

    def get(self, vm_name: str, name: str) -> RecoveryPoint | None:
        self._ensure_table()
        rows = self._query("PartitionKey eq @pk and Name eq @name", {"pk": partition(vm_name), "name": name})
        return next((point_from_entity(e) for e in rows), None)

    def list_for_vm(self, vm_name: str, *, since: datetime | None = None,
                    until: datetime | None = None) -> list[RecoveryPoint]:
        self._ensure_table()
        text = "PartitionKey eq @pk"
        params: dict[str, Any] = {"pk": partition(vm_name)}
        # Newer sorts first; '`' sorts right after '_', so "<inv(t)>`" falls after every row of time t.
        if until is not None:
            text += " and RowKey gt @low"
            params["low"] = _inv(until) + "`"
        if since is not None:
            text += " and RowKey lt @high"
            params["high"] = _inv(since) + "`"
        return [point_from_entity(e) for e in self._query(text, params)]

    def newest_available(self, vm_name: str, *, until: datetime) -> RecoveryPoint | None:
        """Rows come newest first: the first Available one at or before ``until`` is the answer."""
        self._ensure_table()
        text = "PartitionKey eq @pk and RowKey ge @low and State eq @state"
        params: dict[str, Any] = {"pk": partition(vm_name), "low": _inv(until), "state": "Available"}
        try:
            for entity in self._table.query_entities(text, parameters=params, results_per_page=1):
                return point_from_entity(entity)
        except AzureError as exc:
            raise self._translated(exc, "reading table") from exc
        return None

    def recent_available(self, since: datetime, until: datetime) -> dict[str, RecoveryPoint]:
        """Rows of every partition within the RowKey range of [since, until]: the first of each is its newest."""
        self._ensure_table()
        found: dict[str, RecoveryPoint] = {}
        rows = self._query("RowKey ge @low and RowKey lt @high and State eq @state",
                           {"low": _inv(until), "high": _inv(since) + "`", "state": "Available"})
        for entity in rows:
            point = point_from_entity(entity)
            found.setdefault(point.vm_name.lower(), point)
        return found

    def scan(self, vm_name: str | None = None) -> Iterable[list[RecoveryPoint]]:
        if vm_name is not None:
            points = self.list_for_vm(vm_name)
            return [points] if points else []
        return self._scan_all()

    def save_many(self, points: Sequence[RecoveryPoint]) -> tuple[list[RecoveryPoint], list[str]]:
        """ETag-guarded writes, one transaction per VM and 100 points; a transaction that lost a race
        is retried point by point, so only the points that changed meanwhile are not written."""
        self._ensure_table()
        saved: list[RecoveryPoint] = []
        lost: list[str] = []
        groups: dict[str, list[RecoveryPoint]] = {}
        for point in points:
            groups.setdefault(partition(point.vm_name), []).append(point)
        for group in groups.values():
            for start in range(0, len(group), BATCH):
                chunk = group[start:start + BATCH]
                ok, missed = self._save_chunk(chunk)
                saved.extend(ok)
                lost.extend(missed)
        return saved, lost

    # --- internals ------------------------------------------------------------------------------
    def _save_chunk(self, chunk: list[RecoveryPoint]) -> tuple[list[RecoveryPoint], list[str]]:
        # One point (a daily run's usual claim, then deletion, per VM) is a plain update: a transaction
        # of one costs the client three times its CPU (docs/table-batch-cost.md).
        if len(chunk) > 1:
            operations = [("update", point_entity(p), {"mode": UpdateMode.REPLACE, "etag": p.version,
                                                       "match_condition": MatchConditions.IfNotModified})
                          for p in chunk]
            try:
                results = self._call(self._table.submit_transaction, operations)
                return [_with_version(p, r.get("etag")) for p, r in zip(chunk, results)], []
            except TableTransactionError:
                pass    # one point changed meanwhile: write the others one by one
        saved, lost = [], []
        for point in chunk:
            try:
                meta = self._call(self._table.update_entity, point_entity(point), mode=UpdateMode.REPLACE,
                                  etag=point.version, match_condition=MatchConditions.IfNotModified)
                saved.append(_with_version(point, (meta or {}).get("etag")))
            except (ResourceModifiedError, ResourceNotFoundError):
                lost.append(point.name)
        return saved, lost

    def _scan_all(self) -> Iterator[list[RecoveryPoint]]:
        self._ensure_table()
        current: list[RecoveryPoint] = []
        key = None
        try:
            for entity in self._table.list_entities(results_per_page=PAGE):
                if entity["PartitionKey"] != key and current:
                    yield current
                    current = []
                key = entity["PartitionKey"]
                current.append(point_from_entity(entity))
        except AzureError as exc:
            raise self._translated(exc, "scanning table") from exc
        if current:
            yield current

    def _query(self, text: str, params: dict[str, Any]) -> list[Any]:
        try:
            return list(self._table.query_entities(text, parameters=params, results_per_page=PAGE))
        except AzureError as exc:
            raise self._translated(exc, "reading table") from exc

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError, TableTransactionError):
            raise
        except AzureError as exc:
            raise self._translated(exc, "using table") from exc

    def _translated(self, exc: AzureError, doing: str) -> Exception:
        return translate(exc, f"{doing} {self._name}", service="Table Storage", refused_hint=TABLE_REFUSED_HINT)

    def _ensure_table(self) -> None:
        if self._ready:
            return
        try:
            self._service.create_table_if_not_exists(self._name)
        except AzureError as exc:
            raise self._translated(exc, "creating table") from exc
        self._ready = True


def partition(vm_name: str) -> str:
    return "P" + vm_name.lower()


def _inv(when: datetime) -> str:
    # Clamped: a time beyond the key's 13 digits (a record from before the task window existed) still
    # makes a key that sorts with the newest, rather than a negative number.
    ms = min(max((utc(when) - _EPOCH) // timedelta(milliseconds=1), 0), _MAX_MS)
    return f"{_MAX_MS - ms:013d}"


def point_entity(point: RecoveryPoint) -> dict[str, Any]:
    return {
        "PartitionKey": partition(point.vm_name),
        "RowKey": f"{_inv(point.created_at)}_{point.name}",
        "Schema": SCHEMA,
        "Name": point.name,
        "VmName": point.vm_name,
        "CreatedAt": utc(point.created_at),
        "JobId": point.job_id,
        "Trigger": point.trigger.value,
        "Consistency": point.consistency.value if point.consistency else None,
        "SizeBytes": str(point.size_bytes) if point.size_bytes is not None else None,
        "PolicyName": point.policy_name,
        "RetainUntil": utc(point.retain_until) if point.retain_until else None,
        "Disks": json.dumps([{"lun": d.lun, "source": d.source.split("?", 1)[0], "snapshot": d.snapshot,
                              "snapshotTime": d.snapshot_time,
                              **({"directDrive": d.direct_drive.as_record()} if d.direct_drive else {})}
                             for d in point.disks]),
        "Method": POINT_METHOD.word(point.method),
        "RestorePointId": point.restore_point_id,
        "State": point.state.value,
        "StateChangedAt": utc(point.state_changed_at) if point.state_changed_at else None,
        "DeletedBy": point.deleted_by.value if point.deleted_by else None,
        "UnavailableReason": point.unavailable_reason,
    }


def point_from_entity(entity: Any) -> RecoveryPoint:
    def when(key: str) -> datetime | None:
        value = entity.get(key)
        return utc(datetime.fromisoformat(value.isoformat())) if isinstance(value, datetime) else None

    size = entity.get("SizeBytes")
    return RecoveryPoint(
        name=entity["Name"], vm_name=entity["VmName"], created_at=when("CreatedAt") or _EPOCH,
        job_id=entity.get("JobId") or "", trigger=Trigger(entity.get("Trigger") or Trigger.SCHEDULED.value),
        consistency=Consistency(entity["Consistency"]) if entity.get("Consistency") else None,
        size_bytes=int(size) if size not in (None, "") else None, policy_name=entity.get("PolicyName"),
        retain_until=when("RetainUntil"),
        disks=tuple(DiskSnapshot(lun=int(d["lun"]), source=d["source"], snapshot=d["snapshot"],
                                 snapshot_time=d.get("snapshotTime"),
                                 direct_drive=DirectDriveSnapshot.from_record(d["directDrive"])
                                 if d.get("directDrive") else None)
                    for d in json.loads(entity.get("Disks") or "[]")),
        method=POINT_METHOD.member(entity.get("Method") or "BlobSnapshot"),
        restore_point_id=entity.get("RestorePointId"), state=PointState(entity.get("State") or "Available"),
        state_changed_at=when("StateChangedAt"),
        deleted_by=Rule(entity["DeletedBy"]) if entity.get("DeletedBy") else None,
        unavailable_reason=entity.get("UnavailableReason"),
        version=entity.metadata.get("etag") if hasattr(entity, "metadata") else None)


def _with_version(point: RecoveryPoint, etag: str | None) -> RecoveryPoint:
    return replace(point, version=etag)
