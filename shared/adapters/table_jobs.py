# Over 400 lines on purpose: key scheme, entity encoding and range queries must agree on one layout.
"""Job records in Azure Table Storage: the JobStore port on one table (created if missing).

Keys. Every job id made by ``job_id_for`` is a UUIDv8 carrying its slot time (unix ms), so the keys
of a job are computed from its id alone. Times are stored inverted (``9999999999999 - ms``, 13
digits) so that the natural key order is newest first, which is the order users ask for.

- Job row (one per job, mutable, ETag-guarded):
  ``PartitionKey = "J" + shard + inv(slot hour)``, ``RowKey = inv(slot ms) + "_" + job_id``, where
  the shard is the VM's (shared/domain/shards.py), which the id carries. (b) ``job show <id>`` is a
  point read. (a) A tick's jobs for one shard share a slot, hence a partition, so a planner inserts
  them in transactions of 100, one entity per job and nothing else. (d) A time range is, per shard,
  a PartitionKey range over the hours it covers; the 16 shards' streams are merged newest first
  (RowKey order is time order across shards); (e) status, operation and VM filters run server-side
  inside those ranges. (c) The jobs of one VM are its shard's stream filtered on ``VmKey``: a scan
  of a sixteenth of the jobs in the range, newest first, stopping at the page's end, with no second
  row per job to write. One hour and one shard per partition keeps each partition's write rate
  at a sixteenth of a slot's jobs.
- Alias row, only for ids that do not carry a slot (not made by ``job_id_for``):
  ``PartitionKey = "A" + two hex digits of sha256(id)``, ``RowKey = job_id`` -> the job row's keys.

Filters on time apply to the job's slot (its scheduled time; the request time for on-demand jobs),
which is what the keys hold. Lists are JSON strings; text is capped so an entity stays far below
the 1 MiB entity and 64 KiB property limits; URLs are stored without query strings (never a SAS).
"""
from __future__ import annotations

import base64
import copy
import hashlib
import heapq
import json
import logging
import re
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Sequence, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (AzureError, HttpResponseError, ResourceExistsError, ResourceModifiedError,
                                   ResourceNotFoundError)
from azure.data.tables import (EdmType, EntityProperty, TableEntity, TableServiceClient, TableTransactionError,
                               UpdateMode)

from shared.clock import utc
from shared.adapters.metering import in_context
from shared.adapters.azure_errors import TABLE_REFUSED_HINT, EtagRetry, translate
from shared.domain.bloburl import base_of
from shared.domain.jobs import (AttemptOutcome, AttemptRecord, Consistency, DiskResult, Job, JobError, JobPhase,
                                JobStatus, shard_of_job_id, slot_of_job_id)
from shared.domain.restore import Check, RestoreSpec
from shared.domain.shards import SHARDS, check_shard, shard_of
from shared.domain.status import DirectDriveSnapshot, strip_secrets
from shared.domain.inventory import BackupMethod
from shared.domain.task import Trigger, validate_job_id
from shared.errors import NotFoundError, ValidationError
from shared.ports import JobOutcome, JobPage, JobQuery

log = logging.getLogger(__name__)

_Chunk = TypeVar("_Chunk")
_Result = TypeVar("_Result")

