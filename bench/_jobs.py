"""Reading back what a benchmark made: every job record, page by page (counted from storage, not
from what the product reports about itself)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from shared.domain.jobs import Job
from shared.ports import JobQuery

if TYPE_CHECKING:
    from shared.bootstrap import Services


def all_jobs(svc: Services) -> list[Job]:
    jobs, continuation = [], None
    while True:
        page = svc.jobs.query(JobQuery(page_size=500, continuation=continuation))
        jobs += page.jobs
        continuation = page.continuation
        if not continuation:
            return jobs


def known(job: Job | None) -> Job:
    """A job the bench made or dispatched itself, hence there (a None here is the bench's own bug)."""
    assert job is not None
    return job


def status_blob_of(job: Job) -> str:
    """The status blob of a job the bench dispatched."""
    assert job.status_blob is not None, job.job_id
    return job.status_blob
