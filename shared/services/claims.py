"""Use case: a backup takes its VM's claim where its task is accepted (the worker for every trigger,
backup-now at the request), so one backup of a VM runs at a time and the on-demand limits hold under
bursts and redelivery. The rules are decided on the claim as read, again after any lost race."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.clock import utc
from shared.domain import remediation
from shared.domain.claims import BackupClaim
from shared.domain.jobs import Job
from shared.domain.planning import blocks_new_backup
from shared.domain.protection import ON_DEMAND_SUCCESSES_PER_DAY, on_demand_limit_reached
from shared.domain.task import Trigger
from shared.services.needs import HasClaims, HasJobs

log = logging.getLogger(__name__)


class TakeClaimNeeds(HasClaims, HasJobs, Protocol):
    """What take_claim() reads."""


@dataclass(frozen=True)
class ClaimRefused:
    """Why a job may not back its VM up now: another backup holds it, or the on-demand limit is reached."""

    error_code: str     # remediation.OPERATION_IN_PROGRESS or remediation.ON_DEMAND_LIMIT
    reason: str         # what stands in the way
    advice: str = ""    # what the person who asked can do

    @property
    def detail(self) -> str:
        return f"{self.reason}; {self.advice}" if self.advice else self.reason

    def __str__(self) -> str:
        return f"{self.error_code}: {self.detail}"


def take_claim(svc: TakeClaimNeeds, job: Job, now: datetime) -> ClaimRefused | None:
    """Make ``job`` the backup of its VM now, or say why not (None: it holds the VM).

    Idempotent for the holder (a redelivery, a retry, backup-now's own task). Refused while another
    holder's job still blocks (InProgress before its deadline), so nothing needs releasing: a finished or
    dead holder simply stops blocking. An on-demand job not yet accepted today is refused once the day's
    accepted ones reach the limits (shared/domain/protection.py). TransientError if storage fails.
    """
    refused: ClaimRefused | None = None

    def decide(current: BackupClaim) -> BackupClaim | None:
        nonlocal refused
        refused = None                  # the last read decides
        if current.holder == job.job_id:
            return None
        if current.holder is not None:
            holder = svc.jobs.get(current.holder)
            if current.held_by_missing_job(now) if holder is None else blocks_new_backup(holder, now):
                refused = _in_progress(current.holder, holder, job.vm_name)
                return None
        accepted = current.accepted_on(utc(now).date())
        if job.trigger is Trigger.ON_DEMAND and job.job_id not in accepted:
            reason = _over_limit(svc, job.vm_name, accepted)
            if reason is not None:
                refused = ClaimRefused(remediation.ON_DEMAND_LIMIT, reason)
                return None
        return current.taken_by(job, now)

    svc.claims.update(job.vm_name, decide)
    if refused is None:
        log.info("job %s holds VM %s (%s)", job.job_id, job.vm_name, job.trigger.value)
    else:
        log.info("job %s may not back up VM %s now: %s", job.job_id, job.vm_name, refused)
    return refused


def give_back_claim(svc: HasClaims, job: Job) -> None:
    """Undo ``take_claim`` for a job whose task never reached the queue: it never ran, so it neither
    holds the VM nor counts against the day's on-demand limits."""
    svc.claims.update(job.vm_name, lambda current: current.given_back(job.job_id))
    log.info("job %s gave its claim on VM %s back", job.job_id, job.vm_name)


def _in_progress(holder_id: str, holder: Job | None, vm_name: str) -> ClaimRefused:
    trigger = f" ({holder.trigger.value})" if holder is not None else ""
    return ClaimRefused(remediation.OPERATION_IN_PROGRESS,
                        f"backup job {holder_id} of {vm_name!r}{trigger} is still in progress",
                        f"wait for it (`vmsnap job wait --name {holder_id}`) and try again")


def _over_limit(svc: HasJobs, vm_name: str, accepted: tuple[str, ...]) -> str | None:
    """Why one more on-demand backup today is over the limits, from the jobs accepted today; fewer
    than the successes allowed cannot reach either limit, so they are not even read."""
    if len(accepted) < ON_DEMAND_SUCCESSES_PER_DAY:
        return None
    return on_demand_limit_reached(vm_name, svc.jobs.get_many(accepted).values())
