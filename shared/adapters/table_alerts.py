"""Alerts and the job feed in Table Storage: the AlertStore and JobFeed ports, each on a table of its own.

Alerts table rows:
- current alert of an (item, kind): ``PartitionKey = "H" + shard``, ``RowKey = <item lower>|<kind>``;
  written under its ETag (insert-if-absent for the first), so two evaluators never make two alerts.
- a resolved alert a new one replaced: ``"X" + shard``, ``<item lower>|<kind>|inv(fired ms)``, written
  before the current row is replaced (a crash in between leaves a copy, never a loss).
- a notification owed: ``"O"``, ``<item lower>|<kind>``, written before the alert that owes it and removed
  after the alert that no longer does: the sender reads one small partition.
- an alert recorded while no webhook was set that one set later should get (``Alert.parked``): ``"N"``,
  ``<item lower>|<kind>``, kept the same way; read once a webhook is set.
- an RPO watch: ``"W"``, ``<item lower>``; the evaluator's marks: ``"S"``, ``marks``.
An alert's name says its item, kind and fired time (shared/domain/alerts.py), so ``find`` is a point read.

Job feed rows: ``PartitionKey = "F" + the minute of the entry (UTC)``, ``RowKey = <job id>|<status>``:
the evaluator reads the minutes since its mark, a PartitionKey range, and retention deletes whole minutes.
"""
from __future__ import annotations

import builtins
import json
from dataclasses import asdict, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, TableServiceClient, UpdateMode

from shared.adapters.azure_errors import EtagRetry
from shared.adapters.table_protection import _open_table, _storage_errors, delete_matching
from shared.clock import utc
from shared.domain.alerts import (Alert, AlertKind, AlertStatus, Delivery, DeliveryState, Occurrence,
                                  parse_alert_name)
from shared.domain.shards import shard_of
from shared.ports import FeedEntry

_MAX_MS = 10**13 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_PAGE = 1000


