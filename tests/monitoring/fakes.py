"""In-memory alerts and job feed with the Table adapters' semantics (tests/contracts/test_alert_store.py
checks both): optimistic updates that re-read and change again after a lost race, resolved alerts kept
when a new one replaces them, a notification outbox, marks that never go back."""
from __future__ import annotations

import itertools
import threading
from dataclasses import replace
from datetime import datetime
from typing import Callable, Sequence

from shared.clock import utc
from shared.domain.alerts import Alert, AlertKind, AlertStatus, parse_alert_name
from shared.domain.rollup import MonthRollup, RollupState, merge_rows, month_of
from shared.ports import FeedEntry


class InMemoryAlertStore:
    def __init__(self) -> None:
        self.current: dict[tuple[str, AlertKind], Alert] = {}
        self.replaced: dict[str, Alert] = {}
        self.watches: dict[str, tuple[str, datetime]] = {}
        self._marks: dict[str, datetime] = {}
        self._versions = itertools.count(1)
        self._lock = threading.Lock()

    def get(self, item: str, kind: AlertKind) -> Alert | None:
        return self.current.get((item.lower(), kind))

    def update(self, item: str, kind: AlertKind, change: Callable[[Alert | None], Alert | None]) -> Alert | None:
        while True:
            current = self.get(item, kind)
            changed = change(current)
            if changed is None:
                return current
            with self._lock:
                stored = self.get(item, kind)
                if (stored.version if stored else None) != (current.version if current else None):
                    continue                    # lost the race: read and decide again
                if current is not None and changed.name != current.name:
                    self.replaced[current.name] = current
                saved = replace(changed, version=str(next(self._versions)))
                self.current[(item.lower(), kind)] = saved
                return saved

    def find(self, name: str) -> Alert | None:
        parsed = parse_alert_name(name)
        if parsed is None:
            return None
        current = self.get(parsed[1], parsed[0])
        return current if current is not None and current.name == name else self.replaced.get(name)

    def list(self, status: AlertStatus | None = None, item: str | None = None) -> list[Alert]:
        alerts = list(self.current.values()) + ([] if status is AlertStatus.ACTIVE else list(self.replaced.values()))
        alerts = [a for a in alerts if (status is None or a.status is status)
                  and (item is None or a.item.lower() == item.lower())]
        return sorted(alerts, key=lambda a: (a.fired_at, a.name), reverse=True)

    def owed(self) -> list[Alert]:
        return [a for a in self.current.values() if a.owed is not None]

    def parked(self) -> list[Alert]:
        return [a for a in self.current.values() if a.parked]

    def marks(self) -> dict[str, datetime]:
        return dict(self._marks)

    def advance_marks(self, marks: dict[str, datetime]) -> None:
        with self._lock:
            for key, when in marks.items():
                self._marks[key] = max(utc(when), self._marks.get(key, utc(when)))

    def watch(self, item: str, breach_at: datetime) -> None:
        self.watches[item.lower()] = (item, utc(breach_at))

    def due_watches(self, now: datetime) -> list[tuple[str, datetime]]:
        return sorted((w for w in self.watches.values() if w[1] <= utc(now)), key=lambda w: w[1])

    def unwatch(self, item: str) -> None:
        self.watches.pop(item.lower(), None)


class InMemoryJobFeed:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], FeedEntry] = {}
        self._lock = threading.Lock()

    def add(self, entry: FeedEntry) -> None:
        with self._lock:
            self.entries[(entry.job_id, entry.status)] = replace(entry, at=utc(entry.at))

    def between(self, after: datetime, until: datetime) -> list[FeedEntry]:
        with self._lock:
            found = [e for e in self.entries.values() if utc(after) < e.at <= utc(until)]
        return sorted(found, key=lambda e: (e.at, e.job_id))

    def prune(self, before: datetime, *, limit: int) -> int:
        with self._lock:       # whole minutes, as the Table feed's partitions
            gone = sorted((k for k, e in self.entries.items() if e.at.replace(second=0, microsecond=0) < utc(before)),
                          key=lambda k: self.entries[k].at)[:limit]
            for key in gone:
                del self.entries[key]
        return len(gone)


class InMemoryRollupStore:
    """The roll-up in a dict: rows merged under a version check (a lost race merges again), whole months pruned."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, datetime], MonthRollup] = {}
        self._state = RollupState()
        self._versions = itertools.count(1)
        self._lock = threading.Lock()

    def merge_many(self, rows: Sequence[MonthRollup]) -> int:
        changed = 0
        for row in merge_rows(rows).values():
            while True:
                current = self.rows.get(row.key)
                if current is not None and current.holds(row):
                    break
                merged = row if current is None else current.merged(row)
                with self._lock:
                    stored = self.rows.get(row.key)
                    if (stored.version if stored else None) != (current.version if current else None):
                        continue            # lost the race: read and merge again
                    self.rows[row.key] = replace(merged, version=str(next(self._versions)))
                    changed += 1
                    break
        return changed

    def months(self, since: datetime, until: datetime, vm_name: str | None = None) -> list[MonthRollup]:
        first, last = month_of(since), month_of(until)
        return [r for (vm, month), r in list(self.rows.items())
                if first <= month <= last and (vm_name is None or vm == vm_name.lower())]

    def state(self) -> RollupState:
        return self._state

    def update_state(self, change: Callable[[RollupState], RollupState | None]) -> RollupState:
        with self._lock:
            changed = change(self._state)
            if changed is not None:
                self._state = replace(changed, version=str(next(self._versions)))
            return self._state

    def prune(self, before: datetime, *, limit: int) -> int:
        with self._lock:
            gone = sorted(k for k in self.rows if k[1] < month_of(before))[:limit]
            for key in gone:
                del self.rows[key]
        return len(gone)


class RecordingNotifier:
    """Keeps each document sent; while ``down``, refuses like a receiver that is not there; while ``answer``
    holds an HTTP status, the receiver answers that instead of taking it (tests/contracts/test_notifier.py
    holds it to the webhook adapter's contract: which answers are transient, which permanent)."""

    def __init__(self, down: bool = False, delay: float = 0.0, url: str = "http://127.0.0.1:9/alerts") -> None:
        self.sent: list[dict] = []
        self.down = down
        self.answer: int | None = None
        self.delay = delay          # seconds a POST takes: senders racing overlap
        self.refused = 0
        self.endpoint = url.split("?", 1)[0]        # like the adapter: never the query, which may hold a secret
        self._lock = threading.Lock()

    def send(self, document: dict) -> None:
        import json
        import time

        from shared.errors import PermanentError, TransientError

        time.sleep(self.delay)
        with self._lock:
            if self.down:
                self.refused += 1
                raise TransientError(f"the webhook {self.endpoint} could not be reached")
            if self.answer is not None:
                self.refused += 1
                said = f"the webhook {self.endpoint} answered HTTP {self.answer}"
                if self.answer in (408, 429) or self.answer >= 500:
                    raise TransientError(said)
                raise PermanentError(said)
            self.sent.append(json.loads(json.dumps(document)))      # what went over the wire, not the caller's dict

    def conditions(self) -> list[tuple[str, str]]:
        """(monitorCondition, alertId) of each document, in order."""
        return [(d["data"]["essentials"]["monitorCondition"], d["data"]["essentials"]["originAlertId"])
                for d in self.sent]
