"""Use case: turn one snapshot-task message into an extension command on its VM.

One backup of a VM at a time: the job first takes its VM's claim (shared/services/claims.py), which
also holds the on-demand limits. One snapshot per attempt, one attempt at a time: a delivery claims
the job's current attempt (Queued -> Dispatched, ETag-guarded) before anything reaches the VM, so a
redelivered or duplicated task finds it claimed and dispatches nothing. Only the retry policy starts
another attempt: a command that could not be handed over is retried by a scheduled task (new taskId)
after a pause, up to MAX_ATTEMPTS, then the job fails with the last error. Nothing waits for the
snapshot itself.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Callable, Protocol

from shared.domain import remediation
from shared.domain.bloburl import base_of
from shared.domain.command import ExtensionCommand, build_snapshot_command, to_extension_resource
from shared.domain.inventory import BackupMethod, Vm
from shared.domain.job_transitions import (MAX_ATTEMPTS, dispatch_interrupted, mark_cancelled, mark_dispatched,
                                           mark_failed, mark_not_dispatched, next_attempt_at, pending_retry)
from shared.domain.jobs import DiskResult, Job, JobError, JobPhase, job_id_for
from shared.domain.recovery import MAX_RETENTION
from shared.domain.task import SnapshotTask, Trigger, check_new_task
from shared.errors import ConflictError, NotFoundError, PermanentError, TransientError, ValidationError
from shared.ports import DispatchRefused
from shared.redaction import redact
from shared.services.needs import (HasAlerts, HasClaims, HasClock, HasDispatcher, HasInventory, HasJobs, HasPolicies,
                                   HasProtectedItems, HasRestorePoints, HasSas, HasSettings, HasSnapshots,
                                   HasStatusBlobs, HasTaskQueue, HasTelemetry)
from shared.services.outages import ride_out
from shared.services.claims import ClaimRefused, take_claim
from shared.services.recovery import disk_guard_error
from shared.services.restore_point_backup import backup_by_restore_point, preview_restore_point, vm_reference

log = logging.getLogger(__name__)


class ClaimNeeds(HasJobs, HasStatusBlobs, Protocol):
    """What _claim() reads."""


class PrepareNeeds(HasSas, HasStatusBlobs, Protocol):
    """What _prepare_attempt() reads."""


class NotDispatchedNeeds(HasJobs, HasTaskQueue, Protocol):
    """What _not_dispatched() reads."""


class LoadJobNeeds(HasJobs, HasSettings, Protocol):
    """What _load_or_create_job() reads."""


class RejectNeeds(HasClock, HasStatusBlobs, Protocol):
    """What _reject() reads."""


class HandleTaskNeeds(HasAlerts, HasClaims, HasClock, HasDispatcher, HasInventory, HasJobs, HasPolicies,
                      HasProtectedItems, HasRestorePoints, HasSas, HasSettings, HasSnapshots, HasStatusBlobs,
                      HasTaskQueue, HasTelemetry, Protocol):
    """What handle_snapshot_task(), dispatch_with_retries() read, with what they call across seams:
    claims.take_claim, recovery.disk_guard_error, restore_point_backup.backup_by_restore_point."""

class PreviewNeeds(HasClock, HasInventory, HasPolicies, HasProtectedItems, HasStatusBlobs, Protocol):
    """What preview_extension_resource() reads."""


# What ``preview_extension_resource`` puts where a SAS query string would go: no SAS is minted.
SAS_PLACEHOLDER = "<SAS minted at dispatch>"


class Outcome(str, Enum):
    DISPATCHED = "dispatched"   # the VM has the command; the status blob will tell the rest
    DUPLICATE = "duplicate"     # the job is finished, or its attempt is already claimed: nothing sent
    RETRYING = "retrying"       # the command could not be handed over; the next attempt is scheduled
    FAILED = "failed"           # recorded on the job as Failed; the message is settled
    REJECTED = "rejected"       # the message can never succeed; kept in <status container>-rejected


@dataclass(frozen=True)
class DispatchOutcome:
    outcome: Outcome
    job_id: str | None = None
    task_id: str | None = None
    reason: str | None = None


def handle_snapshot_task(svc: HandleTaskNeeds, body: bytes, *, message_id: str, delivery_count: int,
                         retried: bool = False) -> DispatchOutcome:
    """Dispatch the task in ``body``; every outcome means: settle the message.

    TransientError propagates only when the job store or the queue cannot be reached, so nothing
    could be recorded: the platform redelivers the message and the delivery starts over. ``retried``:
    an earlier try of this same delivery ended in such an error, so a claim it may have written before
    the answer was lost is this delivery's own, and is resumed like a redelivery's.
    """
    try:
        task = SnapshotTask.from_json(body)
    except ValidationError as exc:
        return _reject(svc, body, exc, message_id=message_id, delivery_count=delivery_count)

    now = svc.clock.now()
    try:
        job = _load_or_create_job(svc, task, now)
    except ValidationError as exc:      # a new job's times out of bounds: nothing was created
        return _reject(svc, body, exc, message_id=message_id, delivery_count=delivery_count)
    ids = f"job {job.job_id} message {message_id}"
    if job.status.is_terminal:
        log.info("%s: job is already %s, nothing dispatched (delivery %s)", ids, job.status.value,
                 delivery_count)
        return DispatchOutcome(Outcome.DUPLICATE, job.job_id, job.task_id, f"job is {job.status.value}")
    resume = job.phase is not JobPhase.QUEUED and dispatch_interrupted(job, task, delivery_count, retried)
    if job.phase is not JobPhase.QUEUED and not resume:
        log.info("%s: attempt %s (task %s) is already %s; a redelivered or repeated task never starts "
                 "another (delivery %s)", ids, job.attempt, job.expected_task_id, job.phase.value, delivery_count)
        return DispatchOutcome(Outcome.DUPLICATE, job.job_id, job.task_id, f"attempt {job.attempt} is {job.phase.value}")
    if resume:
        log.warning("%s: attempt %s (task %s) was claimed by a delivery that never finished; handing the same "
                    "command over again (the extension runs a taskId once; delivery %s)", ids, job.attempt,
                    job.expected_task_id, delivery_count)
    if task.attempt < job.attempt:
        # The job waits for a retry of its own, scheduled after a pause; an older attempt's message
        # (a late redelivery) must not run it early. It makes sure the retry's task is on the queue:
        # a crash between recording a retry and sending its task leaves that message undelivered.
        _resend_pending_retry(svc, job, ids)
        log.info("%s: the job waits for attempt %s; this message is attempt %s's, nothing dispatched",
                 ids, job.attempt, task.attempt)
        return DispatchOutcome(Outcome.DUPLICATE, job.job_id, job.task_id, f"attempt {job.attempt} is pending")

    if job.trigger is not Trigger.ON_DEMAND and not job.attempts and not resume:
        # The tick writes no item per job, so protection stopped while it planned is caught here.
        try:
            item = svc.protected_items.get(job.vm_name)
        except TransientError as exc:
            return _not_dispatched(svc, job, exc, now, ids)
        if item is not None and not item.is_active:     # (no item at all: a task put on the queue by hand)
            return _cancel_unprotected(svc, job, now, ids)

    if not resume:
        # One backup of a VM at a time, and the on-demand limits, for every trigger and whoever queued the
        # task: the job takes the VM's claim before anything reaches the VM (a resumed attempt took it).
        try:
            refused = take_claim(svc, job, now)
        except TransientError as exc:
            return _not_dispatched(svc, job, exc, now, ids)
        if refused is not None:
            return _refused(svc, job, refused, now, ids)

    try:
        vm = _disks_to_back_up(svc, svc.inventory.get_vm(vm_reference(svc, task.vm_name)))
    except NotFoundError as exc:
        error = JobError.from_remediation(remediation.for_service_error(remediation.VM_NOT_FOUND),
                                          detail=redact(str(exc)))
        return _fail(svc, job, error, now, ids)
    except TransientError as exc:
        return _not_dispatched(svc, job, exc, now, ids)

    # The message's attempt is the job's (or an injected later number): the record decides which runs.
    attempt_task = dataclasses.replace(task, attempt=job.attempt)

    # Managed-disk VMs are backed up through a restore point (shared/services/restore_point_backup.py).
    try:
        started = backup_by_restore_point(svc, job, attempt_task, vm, now, ids)
    except TransientError as exc:
        return _not_dispatched(svc, svc.jobs.get(job.job_id) or job, exc, now, ids)
    if started is not None:
        outcome = (Outcome.FAILED if started.failed else Outcome.DUPLICATE if started.superseded
                   else Outcome.RETRYING if started.retrying else Outcome.DISPATCHED)
        return DispatchOutcome(outcome, job.job_id, started.task_id)

    ids = f"job {job.job_id} task {attempt_task.task_id} message {message_id}"
    if not resume:
        # A disk at the snapshot limit: refuse here, with what to do, rather than have the VM fail with
        # code 85. A disk whose blob is gone is not refused: the extension reports it and the retry
        # policy runs, as a failover can bring it back.
        try:
            disk_error = disk_guard_error(svc, vm)
        except TransientError as exc:
            return _not_dispatched(svc, job, exc, now, ids)
        if disk_error is not None:
            return _fail(svc, job, disk_error, now, ids)

        job, claimed = _claim(svc, job, attempt_task, vm, now)
        if not claimed:
            log.info("%s: another delivery claimed the attempt meanwhile (%s, task %s); nothing dispatched", ids,
                     job.status.value, job.task_id)
            return DispatchOutcome(Outcome.DUPLICATE, job.job_id, job.task_id, "job changed meanwhile")

    try:
        command = _prepare_attempt(svc, attempt_task, vm, now)
    except ConflictError as exc:
        if resume:      # the extension wrote its status already: it has the command
            log.info("%s: the extension already reported on this attempt; nothing dispatched", ids)
            return DispatchOutcome(Outcome.DUPLICATE, job.job_id, job.task_id, "the extension has the command")
        return _fail(svc, job, _dispatch_error(exc), now, ids)
    except (PermanentError, ValidationError) as exc:
        return _fail(svc, job, _dispatch_error(exc), now, ids)
    except TransientError as exc:
        return _not_dispatched(svc, job, exc, now, ids)

    log.info("%s: dispatching to VM %s (%s disk(s), delivery %s)", ids, vm.name, len(vm.disks),
             delivery_count)
    try:
        svc.dispatcher.dispatch(vm, command)
    except PermanentError as exc:
        return _fail(svc, job, _dispatch_error(exc), now, ids)
    except TransientError as exc:
        return _not_dispatched(svc, job, exc, now, ids)
    log.info("%s: dispatched to VM %s; status blob %s", ids, vm.name, job.status_blob)
    return DispatchOutcome(Outcome.DISPATCHED, job.job_id, attempt_task.task_id)


# How long one delivery rides out an unreachable job store or queue: inside the host's lock renewal
# (host.json maxAutoLockRenewalDuration, 5 minutes), so the message stays ours meanwhile. Past it the
# message goes back to the queue; ten deliveries cover about 40 minutes of outage.
DISPATCH_RETRY_BUDGET = timedelta(minutes=4)


def dispatch_with_retries(svc: HandleTaskNeeds, body: bytes, *, message_id: str, delivery_count: int,
                          sleep: Callable[[float], None] = time.sleep,
                          budget: timedelta = DISPATCH_RETRY_BUDGET) -> DispatchOutcome:
    """``handle_snapshot_task``, tried again with growing pauses while nothing can be recorded (the job
    store or the queue unreachable): a storage outage does not turn into ten quick redeliveries and a
    dead-lettered task. Safe to repeat: a delivery claims its attempt before it dispatches."""
    tries = itertools.count(1)
    return ride_out(svc, lambda: handle_snapshot_task(svc, body, message_id=message_id, delivery_count=delivery_count,
                                                      retried=next(tries) > 1),
                    budget=budget, sleep=sleep, what=f"message {message_id} (delivery {delivery_count})")


def preview_extension_resource(svc: PreviewNeeds, vm_name: str, *,
                               retain_until: datetime | None = None) -> dict[str, object]:
    """The extension resource a backup-now of ``vm_name`` would dispatch now, protected values redacted.

    Creates nothing and mints no SAS: URLs carry ``?<SAS minted at dispatch>`` where the SAS goes.
    """
    vm = _disks_to_back_up(svc, svc.inventory.get_vm(vm_name))
    now = svc.clock.now()
    task = SnapshotTask(job_id=job_id_for(vm.name, now, Trigger.ON_DEMAND.value), attempt=1,
                        vm_name=vm.name, slot=now, trigger=Trigger.ON_DEMAND, retain_until=retain_until)
    if vm.backup_method() is BackupMethod.RESTORE_POINT:
        return preview_restore_point(svc, vm, task)
    status_blob, log_blob = svc.status_blobs.attempt_blob_names(task.job_id, task.attempt)
    command = build_snapshot_command(
        task, vm,
        disk_sas_urls=[_placeholder(d.blob_url) for d in vm.disks],
        status_blob_sas=_placeholder(svc.status_blobs.url(status_blob)),
        log_blob_sas=_placeholder(svc.status_blobs.url(log_blob)),
        now=now)
    return to_extension_resource(command, vm, redact=True)


def _claim(svc: ClaimNeeds, job: Job, task: SnapshotTask, vm: Vm, now: datetime) -> tuple[Job, bool]:
    """Mark the attempt Dispatched unless another delivery did: (the job, whether this call claimed it)."""
    status_blob, log_blob = svc.status_blobs.attempt_blob_names(task.job_id, task.attempt)
    disks = [DiskResult(lun=d.lun, blob_url=base_of(d.blob_url)) for d in vm.disks]
    claimed = False

    def claim(current: Job) -> Job | None:
        nonlocal claimed
        claimed = False           # the last try is the one written
        if current.is_terminal or current.phase is not JobPhase.QUEUED or current.attempt != task.attempt:
            return None
        changed = mark_dispatched(current, attempt=task.attempt, task_id=task.task_id, status_blob=status_blob,
                                  log_blob=log_blob, now=now, disks=disks)
        claimed = changed is not None
        return changed

    return svc.jobs.update(job.job_id, claim), claimed


def _prepare_attempt(svc: PrepareNeeds, task: SnapshotTask, vm: Vm, now: datetime) -> ExtensionCommand:
    """The attempt's empty status/log blobs, its SAS and its command."""
    status_blob, log_blob = svc.status_blobs.create_attempt_blobs(task.job_id, task.attempt)
    return build_snapshot_command(
        task, vm,
        disk_sas_urls=[svc.sas.disk_sas_url(d.blob_url) for d in vm.disks],
        status_blob_sas=svc.sas.status_sas_url(svc.status_blobs.url(status_blob)),
        log_blob_sas=svc.sas.log_sas_url(svc.status_blobs.url(log_blob)),
        now=now)


