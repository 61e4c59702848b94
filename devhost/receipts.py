"""Blob receipts of the local Functions host, written in batches.

A receipt says "this function has handled blob B of container C as it was at ETag E" (or gave up on
it: poison). The host compares the listing of a pass against the receipts it holds in memory; what
it writes to storage is for the next start.

Azure's host writes one receipt blob per handled blob (``blobreceipts/<host>/<function>/<etag>/<container>/<blob>``
in ``azure-webjobs-hosts``). Azure Storage's cost for such a write does not depend on how many blobs
the account holds; Azurite's does: its in-memory store finds a blob by going through every blob of
the account, so per-blob receipts cost it a lookup among all earlier receipts, more than the
status blob's own download once 10,000 are kept. The local host therefore writes its receipts as a
journal: one block blob ("chunk") of JSON lines per flush, under
``blobreceipts/<host>/<function>/<container>/``. A flush happens when ``batch`` receipts are waiting,
``interval`` seconds after the last one, at the end of each pass and when the host stops.

What that changes for the function: nothing while the host runs. A host killed between a function's
return and the next flush re-runs those blobs after a restart (at most ``interval`` seconds of
them). Azure's host re-runs a blob too when it stops between the function and the receipt; blob
functions are written to be re-run (``docs/ingestion.md``).

The journal is shared by the instances of one host id. Chunks are only ever added (each under a
name of its own) or, by compaction, replaced by one chunk holding their union: a compaction reads the
chunks it removes, so receipts another instance wrote are kept. Compaction also drops receipts of
blobs the last complete listing no longer showed (deleted, or rewritten under a new ETag).
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, NamedTuple

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

log = logging.getLogger(__name__)

PREFIX = "blobreceipts"
CHUNK_SUFFIX = ".jsonl"


class Receipt(NamedTuple):
    blob: str
    etag: str               # without quotes, as the listing gives it
    poison: bool = False


def journal_prefix(host_id: str, function: str, container: str) -> str:
    return f"{PREFIX}/{host_id}/{function}/{container}/"


def _encode(receipts: Iterable[Receipt]) -> bytes:
    return "".join(json.dumps([r.blob, r.etag, int(r.poison)], ensure_ascii=False, separators=(",", ":")) + "\n"
                   for r in receipts).encode()


def _decode(data: bytes, chunk: str) -> list[Receipt]:
    receipts = []
    for number, line in enumerate(data.decode(errors="replace").splitlines(), 1):
        try:
            blob, etag, poison = json.loads(line)
            receipts.append(Receipt(str(blob), str(etag), bool(poison)))
        except (ValueError, TypeError):
            # A torn or foreign line loses at most that receipt: its blob runs once more.
            log.warning("receipt chunk %s: line %d is not a receipt; skipped", chunk, number)
    return receipts


def read_receipts(hosts_container: ContainerClient, host_id: str, function: str, container: str) -> list[Receipt]:
    """Every receipt stored for one function's trigger on one container (all chunks, all instances)."""
    return ReceiptJournal(hosts_container, host_id, function, container).load()


def _written_ns(name: str, prefix: str) -> int:
    stamp = name[len(prefix):].partition("-")[0]
    return int(stamp) if stamp.isdigit() else 0


def _chunk_names(hosts_container, prefix: str) -> list[str]:
    try:
        return [name for name in hosts_container.list_blob_names(name_starts_with=prefix)
                if name.endswith(CHUNK_SUFFIX)]
    except ResourceNotFoundError:
        return []


def _read_chunks(hosts_container, names: list[str]) -> list[list[Receipt]]:
    """The receipts of each chunk, in the order of ``names``."""
    def read(name: str) -> list[Receipt]:
        try:
            return _decode(hosts_container.download_blob(name).readall(), name)
        except ResourceNotFoundError:        # compacted away by another instance: its union is read too
            return []

    if len(names) < 2:
        return [read(name) for name in names]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(read, names))