SCHEMA = 2                  # 2: shard in the partition key, no VM index rows
BATCH = 100                 # Table transactions take at most 100 operations
MAX_PAGE = 1000
MAX_PROPERTY_CHARS = 30_000  # a string property holds at most 64 KiB (32K UTF-16 units)
_MAX_MS = 10**13 - 1
_HOUR_MS = 3_600_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class TableJobStore:
    """The JobStore port on Azure Table Storage (Azurite locally)."""

    def __init__(self, table_service: TableServiceClient, table_name: str, *, workers: int = 8,
                 etag_retry: EtagRetry = EtagRetry()):
        self._service = table_service
        self._name = table_name
        self._table = table_service.get_table_client(table_name)
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._etag_retry = etag_retry
        self._ready = False

    # --- writes -------------------------------------------------------------------------------
    def create_if_absent(self, job: Job) -> bool:
        return self.create_many_if_absent([job])[0]

    def create_many_if_absent(self, jobs: Sequence[Job]) -> list[bool]:
        """Insert the jobs that do not exist yet, in transactions of up to 100 per partition."""
        self._ensure_table()
        results = [False] * len(jobs)
        first: dict[str, int] = {}
        for index, job in enumerate(jobs):
            first.setdefault(job.job_id, index)
        unique = [(index, jobs[index]) for index in first.values()]
        aliases = [_alias_entity(job) for _, job in unique if slot_of_job_id(job.job_id) is None]
        if aliases:     # first, and idempotent: a crash between the two leaves an alias to nothing
            self._run_batches(_group(aliases), self._upsert_batch)
        by_partition: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        for index, job in unique:
            entity = _job_entity(job)
            by_partition[entity["PartitionKey"]].append((index, entity))
        chunks = [items[i:i + BATCH] for items in by_partition.values() for i in range(0, len(items), BATCH)]
        for created in self._map(self._create_chunk, chunks):
            for index, ok in created:
                results[index] = ok
        return results

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        """The jobs of these ids that exist: one range query per partition they fall in."""
        wanted: dict[str, list[tuple[str, str]]] = defaultdict(list)
        found: dict[str, Job] = {}
        for job_id in dict.fromkeys(job_ids):
            keys = _job_keys(job_id)
            if keys is None:
                job = self.get(job_id)
                if job is not None:
                    found[job_id] = job
                continue
            wanted[keys[0]].append((keys[1], job_id))
        for partition, rows in wanted.items():
            ordered = sorted(rows)
            ids = {job_id for _, job_id in ordered}
            for entity in self._query("PartitionKey eq @pk and RowKey ge @low and RowKey le @high",
                                      {"pk": partition, "low": ordered[0][0], "high": ordered[-1][0]}):
                if entity.get("JobId") in ids:
                    found[entity["JobId"]] = job_from_entity(entity)
        return found

    def update(self, job_id: str, change: Callable[[Job], Job | None]) -> Job:
        """Read, change, write back only if nobody wrote in between (ETag); retry lost races."""
        self._ensure_table()

        def attempt() -> Job:
            entity = self._read(job_id)
            if entity is None:
                raise NotFoundError(f"job {job_id} not found")
            current = job_from_entity(entity)
            changed = change(copy.deepcopy(current))
            if changed is None:
                return current
            if changed.job_id != job_id:
                raise ValidationError("a job update cannot change the job id", field="job_id")
            self._call(self._table.update_entity, _job_entity(changed), mode=UpdateMode.REPLACE,
                       etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified)
            return changed

        return self._etag_retry.run(attempt, what=f"job {job_id}")

    # --- reads --------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        # Reads never create the table (a reader role may not): a missing table holds no job.
        entity = self._read(job_id)
        return job_from_entity(entity) if entity is not None else None

    def query(self, query: JobQuery) -> JobPage:
        """A page of jobs, newest first; ``continuation`` (opaque) resumes after the last one returned."""
        size = max(1, min(query.page_size, MAX_PAGE))
        after = _decode_token(query.continuation)
        if query.vm_name is not None:
            shards: Sequence[str] = (shard_of(query.vm_name),)
        elif query.shard is not None:
            shards = (check_shard(query.shard),)
        else:
            shards = SHARDS
        streams = [self._shard_stream(shard, query, after, size) for shard in shards]
        source = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda pair: pair[0])
        jobs: list[Job] = []
        for row_key, job in source:
            if query.matches(job):
                jobs.append(job)
                if len(jobs) == size:
                    return JobPage(jobs=jobs, continuation=_encode_token(row_key))
        return JobPage(jobs=jobs)

    def outcomes(self, query: JobQuery) -> Iterator[JobOutcome]:
        """The query's jobs as outcomes: the shards read side by side, five properties of each row."""
        shards = [shard_of(query.vm_name)] if query.vm_name is not None else \
            [check_shard(query.shard)] if query.shard is not None else list(SHARDS)
        # The RowKey carries the slot and the id: no date to parse per row (the SDK's costliest part).
        select = ["RowKey", "VmName", "Status", "Errors"]

        def read(shard: str) -> list[JobOutcome]:
            text, params = _range_filter(shard, query, None)
            return [_outcome(entity) for entity in self._query(text, params, select=select)]

        for found in self._map(read, shards):
            yield from found

    # --- internals ----------------------------------------------------------------------------
    def _shard_stream(self, shard: str, query: JobQuery, after: str | None,
                      size: int) -> Iterator[tuple[str, Job]]:
        """One shard's jobs in the query's range, newest first, as (RowKey, job).

        RowKeys start with the inverted slot time, so "RowKey gt the last one returned" resumes a
        page in every shard and every hour at once."""
        text, params = _range_filter(shard, query, after)
        for entity in self._query(text, params, per_page=min(size + 1, MAX_PAGE)):
            yield entity["RowKey"], job_from_entity(entity)

    def _query(self, text: str, params: dict[str, Any], *, select: list[str] | None = None,
               per_page: int = MAX_PAGE) -> Iterator[dict[str, Any]]:
        try:
            yield from self._table.query_entities(text, parameters=params, select=select,
                                                  results_per_page=per_page)
        except ResourceNotFoundError:
            return      # no table yet: no jobs
        except (HttpResponseError, AzureError) as exc:
            raise _translate(exc, "querying jobs") from exc

    def _read(self, job_id: str) -> TableEntity | None:
        keys = _job_keys(job_id)
        if keys is None:
            alias = self._point(f"A{_hash2(job_id)}", job_id)
            if alias is None:
                return None
            keys = (alias["JobPartition"], alias["JobRow"])
        return self._point(*keys)

    def _point(self, partition: str, row: str) -> TableEntity | None:
        try:
            return self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None
        except (HttpResponseError, AzureError) as exc:
            raise _translate(exc, "reading a job") from exc

    def _create_chunk(self, chunk: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, bool]]:
        try:
            self._call(self._table.submit_transaction, [("create", entity) for _, entity in chunk])
            return [(index, True) for index, _ in chunk]
        except (TableTransactionError, ResourceExistsError):
            pass        # at least one exists: the whole transaction was refused
        partition = chunk[0][1]["PartitionKey"]
        rows = sorted(entity["RowKey"] for _, entity in chunk)
        existing = {row["RowKey"] for row in self._query(
            "PartitionKey eq @pk and RowKey ge @low and RowKey le @high",
            {"pk": partition, "low": rows[0], "high": rows[-1]}, select=["RowKey"])}
        missing = [(index, entity) for index, entity in chunk if entity["RowKey"] not in existing]
        results = [(index, False) for index, entity in chunk if entity["RowKey"] in existing]
        if missing:
            try:
                self._call(self._table.submit_transaction, [("create", entity) for _, entity in missing])
                results += [(index, True) for index, _ in missing]
            except (TableTransactionError, ResourceExistsError):
                for index, entity in missing:      # lost a race with another writer: settle one by one
                    try:
                        self._call(self._table.create_entity, entity)
                        results.append((index, True))
                    except ResourceExistsError:
                        results.append((index, False))
        return results

    def _upsert_batch(self, chunk: list[dict[str, Any]]) -> None:
        self._call(self._table.submit_transaction, [("upsert", entity) for entity in chunk])

    def _run_batches(self, groups: dict[str, list[dict[str, Any]]],
                     fn: Callable[[list[dict[str, Any]]], object]) -> None:
        chunks = [rows[i:i + BATCH] for rows in groups.values() for i in range(0, len(rows), BATCH)]
        list(self._map(fn, chunks))

    def _map(self, fn: Callable[[_Chunk], _Result], chunks: list[_Chunk]) -> list[_Result]:
        if len(chunks) <= 1 or self._workers <= 1:
            return [fn(chunk) for chunk in chunks]
        with self._pool_lock:       # one pool for the store's life: starting threads per call costs more
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="jobstore")
        futures = [self._pool.submit(in_context(fn), chunk) for chunk in chunks]
        return [future.result() for future in futures]

    def _call(self, fn: Callable[..., _Result], *args: Any, **kwargs: Any) -> _Result:
        try:
            return fn(*args, **kwargs)
        except (ResourceExistsError, ResourceModifiedError, TableTransactionError):
            raise
        except (HttpResponseError, AzureError) as exc:
            raise _translate(exc, "writing a job") from exc

    def _ensure_table(self) -> None:
        if self._ready:
            return
        try:
            self._service.create_table_if_not_exists(self._name)
        except (HttpResponseError, AzureError) as exc:
            raise _translate(exc, f"creating table {self._name}") from exc
        self._ready = True


