"""Reading back what a benchmark made: every job record, page by page (counted from storage, not
from what the product reports about itself)."""
from __future__ import annotations

from shared.ports import JobQuery


def all_jobs(svc) -> list:
    jobs, continuation = [], None
    while True:
        page = svc.jobs.query(JobQuery(page_size=500, continuation=continuation))
        jobs += page.jobs
        continuation = page.continuation
        if not continuation:
            return jobs
