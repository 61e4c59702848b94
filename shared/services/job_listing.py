"""Use case: list jobs as ``vmsnap job list`` and the dashboard's API and pages do (filters, the default
window, time bounds no job can have, newest start first); the time forms both accept are
shared/domain/when.py's."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Protocol

from shared.domain.jobs import Job, JobStatus
from shared.errors import ValidationError
from shared.ports import JobPage, JobQuery
from shared.services.needs import HasClock, HasJobs


class ListJobsNeeds(HasClock, HasJobs, Protocol):
    """What list_jobs(), job_page() read."""


OPERATIONS = ("Backup", "ConfigureBackup", "DeleteBackupData", "DisableBackup", "Restore", "RestoreTest",
              "Retention")
DEFAULT_WINDOW = timedelta(days=7)
# Jobs are keyed by time in the store; bounds outside these years cannot hold a job and are dropped.
EARLIEST = datetime(1971, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)
MAX_PAGE = 1000


@dataclass(frozen=True)
class JobFilter:
    """What ``job list`` filters on. Without a VM or a time bound, the last DEFAULT_WINDOW of slots."""

    vm: str | None = None
    status: JobStatus | None = None
    operation: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def query(self, now: datetime, *, page_size: int, continuation: str | None = None) -> JobQuery:
        """The store query: bounds outside the store's years become an empty window or no bound."""
        if self.operation is not None and self.operation not in OPERATIONS:
            raise ValidationError(f"operation {self.operation!r} is not one of {', '.join(OPERATIONS)}",
                                  field="operation")
        since, until = _within_store_range(self.since), _within_store_range(self.until)
        if self.until is not None and until is None:
            until = None if self.until > EARLIEST else EARLIEST     # before any job: an empty window
        if self.since is not None and since is None and self.since > EARLIEST:
            since = LATEST                                          # after any job: an empty window
        if since is None and until is None and self.since is None and self.until is None and not self.vm:
            since = now - DEFAULT_WINDOW
        return JobQuery(vm_name=self.vm, status=self.status, operation=self.operation, since=since, until=until,
                        page_size=min(page_size, MAX_PAGE), continuation=continuation)


def list_jobs(svc: ListJobsNeeds, jobs: JobFilter, top: int) -> list[Job]:
    """At most ``top`` jobs, newest start time first (``vmsnap job list``)."""
    if top < 1:
        raise ValidationError("--top must be at least 1", field="top")
    query = jobs.query(svc.clock.now(), page_size=top)
    found: list[Job] = []
    while len(found) < top:
        page = svc.jobs.query(query)
        found.extend(page.jobs)
        if not page.continuation:
            break
        query = replace(query, continuation=page.continuation)
    return by_start_time(found[:top])


def job_page(svc: ListJobsNeeds, jobs: JobFilter, page_size: int, continuation: str | None = None) -> JobPage:
    """One page of jobs and the continuation of the next (the store's opaque token), newest start first
    within the page; ValidationError for a continuation the store did not issue."""
    page = svc.jobs.query(jobs.query(svc.clock.now(), page_size=page_size, continuation=continuation))
    return JobPage(jobs=by_start_time(page.jobs), continuation=page.continuation)


def by_start_time(jobs: list[Job]) -> list[Job]:
    # Newest first by the start time an operator sees (the store pages by slot, which an operator
    # cannot see: a retried or late-dispatched job starts well after its slot).
    return sorted(jobs, key=lambda job: job.start_time, reverse=True)


def _within_store_range(when: datetime | None) -> datetime | None:
    return when if when is not None and EARLIEST <= when <= LATEST else None