def _range_filter(shard: str, query: JobQuery, after: str | None) -> tuple[str, dict[str, Any]]:
    """The filter of one shard's jobs in the query's range (after the RowKey ``after``, if given)."""
    newest = _inv(_hour(_ms(query.until) - 1)) if query.until else ""
    if after is not None:
        newest = max(newest, _inv(_hour(_MAX_MS - int(after[:13]))))
    params: dict[str, Any] = {
        "plow": f"J{shard}{newest}",
        "phigh": f"J{shard}{_inv(_hour(_ms(query.since)))}" if query.since else f"J{shard}~",
    }
    text = "PartitionKey ge @plow and PartitionKey le @phigh"
    if after is not None:
        params["after"] = after
        text += " and RowKey gt @after"
    if query.vm_name is not None:
        params["vm"] = query.vm_name.lower()
        text += " and VmKey eq @vm"
    if query.vms_after is not None:
        params["vmsafter"] = query.vms_after.lower()
        text += " and VmKey gt @vmsafter"
    if query.vms_through is not None:
        params["vmsthrough"] = query.vms_through.lower()
        text += " and VmKey le @vmsthrough"
    if query.since:
        params["since"] = utc(query.since)
        text += " and Slot ge @since"
    if query.until:
        params["until"] = utc(query.until)
        text += " and Slot lt @until"
    if query.status:
        params["status"] = JobStatus(query.status).value
        text += " and Status eq @status"
    if query.operation:
        params["operation"] = query.operation
        text += " and Operation eq @operation"
    return text, params


