"""The stale-job sweep: a job whose extension never reported a result fails with advice, not silence.

The real extension has runs that never reach a terminal state (a crash, the 556 bug, a VM that
never got the command); without a sweep such a job would say InProgress forever.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from shared.domain.jobs import JobStatus, mark_timed_out, timeout_deadline
from shared.errors import NotFoundError
from shared.ports import JobQuery

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

# Jobs are looked up by slot time; nothing InProgress can be older than this and still matter.
LOOKBACK = timedelta(days=3)


@dataclass
class SweepResult:
    examined: int = 0
    timed_out: list[str] = field(default_factory=list)


def sweep_stale_jobs(svc: Services, *, page_size: int = 200) -> SweepResult:
    """Fail every InProgress job past its deadline (the extension's 140-minute window plus a margin)."""
    now = svc.clock.now()
    result = SweepResult()
    query = JobQuery(status=JobStatus.IN_PROGRESS, since=now - LOOKBACK - svc.settings.catch_up,
                     page_size=page_size)
    while True:
        page = svc.jobs.query(query)
        for job in page.jobs:
            result.examined += 1
            if timeout_deadline(job) > now:
                continue
            try:
                updated = svc.jobs.update(job.job_id, lambda current: mark_timed_out(current, now))
            except NotFoundError:
                continue
            if updated.status is JobStatus.FAILED:
                log.warning("job %s (VM %s, task %s) timed out: no result from the extension",
                            job.job_id, job.vm_name, job.task_id)
                result.timed_out.append(job.job_id)
        if not page.continuation:
            return result
        query = JobQuery(status=query.status, since=query.since, page_size=page_size,
                         continuation=page.continuation)
