"""Stopping a job, as ``az backup job stop`` does: possible until the command reaches the VM.

Once the extension has its command it snapshots to the end and reports; nothing the service
does can take that back, so a dispatched job is refused with when it will end instead.
"""
from __future__ import annotations

import logging
from typing import Protocol

from shared.clock import utc
from shared.domain.job_transitions import mark_cancelled, timeout_deadline
from shared.domain.jobs import Job, JobPhase
from shared.errors import ConflictError, NotFoundError
from shared.services.needs import HasClock, HasJobs

log = logging.getLogger(__name__)


class StopJobNeeds(HasClock, HasJobs, Protocol):
    """What stop_job() reads."""


STOPPED_BY_OPERATOR = "stopped by the operator before its command reached the VM"


def stop_job(svc: StopJobNeeds, job_id: str) -> Job:
    """Cancel ``job_id`` if its command has not been handed to the VM; ConflictError otherwise."""
    now = svc.clock.now()
    if svc.jobs.get(job_id) is None:
        raise NotFoundError(f"job {job_id} not found; `vmsnap job list` shows the jobs")
    cancelled = False

    def cancel(current: Job) -> Job | None:
        nonlocal cancelled
        changed = mark_cancelled(current, STOPPED_BY_OPERATOR, now)
        cancelled = changed is not None       # the last try is the one written
        return changed

    job = svc.jobs.update(job_id, cancel)
    if cancelled:
        log.info("job %s of %s stopped by the operator (slot %s)", job.job_id, job.vm_name, job.slot.isoformat())
        return job
    if job.is_terminal:
        raise ConflictError(f"job {job.job_id} is already {job.status.value}; there is nothing to stop")
    when = "reported it is running" if job.phase is JobPhase.RUNNING else "has it"
    raise ConflictError(
        f"job {job.job_id} cannot be stopped: the extension on VM {job.vm_name} {when} (task "
        f"{job.task_id}) and finishes it whatever the service does; the job ends with its result, or fails "
        f"at {utc(timeout_deadline(job)).isoformat(timespec='seconds')} if none comes "
        f"(`vmsnap job wait --name {job.job_id}`)")