def _outcome(entity: dict[str, Any]) -> JobOutcome:
    row = entity["RowKey"]                      # inv(slot ms) "_" job id
    errors = entity.get("Errors")
    first = json.loads(errors)[0] if errors and errors != "[]" else None
    return JobOutcome(job_id=row[14:], vm_name=entity["VmName"],
                      slot=_EPOCH + timedelta(milliseconds=_MAX_MS - int(row[:13])),
                      status=JobStatus(entity["Status"]), error=JobError(**first) if first else None)


# --- entity mapping ---------------------------------------------------------------------------

def job_to_entity(job: Job) -> dict[str, Any]:
    """The job as a flat table entity (keys included)."""
    return _job_entity(job)


def _job_entity(job: Job) -> dict[str, Any]:
    partition, row = _job_keys(job.job_id) or _slot_keys(job)
    entity: dict[str, Any] = {
        "PartitionKey": partition, "RowKey": row, "Schema": SCHEMA,
        "JobId": job.job_id, "VmName": job.vm_name, "VmKey": job.vm_name.lower(), "Slot": utc(job.slot),
        "StartTime": utc(job.start_time), "Trigger": job.trigger.value,
        "Operation": job.operation, "Status": job.status.value, "Phase": job.phase.value,
        "Attempt": _int32(job.attempt),
    }
    # Lists only when not empty: a new job's row stays small (a tick encodes ten thousand of them);
    # a REPLACE write drops a list that became empty, and a missing list reads back as empty.
    lists: tuple[tuple[str, Sequence[object], Callable[[], str]], ...] = (
             ("Disks", job.disks, lambda: _fit_json([_disk_dict(d) for d in job.disks], "error")),
             ("Errors", job.errors, lambda: _fit_json([asdict(e) for e in job.errors], "error_string")),
             ("Notes", job.notes, lambda: _fit_json(list(job.notes), None)),
             ("Attempts", job.attempts, lambda: _fit_json([_attempt_dict(a) for a in job.attempts], "detail")),
             ("Checks", job.checks, lambda: _fit_json([c.as_record() for c in job.checks], "detail")))
    entity.update({key: render() for key, items, render in lists if items})
    optional = {
        "PolicyName": job.policy_name, "RetainUntil": job.retain_until and utc(job.retain_until),
        "EndTime": job.end_time and utc(job.end_time), "TaskId": job.task_id,
        "Consistency": job.consistency.value if job.consistency else None,
        "BackupSizeBytes": None if job.backup_size_bytes is None else EntityProperty(_int64(job.backup_size_bytes),
                                                                                     EdmType.INT64),
        "ExtensionCode": _int32(job.extension_code),
        "HealthCode": _int32(job.health_code), "StatusBlob": job.status_blob and base_of(job.status_blob),
        "LogBlob": job.log_blob and base_of(job.log_blob),
        "LastReportAt": job.last_report_at and utc(job.last_report_at),
        "DispatchedAt": job.dispatched_at and utc(job.dispatched_at),
        "BackupMethod": job.backup_method and job.backup_method.value, "ArmOperation": job.arm_operation,
        "Restore": job.restore and json.dumps(job.restore.as_record(), separators=(",", ":")),
    }
    entity.update({k: v for k, v in optional.items() if v is not None})
    return entity