def _not_dispatched(svc: NotDispatchedNeeds, job: Job, exc: TransientError, now: datetime, ids: str) -> DispatchOutcome:
    """A failure that may pass: schedule the next attempt after the retry pause, or fail the job when
    it has had MAX_ATTEMPTS. Recorded first, then sent: a crash in between is repaired by the message's
    redelivery (see ``_resend_pending_retry``)."""
    attempt = job.attempt
    at = next_attempt_at(job, now)
    detail = f"attempt {attempt} of {MAX_ATTEMPTS} could not be dispatched: {redact(str(exc))}"
    error = JobError.from_remediation(remediation.for_service_error(remediation.DISPATCH_FAILED), detail=detail)
    job = svc.jobs.update(job.job_id, lambda current: mark_not_dispatched(current, attempt=attempt, error=error,
                                                                          now=now, retry_at=at))
    if at is None or job.is_terminal:
        log.error("%s: job failed after %s attempts: %s", ids, attempt, detail)
        return DispatchOutcome(Outcome.FAILED, job.job_id, job.task_id, error.error_string)
    _resend_pending_retry(svc, job, ids)
    log.warning("%s: %s; attempt %s scheduled for %s", ids, detail, job.attempt, at.isoformat())
    return DispatchOutcome(Outcome.RETRYING, job.job_id, f"{job.job_id}_{job.attempt}", detail)


