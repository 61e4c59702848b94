"""The job store every use case writes through (the composition root wraps the Table store in it): a job
that turns final, or whose attempt fails, is put in the job feed before it is written, whatever path got
it there (ingestion, dispatch, the sweep, the restore-point timer, retention, restore). The alert
evaluator reads that feed; the job's outcome is counted once its write is in (telemetry)."""
from __future__ import annotations

from datetime import timedelta
from typing import Callable, Iterable, Protocol, Sequence

from shared.clock import Clock
from shared.domain.jobs import AttemptOutcome, Job
from shared.ports import FeedEntry, JobFeed, JobOutcome, JobPage, JobQuery, JobStore


# A feed entry is written before its job: a reader of the feed reads this much before where it read to, so an
# entry whose job write was still under way (or whose writer's clock ran behind) is read again; a job read
# back this long after its entry is written.
FEED_MARGIN = timedelta(minutes=2)


class OutcomeRecorder(Protocol):
    def job_finished(self, job: Job) -> None:
        """Count a job that just turned final (written once: a lost write race counts nothing)."""


def noteworthy(before: Job | None, after: Job) -> bool:
    """Whether writing ``after`` over ``before`` ends the job, or ends one of its attempts in failure."""
    if after.is_terminal:
        return before is None or not before.is_terminal
    if not after.attempts or after.attempts[-1].outcome is not AttemptOutcome.FAILED:
        return False
    return before is None or after.attempts[-1] not in before.attempts


class ObservedJobStore:
    """A JobStore that notes each job turning final (or failing an attempt) in the job feed."""

    def __init__(self, inner: JobStore, feed: JobFeed, clock: Clock, recorder: OutcomeRecorder | None = None):
        self.inner = inner
        self._feed = feed
        self._clock = clock
        self._recorder = recorder

    def create_if_absent(self, job: Job) -> bool:
        return self.create_many_if_absent([job])[0]

    def create_many_if_absent(self, jobs: Sequence[Job]) -> list[bool]:
        # A tick's jobs start InProgress: the feed costs nothing on that path.
        final = [job for job in jobs if noteworthy(None, job)]
        for job in final:
            self._note(job)
        created = self.inner.create_many_if_absent(jobs)
        if self._recorder is not None:
            for job, new in zip(jobs, created):
                if new and job.is_terminal:
                    self._recorder.job_finished(job)
        return created

    def get(self, job_id: str) -> Job | None:
        return self.inner.get(job_id)

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        return self.inner.get_many(job_ids)

    def query(self, query: JobQuery) -> JobPage:
        return self.inner.query(query)

    def outcomes(self, query: JobQuery) -> Iterable[JobOutcome]:
        return self.inner.outcomes(query)

    def update(self, job_id: str, change: Callable[[Job], Job | None]) -> Job:
        written: list[Job] = []

        def observed(current: Job) -> Job | None:
            changed = change(current)
            written.clear()         # only the last try is the one written
            if changed is not None and noteworthy(current, changed):
                self._note(changed)     # first: a crash before the job's write leaves a hint, never a gap
                written.append(changed)
            return changed

        job = self.inner.update(job_id, observed)
        if written and written[-1].is_terminal and self._recorder is not None:
            self._recorder.job_finished(written[-1])
        return job

    def _note(self, job: Job) -> None:
        self._feed.add(FeedEntry(job_id=job.job_id, vm_name=job.vm_name, status=job.status.value,
                                 at=self._clock.now()))