# The port names a method ``list``: in this class the builtin is spelled ``builtins.list``.
class TableAlertStore:
    def __init__(self, table_service: TableServiceClient, table_name: str, *,
                 etag_retry: EtagRetry = EtagRetry(races=(ResourceModifiedError, ResourceExistsError))):
        self._table = _open_table(table_service, table_name)
        self._etag_retry = etag_retry

    def get(self, item: str, kind: AlertKind) -> Alert | None:
        entity = self._point(f"H{shard_of(item)}", _key(item, kind))
        return _alert_from(entity) if entity is not None else None

    def update(self, item: str, kind: AlertKind, change: Callable[[Alert | None], Alert | None]) -> Alert | None:
        def attempt() -> Alert | None:
            current = self.get(item, kind)
            changed = change(current)
            if changed is None:
                return current
            with _storage_errors(f"saving the {kind.value} alert of {item}"):
                if current is not None and changed.name != current.name:
                    self._table.upsert_entity(_alert_entity(current, f"X{shard_of(item)}",
                                                            f"{_key(item, kind)}|{_inv(current.fired_at)}"))
                # An outbox row is written before the alert that needs it and removed after the one that no
                # longer does: a crash in between leaves a row to skip, never an alert nobody looks at.
                outboxes = (("O", lambda a: a.owed is not None), ("N", lambda a: a.parked))
                for partition, holds in outboxes:
                    if holds(changed):
                        self._table.upsert_entity({"PartitionKey": partition, "RowKey": _key(item, kind),
                                                   "Item": item, "Kind": kind.value})
                entity = _alert_entity(changed, f"H{shard_of(item)}", _key(item, kind))
                if current is None:
                    meta = self._table.create_entity(entity)
                else:
                    meta = self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=current.version,
                                                     match_condition=MatchConditions.IfNotModified)
                for partition, holds in outboxes:
                    if current is not None and holds(current) and not holds(changed):
                        self._delete(partition, _key(item, kind))
            return replace(changed, version=meta.get("etag"))

        return self._etag_retry.run(attempt, what=f"{kind.value} alert of {item}")

    def find(self, name: str) -> Alert | None:
        parsed = parse_alert_name(name)
        if parsed is None:
            return None
        kind, item, fired = parsed
        current = self.get(item, kind)
        if current is not None and current.name == name:
            return current
        entity = self._point(f"X{shard_of(item)}", f"{_key(item, kind)}|{_inv(fired)}")
        return _alert_from(entity) if entity is not None else None

    def list(self, status: AlertStatus | None = None, item: str | None = None) -> builtins.list[Alert]:
        kinds = ["H"] if status is AlertStatus.ACTIVE else ["H", "X"]
        found: builtins.list[Alert] = []
        for prefix in kinds:
            if item is None:
                text = "PartitionKey ge @low and PartitionKey lt @high"
                params: dict[str, Any] = {"low": prefix, "high": chr(ord(prefix) + 1)}
            else:       # one item's alerts: a RowKey range in its shard's partition
                text = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
                params = {"pk": f"{prefix}{shard_of(item)}", "low": f"{item.lower()}|", "high": f"{item.lower()}}}"}
            if status is not None:
                text += " and Status eq @status"
                params["status"] = status.value
            found += [_alert_from(e) for e in self._query(text, params)]
        return sorted(found, key=lambda a: (a.fired_at, a.name), reverse=True)

    def owed(self) -> builtins.list[Alert]:
        return self._outbox("O", lambda alert: alert.owed is not None)

    def parked(self) -> builtins.list[Alert]:
        return self._outbox("N", lambda alert: alert.parked)

    def marks(self) -> dict[str, datetime]:
        entity = self._point("S", "marks")
        return {k: _time(v) for k, v in json.loads(entity.get("Marks") or "{}").items()} if entity else {}

    def advance_marks(self, marks: dict[str, datetime]) -> None:
        def attempt() -> None:
            entity = self._point("S", "marks")
            stored = {k: _time(v) for k, v in json.loads(entity.get("Marks") or "{}").items()} if entity else {}
            merged = dict(stored)
            for key, when in marks.items():
                merged[key] = max(utc(when), stored.get(key, utc(when)))
            if merged == stored:
                return
            row = {"PartitionKey": "S", "RowKey": "marks",
                   "Marks": json.dumps({k: utc(v).isoformat() for k, v in merged.items()})}
            with _storage_errors("saving the alert evaluator's marks"):
                if entity is None:
                    self._table.create_entity(row)
                else:
                    self._table.update_entity(row, mode=UpdateMode.REPLACE, etag=entity.metadata["etag"],
                                              match_condition=MatchConditions.IfNotModified)

        self._etag_retry.run(attempt, what="the alert evaluator's marks")

    def watch(self, item: str, breach_at: datetime) -> None:
        with _storage_errors(f"watching the RPO of {item}"):
            self._table.upsert_entity({"PartitionKey": "W", "RowKey": item.lower(), "Item": item,
                                       "BreachAt": utc(breach_at)}, mode=UpdateMode.REPLACE)

    def due_watches(self, now: datetime) -> builtins.list[tuple[str, datetime]]:
        rows = self._query("PartitionKey eq 'W' and BreachAt le @now", {"now": utc(now)})
        return sorted(((row["Item"], _time(row["BreachAt"])) for row in rows), key=lambda pair: pair[1])

    def unwatch(self, item: str) -> None:
        self._delete("W", item.lower())

    # --- internals ----------------------------------------------------------------------------------
    def _outbox(self, partition: str, holds: Callable[[Alert], bool]) -> builtins.list[Alert]:
        """The current alerts an outbox partition lists that still belong there (one small partition read)."""
        alerts: builtins.list[Alert] = []
        for row in self._query("PartitionKey eq @pk", {"pk": partition}):
            alert = self.get(row["Item"], AlertKind(row["Kind"]))
            if alert is not None and holds(alert):
                alerts.append(alert)
        return alerts

    def _point(self, partition: str, row: str) -> TableEntity | None:
        try:
            with _storage_errors("reading an alert"):
                return self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None

    def _query(self, text: str, params: dict[str, Any]) -> builtins.list[TableEntity]:
        with _storage_errors("listing alerts"):
            return list(self._table.query_entities(text, parameters=params, results_per_page=_PAGE))

    def _delete(self, partition: str, row: str) -> None:
        try:
            with _storage_errors("deleting an alert row"):
                self._table.delete_entity(partition, row)
        except ResourceNotFoundError:
            pass


class TableJobFeed:
    def __init__(self, table_service: TableServiceClient, table_name: str):
        self._table = _open_table(table_service, table_name)

    def add(self, entry: FeedEntry) -> None:
        with _storage_errors(f"recording job {entry.job_id} in the job feed"):
            self._table.upsert_entity({"PartitionKey": _minute(entry.at), "RowKey": f"{entry.job_id}|{entry.status}",
                                       "JobId": entry.job_id, "VmName": entry.vm_name, "Status": entry.status,
                                       "At": utc(entry.at)}, mode=UpdateMode.REPLACE)

    def between(self, after: datetime, until: datetime) -> list[FeedEntry]:
        if utc(until) <= utc(after):
            return []
        with _storage_errors("reading the job feed"):
            rows = list(self._table.query_entities(
                "PartitionKey ge @low and PartitionKey le @high and At gt @after and At le @until",
                parameters={"low": _minute(after), "high": _minute(until), "after": utc(after), "until": utc(until)},
                results_per_page=_PAGE))
        entries = [FeedEntry(job_id=r["JobId"], vm_name=r["VmName"], status=r["Status"], at=_time(r["At"]))
                   for r in rows]
        return sorted(entries, key=lambda e: (e.at, e.job_id))

    def prune(self, before: datetime, *, limit: int) -> int:
        return delete_matching(self._table, "PartitionKey ge @low and PartitionKey lt @high",
                               {"low": "F", "high": _minute(before)}, limit=limit, what="job feed entries")