def _resend_pending_retry(svc: HasTaskQueue, job: Job, ids: str) -> None:
    """Send the task of the retry the job waits for; the queue drops it if it is there already."""
    pending = pending_retry(job)
    if pending is None:
        return
    svc.task_queue.send([SnapshotTask(job_id=job.job_id, attempt=job.attempt, vm_name=job.vm_name, slot=job.slot,
                                      trigger=job.trigger, policy_name=job.policy_name,
                                      retain_until=job.retain_until, not_before=pending.retry_at)])
    log.info("%s: task of attempt %s on the queue for %s", ids, job.attempt,
             pending.retry_at.isoformat() if pending.retry_at else "now")


def _load_or_create_job(svc: LoadJobNeeds, task: SnapshotTask, now: datetime) -> Job:
    """The task's job; made from the message when there is none (ValidationError when the task's times
    cannot start a job now, and then nothing is created)."""
    job = svc.jobs.get(task.job_id)
    if job is not None:
        return job
    # The message is authoritative: a job record lost or never written is re-created from it, once its
    # times are known to be ones a backup can have (a hand-made slot of 9999 would outlive every rule).
    check_new_task(task, now, catch_up=svc.settings.catch_up, max_retention=MAX_RETENTION)
    fresh = dataclasses.replace(
        Job.new_backup(vm_name=task.vm_name, slot=task.slot, now=now, trigger=task.trigger,
                       policy_name=task.policy_name, retain_until=task.retain_until),
        job_id=task.job_id, attempt=task.attempt)
    if svc.jobs.create_if_absent(fresh):
        log.info("job %s: created from its task message (vm %s)", task.job_id, task.vm_name)
    return svc.jobs.get(task.job_id) or fresh


