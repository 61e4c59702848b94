"""A VM's backup claim: which job may back the VM up now, and the on-demand jobs it accepted this UTC
day. A backup takes it where its task is accepted (the worker, or backup-now), so two backups of one
VM never run at once and a burst of on-demand requests cannot pass the daily limits. Pure data and
rules; the BackupClaims port keeps one ETag-guarded row per VM."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from shared.clock import utc
from shared.domain.jobs import Job
from shared.domain.task import Trigger

# backup-now claims the VM before it writes its job, so a holder whose job is not found yet still
# holds the VM for this long (the write follows within milliseconds; the rest allows for clocks of
# the CLI and the worker that differ). A request that died in between holds the VM no longer.
CLAIM_GRACE = timedelta(minutes=5)


@dataclass(frozen=True)
class BackupClaim:
    vm_name: str
    holder: str | None = None           # the job that last took the VM; it holds it while it still blocks
    since: datetime | None = None       # when it took it
    day: date | None = None             # the UTC day of ``on_demand``
    on_demand: tuple[str, ...] = ()     # on-demand jobs accepted that day, oldest first
    version: str | None = None          # the store's ETag; None: never written

    def accepted_on(self, day: date) -> tuple[str, ...]:
        """The on-demand jobs accepted on ``day`` (a list of another day is stale)."""
        return self.on_demand if self.day == day else ()

    def taken_by(self, job: Job, now: datetime) -> "BackupClaim":
        """The claim once ``job`` holds the VM; an on-demand job is accepted into today's list."""
        day = utc(now).date()
        accepted = self.accepted_on(day)
        if job.trigger is Trigger.ON_DEMAND and job.job_id not in accepted:
            accepted += (job.job_id,)
        return replace(self, holder=job.job_id, since=utc(now), day=day, on_demand=accepted)

    def given_back(self, job_id: str) -> "BackupClaim | None":
        """The claim as if ``job_id`` had never been accepted (its task never reached the queue);
        None when it holds nothing of it."""
        if self.holder != job_id and job_id not in self.on_demand:
            return None
        holder, since = (None, None) if self.holder == job_id else (self.holder, self.since)
        return replace(self, holder=holder, since=since, on_demand=tuple(j for j in self.on_demand if j != job_id))

    def held_by_missing_job(self, now: datetime) -> bool:
        """Whether a holder whose job record does not exist (yet) still holds the VM."""
        return self.since is not None and utc(now) < self.since + CLAIM_GRACE