# --- entity mapping ------------------------------------------------------------------------------------

def _key(item: str, kind: AlertKind) -> str:
    return f"{item.lower()}|{kind.value}"


def _inv(when: datetime) -> str:
    ms = min(max((utc(when) - _EPOCH) // timedelta(milliseconds=1), 0), _MAX_MS)
    return f"{_MAX_MS - ms:013d}"


def _minute(when: datetime) -> str:
    return "F" + utc(when).strftime("%Y%m%d%H%M")


def _alert_entity(alert: Alert, partition: str, row: str) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": partition, "RowKey": row, "Name": alert.name, "Item": alert.item,
        "ItemKey": alert.item.lower(), "Kind": alert.kind.value, "Status": alert.status.value,
        "FiredAt": utc(alert.fired_at), "LastSeen": utc(alert.last_seen), "Count": alert.count,
        "Summary": alert.summary, "LatestTime": utc(alert.latest_time), "ErrorTitle": alert.error_title,
        "Recommendations": json.dumps(list(alert.recommendations)),
        "Occurrences": json.dumps([_occurrence_dict(o) for o in alert.occurrences]),
        "Delivery": json.dumps(_delivery_dict(alert.delivery)),
    }
    optional = {"ErrorCode": alert.error_code, "PolicyName": alert.policy_name, "TargetId": alert.target_id,
                "ResolvedAt": alert.resolved_at and utc(alert.resolved_at),
                "ResolvedTime": alert.resolved_time and utc(alert.resolved_time),
                "ResolvedBy": alert.resolved_by, "Resolution": alert.resolution}
    entity.update({k: v for k, v in optional.items() if v is not None})
    return entity


def _alert_from(entity: Any) -> Alert:
    get = entity.get
    return Alert(
        name=get("Name"), item=get("Item"), kind=AlertKind(get("Kind")), status=AlertStatus(get("Status")),
        fired_at=_time(get("FiredAt")), last_seen=_time(get("LastSeen")), count=int(get("Count") or 1),
        summary=get("Summary") or "", latest_time=_time(get("LatestTime")), error_code=get("ErrorCode"),
        error_title=get("ErrorTitle") or "", recommendations=tuple(json.loads(get("Recommendations") or "[]")),
        occurrences=tuple(_occurrence_from(o) for o in json.loads(get("Occurrences") or "[]")),
        policy_name=get("PolicyName"), target_id=get("TargetId"), resolved_at=_maybe(get("ResolvedAt")),
        resolved_time=_maybe(get("ResolvedTime")), resolved_by=get("ResolvedBy"), resolution=get("Resolution"),
        delivery=_delivery_from(json.loads(get("Delivery") or "{}")),
        version=entity.metadata.get("etag") if hasattr(entity, "metadata") else None)


def _occurrence_dict(o: Occurrence) -> dict[str, Any]:
    return {"key": o.key, "time": utc(o.time).isoformat(), "seenAt": utc(o.seen_at).isoformat(), "jobId": o.job_id,
            "errorCode": o.error_code}


def _occurrence_from(d: dict[str, Any]) -> Occurrence:
    return Occurrence(key=d["key"], time=_time(d["time"]), seen_at=_time(d["seenAt"]), job_id=d.get("jobId"),
                      error_code=d.get("errorCode"))


def _delivery_dict(d: Delivery) -> dict[str, Any]:
    return {k: (v.value if isinstance(v, DeliveryState) else utc(v).isoformat() if isinstance(v, datetime) else v)
            for k, v in asdict(d).items()}


def _delivery_from(d: dict[str, Any]) -> Delivery:
    times = ("first_failure_at", "last_attempt_at", "next_attempt_at", "lease_until")
    values: dict[str, Any] = {k: (_maybe(v) if k in times else v) for k, v in d.items()
                              if k in Delivery.__dataclass_fields__}
    if "state" in values:
        values["state"] = DeliveryState(values["state"])
    return Delivery(**values)


def _time(value: Any) -> datetime:
    if isinstance(value, str):
        return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    return utc(datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                        value.microsecond, tzinfo=value.tzinfo))


def _maybe(value: Any) -> datetime | None:
    return None if value is None else _time(value)