class ReceiptJournal:
    """The stored receipts of one function's trigger on one container."""

    def __init__(self, hosts_container: ContainerClient, host_id: str, function: str, container: str, *,
                 batch: int = 256, interval: float = 1.0, compact_after: int = 32):
        self._hosts = hosts_container
        self.prefix = journal_prefix(host_id, function, container)
        self.batch, self.interval, self.compact_after = batch, interval, compact_after
        self._pending: list[Receipt] = []
        self._chunks = 0                          # chunks written since the last load or compaction
        self._next_flush = time.monotonic() + interval
        self._lock = threading.Lock()             # guards _pending, _chunks, _next_flush
        self._writing = threading.Lock()          # one flush or compaction at a time

    def load(self) -> list[Receipt]:
        names = _chunk_names(self._hosts, self.prefix)
        with self._lock:
            self._chunks = len(names)
        return [receipt for chunk in _read_chunks(self._hosts, names) for receipt in chunk]

    def add(self, receipt: Receipt) -> None:
        """Queue a receipt; flushes when a batch is full or the interval has passed. Never raises:
        a receipt that cannot be written yet stays queued for the next flush."""
        with self._lock:
            self._pending.append(receipt)
            due = len(self._pending) >= self.batch or time.monotonic() >= self._next_flush
        if due:
            self.flush(wait=False)

    def extend(self, receipts: Iterable[Receipt]) -> bool:
        """Queue many receipts and write them (with whatever waited) as one chunk; as ``flush``."""
        with self._lock:
            self._pending.extend(receipts)
        return self.flush()

    def flush(self, *, wait: bool = True) -> bool:
        """Write what is queued as one chunk; False when it could not be written (kept queued), or,
        with ``wait=False``, when another thread is writing (it or a later flush takes these too)."""
        if not self._writing.acquire(blocking=wait):
            return False
        try:
            with self._lock:
                receipts, self._pending = self._pending, []
                self._next_flush = time.monotonic() + self.interval
            if not receipts:
                return True
            try:
                self._write(receipts)
            except AzureError as exc:
                with self._lock:
                    self._pending[:0] = receipts
                log.warning("blob receipts under %s not written yet (%s); %d kept for the next flush",
                            self.prefix, type(exc).__name__, len(receipts))
                return False
            with self._lock:
                self._chunks += 1
            return True
        finally:
            self._writing.release()

    @property
    def compaction_due(self) -> bool:
        with self._lock:
            return self._chunks > self.compact_after

    def compact(self, listed: set[tuple[str, str]], listed_since_ns: int) -> set[tuple[str, str]] | None:
        """Replace the stored chunks by one holding their union and what is queued, less the
        receipts a complete listing started at ``listed_since_ns`` (``time.time_ns()``) no longer
        showed; chunks written after it started are kept whole (their blobs may be newer than the
        listing). Returns the (blob, ETag) pairs dropped, or None when storage failed (nothing is
        removed then)."""
        with self._writing:
            with self._lock:
                pending, self._pending = self._pending, []
            try:
                names = _chunk_names(self._hosts, self.prefix)
                fresh = {name for name in names if _written_ns(name, self.prefix) >= listed_since_ns}
                by_key: dict[tuple[str, str], Receipt] = {}
                dropped: set[tuple[str, str]] = set()
                for name, chunk in zip(names, _read_chunks(self._hosts, names)):
                    for receipt in chunk:
                        key = (receipt.blob, receipt.etag)
                        if name in fresh or key in listed:
                            by_key[key] = by_key.get(key) or receipt
                        else:
                            dropped.add(key)
                for receipt in pending:
                    by_key.setdefault((receipt.blob, receipt.etag), receipt)
                self._write(list(by_key.values()))
                for name in names:            # only once the union is stored: a crash here leaves duplicates
                    try:
                        self._hosts.delete_blob(name)
                    except ResourceNotFoundError:     # another instance's compaction took it (and its union)
                        pass
            except AzureError as exc:
                with self._lock:
                    self._pending[:0] = pending
                log.warning("blob receipts under %s not compacted (%s); tried again later",
                            self.prefix, type(exc).__name__)
                return None
            with self._lock:
                self._chunks = 1
            return dropped - by_key.keys()

    def _write(self, receipts: list[Receipt]) -> None:
        # Names sort by time; the uuid keeps instances (and one instance's quick flushes) apart.
        name = f"{self.prefix}{time.time_ns():020d}-{uuid.uuid4().hex[:12]}{CHUNK_SUFFIX}"
        self._hosts.upload_blob(name, _encode(receipts), overwrite=False)