def _refused(svc: HasJobs, job: Job, refused: ClaimRefused, now: datetime, ids: str) -> DispatchOutcome:
    """A scheduled or initial backup gives way to the one that holds the VM; an on-demand one fails as
    az refuses a backup-now while another backup runs (or past the day's limit)."""
    if job.trigger is Trigger.ON_DEMAND:
        error = JobError.from_remediation(remediation.for_service_error(refused.error_code), detail=refused.detail)
        return _fail(svc, job, error, now, ids)
    reason = f"{refused.reason}; this {job.trigger.value.lower()} backup gave way, nothing was sent to the VM"
    svc.jobs.update(job.job_id, lambda current: mark_cancelled(current, reason, now))
    log.warning("%s: cancelled: %s", ids, reason)
    return DispatchOutcome(Outcome.DUPLICATE, job.job_id, None, reason)


def _cancel_unprotected(svc: HasJobs, job: Job, now: datetime, ids: str) -> DispatchOutcome:
    reason = (f"protection of {job.vm_name} was stopped before this {job.trigger.value.lower()} backup started; "
              f"nothing was sent to the VM")
    svc.jobs.update(job.job_id, lambda current: mark_cancelled(current, reason, now))
    log.warning("%s: cancelled: %s", ids, reason)
    return DispatchOutcome(Outcome.DUPLICATE, job.job_id, None, reason)


