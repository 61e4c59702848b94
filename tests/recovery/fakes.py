"""In-memory recovery points, blob snapshots and status blobs with the adapters' semantics (ETag
versions, 404 = already gone, base blobs never deletable), thread-safe for concurrent-run tests."""
from __future__ import annotations

import itertools
import threading
from collections import Counter
from dataclasses import replace
from datetime import datetime
from typing import Iterable, Sequence

from shared.domain.recovery import RecoveryPoint
from shared.errors import ValidationError
from shared.ports import BlobSnapshotInfo, StatusBlobInfo, StatusBlobPage

_versions = itertools.count(1)


class InMemoryRecoveryPointStore:
    def __init__(self) -> None:
        self.points: dict[tuple[str, str], RecoveryPoint] = {}
        self._lock = threading.Lock()

    def add_if_absent(self, point: RecoveryPoint) -> bool:
        with self._lock:
            key = (point.vm_name.lower(), point.name)
            if key in self.points:
                return False
            self.points[key] = replace(point, version=str(next(_versions)))
            return True

    def get(self, vm_name: str, name: str) -> RecoveryPoint | None:
        return self.points.get((vm_name.lower(), name))

    def list_for_vm(self, vm_name: str, *, since: datetime | None = None,
                    until: datetime | None = None) -> list[RecoveryPoint]:
        found = [p for (vm, _), p in list(self.points.items()) if vm == vm_name.lower()
                 and (since is None or p.created_at >= since) and (until is None or p.created_at < until)]
        return sorted(found, key=lambda p: (p.created_at, p.name), reverse=True)

    def newest_available(self, vm_name: str, *, until: datetime) -> RecoveryPoint | None:
        return next((p for p in self.list_for_vm(vm_name) if p.is_available and p.created_at <= until), None)

    def recent_available(self, since: datetime, until: datetime) -> dict[str, RecoveryPoint]:
        found: dict[str, RecoveryPoint] = {}
        for point in sorted(list(self.points.values()), key=lambda p: (p.created_at, p.name), reverse=True):
            if point.is_available and since <= point.created_at <= until:
                found.setdefault(point.vm_name.lower(), point)
        return found

    def scan(self, vm_name: str | None = None) -> Iterable[list[RecoveryPoint]]:
        vms = sorted({vm for vm, _ in list(self.points)}) if vm_name is None else [vm_name.lower()]
        for vm in vms:
            points = self.list_for_vm(vm)
            if points:
                yield points

    def save_many(self, points: Sequence[RecoveryPoint]) -> tuple[list[RecoveryPoint], list[str]]:
        saved, lost = [], []
        with self._lock:
            for point in points:
                key = (point.vm_name.lower(), point.name)
                stored = self.points.get(key)
                if stored is None or stored.version != point.version:
                    lost.append(point.name)
                    continue
                self.points[key] = replace(point, version=str(next(_versions)))
                saved.append(self.points[key])
        return saved, lost


class FakeSnapshots:
    """Disk blobs and their snapshots; records every delete so tests can say 'deleted once'."""

    def __init__(self) -> None:
        self.blobs: dict[str, dict[str, dict[str, str]]] = {}     # base URL -> snapshot time -> metadata
        self.delete_calls: Counter[str] = Counter()
        self.deleted: Counter[str] = Counter()
        self.base_blob_deletes = 0
        self.missing: set[str] = set()      # base URLs of disk blobs that do not exist
        self._lock = threading.Lock()
        self._seq = itertools.count(1)

    def take(self, base: str, metadata: dict[str, str]) -> str:
        with self._lock:
            stamp = f"2000-01-01T00:00:00.{next(self._seq):07d}Z"
            self.blobs.setdefault(base, {})[stamp] = dict(metadata)
            return f"{base}?snapshot={stamp}"

    def list_snapshots(self, blob_url: str) -> list[BlobSnapshotInfo]:
        with self._lock:
            snaps = dict(self.blobs.get(blob_url, {}))
        return [BlobSnapshotInfo(f"{blob_url}?snapshot={t}", t, m) for t, m in sorted(snaps.items())]

    def count_snapshots(self, blob_url: str) -> int | None:
        with self._lock:
            # A disk the test never took a snapshot of still exists, unless the test removed its blob.
            if blob_url in self.missing:
                return None
            return len(self.blobs.get(blob_url, {}))

    def snapshot_exists(self, snapshot_url: str) -> bool:
        base, _, query = snapshot_url.partition("?")
        if not query.startswith("snapshot="):
            raise ValidationError("names no snapshot")
        with self._lock:
            return query[len("snapshot="):] in self.blobs.get(base, {})

    def delete_snapshot(self, snapshot_url: str) -> bool:
        base, _, query = snapshot_url.partition("?")
        if not query.startswith("snapshot="):
            with self._lock:
                self.base_blob_deletes += 1
            raise ValidationError("names no snapshot")
        stamp = query[len("snapshot="):]
        with self._lock:
            self.delete_calls[snapshot_url] += 1
            if stamp in self.blobs.get(base, {}):
                del self.blobs[base][stamp]
                self.deleted[snapshot_url] += 1
                return True
            return False

    def all_snapshots(self) -> set[str]:
        return {f"{base}?snapshot={t}" for base, snaps in self.blobs.items() for t in snaps}


class FakeStatusArchive:
    """Lists ``page_size`` blobs a page, in name order; a marker is the last name of its page."""

    def __init__(self, page_size: int = 5000) -> None:
        self.blobs: dict[str, datetime] = {}
        self.page_size = page_size

    def list_pages(self, marker: str | None = None) -> Iterable[StatusBlobPage]:
        listed = [StatusBlobInfo(n, t) for n, t in sorted(self.blobs.items()) if marker is None or n > marker]
        for start in range(0, len(listed), self.page_size):
            page = listed[start:start + self.page_size]
            more = start + self.page_size < len(listed)
            yield StatusBlobPage(page, page[-1].name if more else None)

    def delete_blob(self, name: str) -> bool:
        return self.blobs.pop(name, None) is not None