def job_from_entity(entity: dict[str, Any]) -> Job:
    def get(key: str) -> Any:
        return _plain(entity.get(key))

    return Job(
        job_id=get("JobId"), vm_name=get("VmName"), slot=_required_time(get("Slot"), "Slot"),
        start_time=_required_time(get("StartTime"), "StartTime"),
        trigger=Trigger(get("Trigger") or Trigger.SCHEDULED), operation=get("Operation") or "Backup",
        status=JobStatus(get("Status")), phase=JobPhase(get("Phase")), policy_name=get("PolicyName"),
        retain_until=_time(get("RetainUntil")), end_time=_time(get("EndTime")), attempt=int(get("Attempt") or 1),
        task_id=get("TaskId"), consistency=Consistency(get("Consistency")) if get("Consistency") else None,
        disks=[_disk_from(d) for d in json.loads(get("Disks") or "[]")],    # lists: absent when empty
        backup_size_bytes=get("BackupSizeBytes"), extension_code=get("ExtensionCode"),
        health_code=get("HealthCode"), errors=[JobError(**e) for e in json.loads(get("Errors") or "[]")],
        status_blob=get("StatusBlob"), log_blob=get("LogBlob"), last_report_at=_time(get("LastReportAt")),
        notes=list(json.loads(get("Notes") or "[]")), dispatched_at=_time(get("DispatchedAt")),
        backup_method=BackupMethod(get("BackupMethod")) if get("BackupMethod") else None,
        arm_operation=get("ArmOperation"),
        attempts=[_attempt_from(a) for a in json.loads(get("Attempts") or "[]")],   # absent on older rows
        restore=RestoreSpec.from_record(json.loads(get("Restore"))) if get("Restore") else None,
        checks=[Check.from_record(c) for c in json.loads(get("Checks") or "[]")],
    )


def _alias_entity(job: Job) -> dict[str, Any]:
    partition, row = _slot_keys(job)
    return {"PartitionKey": f"A{_hash2(job.job_id)}", "RowKey": job.job_id,
            "JobPartition": partition, "JobRow": row}


def _job_keys(job_id: str) -> tuple[str, str] | None:
    slot, shard = slot_of_job_id(job_id), shard_of_job_id(job_id)
    if slot is None or shard is None:
        return None
    ms = _ms(slot)
    return f"J{shard}{_inv(_hour(ms))}", f"{_inv(ms)}_{job_id}"


def _slot_keys(job: Job) -> tuple[str, str]:
    validate_job_id(job.job_id, field="job_id")
    ms = _ms(job.slot)
    return f"J{shard_of(job.vm_name)}{_inv(_hour(ms))}", f"{_inv(ms)}_{job.job_id}"


def _hash2(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:2]


def _inv(ms: int) -> str:
    return f"{_MAX_MS - ms:013d}"


def _ms(dt: datetime) -> int:
    return (utc(dt) - _EPOCH) // timedelta(milliseconds=1)


