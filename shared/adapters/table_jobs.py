"""Job records in Azure Table Storage: the JobStore port on one table (created if missing).

Keys. Every job id made by ``job_id_for`` is a UUIDv8 carrying its slot time (unix ms), so the keys
of a job are computed from its id alone. Times are stored inverted (``9999999999999 - ms``, 13
digits) so that the natural key order is newest first, which is the order users ask for.

- Job row (one per job, mutable, ETag-guarded):
  ``PartitionKey = "J" + inv(slot hour)``, ``RowKey = inv(slot ms) + "_" + job_id``.
  (b) ``job show <id>`` is a point read. (a) A tick's jobs share a slot, hence a partition, so the
  scheduler inserts them in transactions of 100. (d) A time range is a PartitionKey range scan over
  the hours it covers, newest first; (e) status and operation filters run server-side inside that
  range (bounded by the range; the CLI defaults to the last 7 days, like az). One hour per partition
  keeps each partition's write rate far below the per-partition limit even at 10,000 jobs a tick.
- VM index row (one per job, immutable, written before the job row, so a job row never lacks one):
  ``PartitionKey = "V" + the first hex digit of sha256(vm)`` (16 buckets, fixed forever),
  ``RowKey = vm + "|" + inv(slot ms) + "|" + job_id``. (c) The jobs of one VM, newest first, are a
  RowKey prefix range inside one partition; a tick's index rows fall into 16 partitions, so they
  batch too (10,000 jobs: 100 job-row and about 110 index transactions).
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
import json
import logging
import re
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence

from azure.core import MatchConditions
from azure.core.exceptions import (AzureError, HttpResponseError, ResourceExistsError, ResourceModifiedError,
                                   ResourceNotFoundError)
from azure.data.tables import EdmType, EntityProperty, TableServiceClient, TableTransactionError, UpdateMode

from shared.clock import utc
from shared.adapters.azure_errors import TABLE_REFUSED_HINT, EtagRetry, translate
from shared.domain.bloburl import base_of
from shared.domain.jobs import (AttemptOutcome, AttemptRecord, Consistency, DiskResult, Job, JobError, JobPhase,
                                JobStatus, slot_of_job_id)
from shared.domain.status import strip_secrets
from shared.domain.task import validate_job_id
from shared.errors import NotFoundError, ValidationError
from shared.ports import JobPage, JobQuery

log = logging.getLogger(__name__)

SCHEMA = 1
BATCH = 100                 # Table transactions take at most 100 operations
MAX_PAGE = 1000
MAX_PROPERTY_CHARS = 30_000  # a string property holds at most 64 KiB (32K UTF-16 units)
_MAX_MS = 10**13 - 1
_HOUR_MS = 3_600_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_UNSAFE_KEY = re.compile(r"[^a-z0-9._-]")


class TableJobStore:
    """The JobStore port on Azure Table Storage (Azurite locally)."""

    def __init__(self, table_service: TableServiceClient, table_name: str, *, workers: int = 8,
                 etag_retry: EtagRetry = EtagRetry()):
        self._service = table_service
        self._name = table_name
        self._table = table_service.get_table_client(table_name)
        self._workers = workers
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
        # Index (and alias) rows first: idempotent upserts, so a crash between the two steps leaves at
        # worst an index row pointing at nothing, which queries skip.
        side_rows = [_index_entity(job) for _, job in unique] + [
            _alias_entity(job) for _, job in unique if slot_of_job_id(job.job_id) is None]
        self._run_batches(_group(side_rows), self._upsert_batch)
        by_partition: dict[str, list[tuple[int, dict]]] = defaultdict(list)
        for index, job in unique:
            entity = _job_entity(job)
            by_partition[entity["PartitionKey"]].append((index, entity))
        chunks = [items[i:i + BATCH] for items in by_partition.values() for i in range(0, len(items), BATCH)]
        for created in self._map(self._create_chunk, chunks):
            for index, ok in created:
                results[index] = ok
        return results

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
        token = _decode_token(query.continuation)
        source = self._by_vm(query, token) if query.vm_name else self._by_time(query, token, size)
        jobs: list[Job] = []
        last: tuple[str, str] | None = None
        for keys, job in source:
            if query.matches(job):
                jobs.append(job)
                last = keys
                if len(jobs) == size:
                    return JobPage(jobs=jobs, continuation=_encode_token(last))
        return JobPage(jobs=jobs)

    # --- internals ----------------------------------------------------------------------------
    def _by_vm(self, query: JobQuery, token: tuple[str, str] | None) -> Iterator[tuple[tuple[str, str], Job]]:
        vm = _vm_key(query.vm_name)
        low = f"{vm}|{_inv(_ms(query.until) - 1)}|" if query.until else f"{vm}|"
        high = f"{vm}|{_inv(_ms(query.since))}|~" if query.since else f"{vm}|~"
        partition = _vm_partition(query.vm_name)
        params = {"pk": partition, "low": low, "high": high}
        text = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
        if token:
            params["after"] = token[1]
            text += " and RowKey gt @after"
        for row in self._query(text, params, select=["RowKey", "JobId"]):
            entity = self._read(row["JobId"])
            if entity is not None:
                yield (partition, row["RowKey"]), job_from_entity(entity)

    def _by_time(self, query: JobQuery, token, size: int) -> Iterator[tuple[tuple[str, str], Job]]:
        params: dict[str, Any] = {
            "plow": "J" + _inv(_hour(_ms(query.until) - 1)) if query.until else "J",
            "phigh": "J" + _inv(_hour(_ms(query.since))) if query.since else "J~",
        }
        extra = ""
        if query.since:
            params["since"] = utc(query.since)
            extra += " and Slot ge @since"
        if query.until:
            params["until"] = utc(query.until)
            extra += " and Slot lt @until"
        if query.status:
            params["status"] = JobStatus(query.status).value
            extra += " and Status eq @status"
        if query.operation:
            params["operation"] = query.operation
            extra += " and Operation eq @operation"
        texts = []
        if token:
            params.update(pk=token[0], after=token[1])
            texts.append("PartitionKey eq @pk and RowKey gt @after" + extra)
            texts.append("PartitionKey gt @pk and PartitionKey le @phigh" + extra)
        else:
            texts.append("PartitionKey ge @plow and PartitionKey le @phigh" + extra)
        for text in texts:
            for entity in self._query(text, params, per_page=min(size + 1, MAX_PAGE)):
                yield (entity["PartitionKey"], entity["RowKey"]), job_from_entity(entity)

    def _query(self, text: str, params: dict, *, select: list[str] | None = None,
               per_page: int = MAX_PAGE) -> Iterator[dict]:
        try:
            yield from self._table.query_entities(text, parameters=params, select=select,
                                                  results_per_page=per_page)
        except ResourceNotFoundError:
            return      # no table yet: no jobs
        except (HttpResponseError, AzureError) as exc:
            raise _translate(exc, "querying jobs") from exc

    def _read(self, job_id: str):
        keys = _job_keys(job_id)
        if keys is None:
            alias = self._point(f"A{_hash2(job_id)}", job_id)
            if alias is None:
                return None
            keys = (alias["JobPartition"], alias["JobRow"])
        return self._point(*keys)

    def _point(self, partition: str, row: str):
        try:
            return self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None
        except (HttpResponseError, AzureError) as exc:
            raise _translate(exc, "reading a job") from exc

    def _create_chunk(self, chunk: list[tuple[int, dict]]) -> list[tuple[int, bool]]:
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

    def _upsert_batch(self, chunk: list[dict]) -> None:
        self._call(self._table.submit_transaction, [("upsert", entity) for entity in chunk])

    def _run_batches(self, groups: dict[str, list[dict]], fn) -> None:
        chunks = [rows[i:i + BATCH] for rows in groups.values() for i in range(0, len(rows), BATCH)]
        list(self._map(fn, chunks))

    def _map(self, fn, chunks: list) -> Iterable:
        if len(chunks) <= 1 or self._workers <= 1:
            return [fn(chunk) for chunk in chunks]
        with ThreadPoolExecutor(max_workers=min(self._workers, len(chunks))) as pool:
            return list(pool.map(fn, chunks))

    def _call(self, fn, *args, **kwargs):
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


# --- entity mapping ---------------------------------------------------------------------------

def job_to_entity(job: Job) -> dict[str, Any]:
    """The job as a flat table entity (keys included)."""
    return _job_entity(job)


def _job_entity(job: Job) -> dict[str, Any]:
    partition, row = _job_keys(job.job_id) or _slot_keys(job)
    entity: dict[str, Any] = {
        "PartitionKey": partition, "RowKey": row, "Schema": SCHEMA,
        "JobId": job.job_id, "VmName": job.vm_name, "Slot": utc(job.slot), "StartTime": utc(job.start_time),
        "Trigger": getattr(job.trigger, "value", job.trigger), "Operation": job.operation,
        "Status": job.status.value, "Phase": job.phase.value, "Attempt": _int32(job.attempt),
        "Disks": _fit_json([_disk_dict(d) for d in job.disks], "error"),
        "Errors": _fit_json([asdict(e) for e in job.errors], "error_string"),
        "Notes": _fit_json(list(job.notes), None),
        "Attempts": _fit_json([_attempt_dict(a) for a in job.attempts], "detail"),
    }
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
        "BackupMethod": job.backup_method,
    }
    entity.update({k: v for k, v in optional.items() if v is not None})
    return entity


def job_from_entity(entity: dict[str, Any]) -> Job:
    get = lambda key: _plain(entity.get(key))  # noqa: E731
    return Job(
        job_id=get("JobId"), vm_name=get("VmName"), slot=_time(get("Slot")), start_time=_time(get("StartTime")),
        trigger=get("Trigger") or "Scheduled", operation=get("Operation") or "Backup",
        status=JobStatus(get("Status")), phase=JobPhase(get("Phase")), policy_name=get("PolicyName"),
        retain_until=_time(get("RetainUntil")), end_time=_time(get("EndTime")), attempt=int(get("Attempt") or 1),
        task_id=get("TaskId"), consistency=Consistency(get("Consistency")) if get("Consistency") else None,
        disks=[DiskResult(**d) for d in json.loads(get("Disks") or "[]")],
        backup_size_bytes=get("BackupSizeBytes"), extension_code=get("ExtensionCode"),
        health_code=get("HealthCode"), errors=[JobError(**e) for e in json.loads(get("Errors") or "[]")],
        status_blob=get("StatusBlob"), log_blob=get("LogBlob"), last_report_at=_time(get("LastReportAt")),
        notes=list(json.loads(get("Notes") or "[]")), dispatched_at=_time(get("DispatchedAt")),
        backup_method=get("BackupMethod"),
        attempts=[_attempt_from(a) for a in json.loads(get("Attempts") or "[]")],   # absent on older rows
    )


def _index_entity(job: Job) -> dict[str, Any]:
    ms = _ms(job.slot)
    return {"PartitionKey": _vm_partition(job.vm_name),
            "RowKey": f"{_vm_key(job.vm_name)}|{_inv(ms)}|{job.job_id}",
            "JobId": job.job_id, "VmName": job.vm_name, "Slot": utc(job.slot)}


def _alias_entity(job: Job) -> dict[str, Any]:
    partition, row = _slot_keys(job)
    return {"PartitionKey": f"A{_hash2(job.job_id)}", "RowKey": job.job_id,
            "JobPartition": partition, "JobRow": row}


def _job_keys(job_id: str) -> tuple[str, str] | None:
    slot = slot_of_job_id(job_id)
    if slot is None:
        return None
    ms = _ms(slot)
    return "J" + _inv(_hour(ms)), f"{_inv(ms)}_{job_id}"


def _slot_keys(job: Job) -> tuple[str, str]:
    validate_job_id(job.job_id, field="job_id")
    ms = _ms(job.slot)
    return "J" + _inv(_hour(ms)), f"{_inv(ms)}_{job.job_id}"


def _vm_key(name: str) -> str:
    return _UNSAFE_KEY.sub(lambda m: f"~{ord(m.group()):x}~", name.lower())


def _vm_partition(name: str) -> str:
    return f"V{_hash2(name.lower())[0]}"


def _hash2(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:2]


def _inv(ms: int) -> str:
    return f"{_MAX_MS - ms:013d}"


def _ms(dt: datetime) -> int:
    return (utc(dt) - _EPOCH) // timedelta(milliseconds=1)


def _hour(ms: int) -> int:
    return ms - ms % _HOUR_MS


def _group(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        groups[row["PartitionKey"]][row["RowKey"]] = row
    return {pk: list(by_row.values()) for pk, by_row in groups.items()}


def _disk_dict(disk: DiskResult) -> dict:
    return {"lun": disk.lun, "blob_url": base_of(disk.blob_url or ""), "status": disk.status,
            "snapshot_uri": strip_secrets(disk.snapshot_uri), "error": disk.error}


def _attempt_dict(record: AttemptRecord) -> dict:
    times = {key: getattr(record, key) and utc(getattr(record, key)).isoformat()
             for key in ("dispatched_at", "ended_at", "retry_at")}
    return dict(asdict(record), outcome=record.outcome.value, **times)


def _attempt_from(data: dict) -> AttemptRecord:
    return AttemptRecord(attempt=int(data["attempt"]), task_id=str(data["task_id"]),
                         outcome=AttemptOutcome(data["outcome"]), error_code=data.get("error_code"),
                         extension_code=data.get("extension_code"), detail=data.get("detail"),
                         dispatched_at=_time(data.get("dispatched_at")), ended_at=_time(data.get("ended_at")),
                         retry_at=_time(data.get("retry_at")))


def _fit_json(items: list, text_key: str | None) -> str:
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


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return utc(datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                        value.microsecond, tzinfo=value.tzinfo))


def _encode_token(keys: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(keys)).encode()).decode()


def _decode_token(token: str | None) -> tuple[str, str] | None:
    if not token:
        return None
    try:
        partition, row = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(partition), str(row)
    except (ValueError, TypeError) as exc:
        raise ValidationError("continuation token is not one this store issued", field="continuation") from exc


def _translate(exc: AzureError, doing: str) -> Exception:
    return translate(exc, doing, service="Table Storage", refused_hint=TABLE_REFUSED_HINT)