def _fail(svc: HasJobs, job: Job, error: JobError, now: datetime, ids: str) -> DispatchOutcome:
    svc.jobs.update(job.job_id, lambda current: mark_failed(current, error, now))
    log.error("%s: job failed: %s %s", ids, error.error_code, error.error_string)
    return DispatchOutcome(Outcome.FAILED, job.job_id, job.task_id, error.error_string)


def _dispatch_error(exc: Exception) -> JobError:
    """The job error for a command that never reached the VM; a refusal names its own code."""
    detail = redact(str(exc))
    refusal = exc if isinstance(exc, DispatchRefused) else None
    if refusal is None or refusal.error_code in remediation.SERVICE_ERRORS:
        fix = remediation.for_service_error(refusal.error_code if refusal else remediation.DISPATCH_FAILED)
        return JobError.from_remediation(fix, detail=detail)
    return JobError(error_code=refusal.error_code, error_title="The VM did not accept the snapshot command",
                    error_string=detail, recommendations=[refusal.recommendation] if refusal.recommendation else [])


def _reject(svc: RejectNeeds, body: bytes, exc: ValidationError, *, message_id: str,
            delivery_count: int) -> DispatchOutcome:
    reason = redact(str(exc))
    name = svc.status_blobs.store_rejected(message_id, reason=reason, body=body,
                                           delivery_count=delivery_count, now=svc.clock.now())
    log.error("message %s rejected (delivery %s): %s; kept as %s/%s", message_id, delivery_count,
              reason, svc.status_blobs.rejected_container, name)
    return DispatchOutcome(Outcome.REJECTED, reason=reason)


def _placeholder(blob_url: str) -> str:
    return f"{blob_url.split('?', 1)[0]}?{SAS_PLACEHOLDER}"


# --- disk inclusion/exclusion (`vmsnap protection update-for-vm`) ------------------------------

def _disks_to_back_up(svc: HasProtectedItems, vm: Vm) -> Vm:
    """The VM with only the disks its protected item's disk selection takes (all, by default)."""
    item = svc.protected_items.get(vm.name)
    return item.disk_selection.apply(vm) if item is not None else vm