def _hour(ms: int) -> int:
    return ms - ms % _HOUR_MS


def _group(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        groups[row["PartitionKey"]][row["RowKey"]] = row
    return {pk: list(by_row.values()) for pk, by_row in groups.items()}


def _disk_dict(disk: DiskResult) -> dict[str, Any]:
    row = {"lun": disk.lun, "blob_url": base_of(disk.blob_url or ""), "status": disk.status,
           "snapshot_uri": strip_secrets(disk.snapshot_uri), "error": disk.error}
    if disk.direct_drive is not None:
        row["direct_drive"] = disk.direct_drive.as_record()
    # A restore's per-disk state, only on restore jobs: a backup's row stays as small as it was.
    row.update({key: getattr(disk, key) for key in _RESTORE_DISK_KEYS if getattr(disk, key) is not None})
    return row


_RESTORE_DISK_KEYS = ("bytes_total", "bytes_done", "safety_copy", "replaced")


def _disk_from(data: dict[str, Any]) -> DiskResult:
    direct = data.pop("direct_drive", None)
    return DiskResult(**data, direct_drive=DirectDriveSnapshot.from_record(direct) if direct else None)


def _attempt_dict(record: AttemptRecord) -> dict[str, Any]:
    times = {key: getattr(record, key) and utc(getattr(record, key)).isoformat()
             for key in ("dispatched_at", "ended_at", "retry_at")}
    return dict(asdict(record), outcome=record.outcome.value, **times)


def _attempt_from(data: dict[str, Any]) -> AttemptRecord:
    return AttemptRecord(attempt=int(data["attempt"]), task_id=str(data["task_id"]),
                         outcome=AttemptOutcome(data["outcome"]), error_code=data.get("error_code"),
                         extension_code=data.get("extension_code"), detail=data.get("detail"),
                         dispatched_at=_time(data.get("dispatched_at")), ended_at=_time(data.get("ended_at")),
                         retry_at=_time(data.get("retry_at")))


def _fit_json(items: list[Any], text_key: str | None) -> str:
    """JSON of a list, shortened (text first, then items) until it fits one table property."""
    text = json.dumps(items, separators=(",", ":"))
    limit = 200
    while len(text) > MAX_PROPERTY_CHARS and text_key and limit >= 50:
        items = [dict(item, **{text_key: (item.get(text_key) or "")[:limit] or None}) for item in items]
        text, limit = json.dumps(items, separators=(",", ":")), limit // 2
    while len(text) > MAX_PROPERTY_CHARS and items:
        items = items[1:] if text_key is None else items[:-1]
        text = json.dumps(items, separators=(",", ":"))
    return text


def _int32(value: int | None) -> int | None:
    """Within Edm.Int32: the SDK refuses a larger int outright, and a refused write loses a result.
    The domain clamps (and notes) numbers from the VM already; this is the last line."""
    return None if value is None else max(-(2**31), min(2**31 - 1, value))


def _int64(value: int) -> int:
    return max(-(2**63), min(2**63 - 1, value))


def _plain(value: Any) -> Any:
    return getattr(value, "value", value) if type(value).__name__ == "EntityProperty" else value


def _required_time(value: Any, key: str) -> datetime:
    when = _time(value)
    if when is None:    # every writer sets both; a row without one was not written by this store
        raise ValueError(f"a job row without {key}")
    return when


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return utc(datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                        value.microsecond, tzinfo=value.tzinfo))


def _encode_token(row_key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(["v2", row_key]).encode()).decode()


def _decode_token(token: str | None) -> str | None:
    if not token:
        return None
    try:
        version, row_key = json.loads(base64.urlsafe_b64decode(token.encode()))
        if version != "v2" or not re.fullmatch(r"\d{13}_.+", str(row_key)):
            raise ValueError(version)
        return str(row_key)
    except (ValueError, TypeError) as exc:
        raise ValidationError("continuation token is not one this store issued", field="continuation") from exc


def _translate(exc: AzureError, doing: str) -> Exception:
    return translate(exc, doing, service="Table Storage", refused_hint=TABLE_REFUSED_HINT)
