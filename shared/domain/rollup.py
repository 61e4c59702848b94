"""The compliance report's roll-up: per protected item and calendar month (UTC, of the job's slot), the slots
of its successful backups and its newest failed backup. Final backup jobs are folded in, in any order and any
number of times: the successes are a set and the failure a maximum, so a job folded twice, or by two writers
at once, leaves the same row (docs/monitoring.md, "The roll-up")."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Iterable

from shared.clock import utc
from shared.domain.compliance import LastError
from shared.domain.jobs import Job, JobError, JobStatus
from shared.domain.recovery import SUCCESSFUL

_MS = timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def whole_ms(when: datetime) -> datetime:
    """``when`` down to the millisecond, what a job's keys hold: slots are whole minutes, so no comparison
    with a slot changes."""
    return _EPOCH + (utc(when) - _EPOCH) // _MS * _MS


def month_of(when: datetime) -> datetime:
    """The first instant (UTC) of the calendar month ``when`` falls in."""
    at = utc(when)
    return datetime(at.year, at.month, 1, tzinfo=timezone.utc)


def next_month(month: datetime) -> datetime:
    return datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=timezone.utc)


def months_between(since: datetime, until: datetime) -> list[datetime]:
    """The months ``[since, until]`` overlaps, oldest first."""
    months, month, last = [], month_of(since), month_of(until)
    while month <= last:
        months.append(month)
        month = next_month(month)
    return months


def newer_failure(a: LastError | None, b: LastError | None) -> LastError | None:
    """The newer of two failed backups (by slot, then job id: the same answer whatever the order)."""
    if a is None or b is None:
        return a or b
    return max(a, b, key=lambda f: (utc(f.slot), f.job_id))


@dataclass(frozen=True)
class MonthRollup:
    """One item's month: the slots of its successful backups and its newest failed backup."""

    vm_name: str
    month: datetime
    successes: frozenset[datetime] = frozenset()
    last_failure: LastError | None = None
    version: str | None = field(default=None, compare=False)   # the store's ETag

    @property
    def key(self) -> tuple[str, datetime]:
        return self.vm_name.lower(), self.month

    def merged(self, other: MonthRollup) -> MonthRollup:
        """This row with ``other`` folded in (same item and month): a union, so order and repeats do not matter."""
        return replace(self, successes=self.successes | other.successes,
                       last_failure=newer_failure(self.last_failure, other.last_failure))

    def holds(self, other: MonthRollup) -> bool:
        """Whether folding ``other`` in would change nothing."""
        return other.successes <= self.successes and \
            newer_failure(self.last_failure, other.last_failure) == self.last_failure


def job_rollup(vm_name: str, job_id: str, slot: datetime, status: JobStatus,
               error: JobError | None) -> MonthRollup | None:
    """What one final backup job adds to its month: its slot if it succeeded, itself as a failure if it
    failed; None for anything else (a cancelled job, a job not final yet)."""
    slot = whole_ms(slot)
    if status in SUCCESSFUL:
        return MonthRollup(vm_name=vm_name, month=month_of(slot), successes=frozenset((slot,)))
    if status is JobStatus.FAILED:
        return MonthRollup(vm_name=vm_name, month=month_of(slot), last_failure=LastError(job_id, slot, error))
    return None


def of_job(job: Job) -> MonthRollup | None:
    """What a final backup job adds to its month (anything else: None)."""
    if job.operation != "Backup" or not job.is_terminal:
        return None
    return job_rollup(job.vm_name, job.job_id, job.slot, job.status, job.errors[0] if job.errors else None)


def merge_rows(rows: Iterable[MonthRollup]) -> dict[tuple[str, datetime], MonthRollup]:
    """Rows of the same item and month merged into one, by key."""
    merged: dict[tuple[str, datetime], MonthRollup] = {}
    for row in rows:
        before = merged.get(row.key)
        merged[row.key] = row if before is None else before.merged(row)
    return merged


@dataclass(frozen=True)
class ItemHistory:
    """An item's backups in a report's window: the slots of its successes, oldest first, and its newest failure."""

    successes: list[datetime]
    last_failure: LastError | None


def histories(rows: Iterable[MonthRollup], since: datetime) -> dict[str, ItemHistory]:
    """Each item's history from ``since`` on (lower-cased VM name), from rows of the months it overlaps:
    the first month's slots before ``since`` are left out, so the window's edge is exact."""
    since = utc(since)
    found: dict[str, tuple[set[datetime], LastError | None]] = {}
    for row in rows:
        slots, failure = found.get(row.vm_name.lower(), (set(), None))
        slots.update(s for s in row.successes if s >= since)
        if row.last_failure is not None and row.last_failure.slot >= since:
            failure = newer_failure(failure, row.last_failure)
        found[row.vm_name.lower()] = (slots, failure)
    return {vm: ItemHistory(sorted(slots), failure) for vm, (slots, failure) in found.items()}


@dataclass(frozen=True)
class RollupState:
    """What the roll-up holds: every backup job whose slot is ``covered_from`` or later is in it, or its feed
    entry is later than ``folded_through`` (where the fold has read the job feed to). None: not yet."""

    covered_from: datetime | None = None
    folded_through: datetime | None = None
    version: str | None = field(default=None, compare=False)


def advanced(state: RollupState, *, covered_from: datetime | None = None,
             folded_through: datetime | None = None) -> RollupState | None:
    """The state with its coverage reaching back to ``covered_from`` and its fold forward to
    ``folded_through`` (neither ever goes the other way); None when nothing changes."""
    after = state
    if covered_from is not None and (state.covered_from is None or utc(covered_from) < state.covered_from):
        after = replace(after, covered_from=utc(covered_from))
    if folded_through is not None and (state.folded_through is None or utc(folded_through) > state.folded_through):
        after = replace(after, folded_through=utc(folded_through))
    return None if after == state else after
