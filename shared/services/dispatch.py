"""Use case: turn one snapshot-task message into an extension command on its VM.

Per delivery: a new attempt (new taskId, new status/log blob pair, new SAS), the job marked
Dispatched, then the command handed to the dispatcher. Nothing waits for the snapshot itself.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from shared.domain import remediation
from shared.domain.command import ExtensionCommand, build_snapshot_command, to_extension_resource
from shared.domain.inventory import Vm
from shared.domain.jobs import (DiskResult, Job, JobError, JobPhase, job_id_for, mark_dispatched, mark_failed,
                                next_attempt)
from shared.domain.task import SnapshotTask, Trigger
from shared.errors import ConflictError, NotFoundError, PermanentError, TransientError, ValidationError
from shared.ports import DispatchRefused
from shared.services.recovery import snapshot_limit_error
from shared.redaction import redact

log = logging.getLogger(__name__)

# What ``preview_extension_resource`` puts where a SAS query string would go: no SAS is minted.
SAS_PLACEHOLDER = "<SAS minted at dispatch>"


class Outcome(str, Enum):
    DISPATCHED = "dispatched"   # the VM has the command; the status blob will tell the rest
    DUPLICATE = "duplicate"     # the job is already finished (or another delivery won): nothing sent
    FAILED = "failed"           # recorded on the job as Failed; the message is settled
    REJECTED = "rejected"       # the message can never succeed; kept in <status container>-rejected


@dataclass(frozen=True)
class DispatchOutcome:
    outcome: Outcome
    job_id: str | None = None
    task_id: str | None = None
    reason: str | None = None


def handle_snapshot_task(svc, body: bytes, *, message_id: str, delivery_count: int) -> DispatchOutcome:
    """Dispatch the task in ``body``. TransientError propagates: the platform redelivers the message
    and the next delivery is a new attempt. Every other outcome means: settle the message."""
    try:
        task = SnapshotTask.from_json(body)
    except ValidationError as exc:
        return _reject(svc, body, exc, message_id=message_id, delivery_count=delivery_count)

    now = svc.clock.now()
    job = _load_or_create_job(svc, task, now)
    ids = f"job {job.job_id} message {message_id}"
    if job.status.is_terminal:
        log.info("%s: job is already %s, nothing dispatched (delivery %s)", ids, job.status.value,
                 delivery_count)
        return DispatchOutcome(Outcome.DUPLICATE, job.job_id, job.task_id, f"job is {job.status.value}")

    if job.phase is JobPhase.QUEUED and task.attempt < job.attempt:
        # The job waits for a retry of its own, scheduled after a pause; an older attempt's message
        # (a late redelivery) must not run it early and then have the retry supersede it.
        log.info("%s: the job waits for attempt %s; this message is attempt %s's, nothing dispatched",
                 ids, job.attempt, task.attempt)
        return DispatchOutcome(Outcome.DUPLICATE, job.job_id, job.task_id, f"attempt {job.attempt} is pending")

    try:
        vm = svc.inventory.get_vm(task.vm_name)
    except NotFoundError as exc:
        error = JobError.from_remediation(remediation.for_service_error(remediation.VM_NOT_FOUND),
                                          detail=redact(str(exc)))
        return _fail(svc, job, error, now, ids)

    # --- snapshot limit guard (issue 9): refuse here, with what to do, before the VM fails with 85 ---
    limit_error = snapshot_limit_error(svc, vm)
    if limit_error is not None:
        return _fail(svc, job, limit_error, now, ids)
    # --- end of guard ---

    attempt = next_attempt(job)
    attempt_task = dataclasses.replace(task, attempt=attempt)
    ids = f"job {job.job_id} task {attempt_task.task_id} message {message_id}"
    try:
        command, status_blob, log_blob = _prepare_attempt(svc, attempt_task, vm, now)
    except (ConflictError, PermanentError, ValidationError) as exc:
        return _fail(svc, job, _dispatch_error(exc), now, ids)

    disks = [DiskResult(lun=d.lun, blob_url=d.blob_url.split("?", 1)[0]) for d in vm.disks]

    job = svc.jobs.update(job.job_id, lambda current: mark_dispatched(
        current, attempt=attempt, task_id=attempt_task.task_id, status_blob=status_blob,
        log_blob=log_blob, now=now, disks=disks))
    if job.task_id != attempt_task.task_id:
        log.warning("%s: the job moved on meanwhile (%s, task %s); nothing dispatched", ids,
                    job.status.value, job.task_id)
        return DispatchOutcome(Outcome.DUPLICATE, job.job_id, job.task_id, "job changed meanwhile")

    log.info("%s: dispatching to VM %s (%s disk(s), delivery %s)", ids, vm.name, len(vm.disks),
             delivery_count)
    try:
        svc.dispatcher.dispatch(vm, command)
    except PermanentError as exc:
        return _fail(svc, job, _dispatch_error(exc), now, ids)
    except TransientError as exc:
        # The platform redelivers; the next delivery is attempt + 1, so the extension never sees
        # this taskId twice.
        log.warning("%s: dispatch did not go through, the message will be redelivered: %s", ids, redact(exc))
        raise
    log.info("%s: dispatched to VM %s; status blob %s", ids, vm.name, status_blob)
    return DispatchOutcome(Outcome.DISPATCHED, job.job_id, attempt_task.task_id)


def preview_extension_resource(svc, vm_name: str, *, retain_until: datetime | None = None) -> dict:
    """The extension resource a backup-now of ``vm_name`` would dispatch now, protected values redacted.

    Creates nothing and mints no SAS: URLs carry ``?<SAS minted at dispatch>`` where the SAS goes.
    """
    vm = svc.inventory.get_vm(vm_name)
    now = svc.clock.now()
    task = SnapshotTask(job_id=job_id_for(vm.name, now, Trigger.ON_DEMAND.value), attempt=1,
                        vm_name=vm.name, slot=now, trigger=Trigger.ON_DEMAND, retain_until=retain_until)
    status_blob, log_blob = svc.status_blobs.attempt_blob_names(task.job_id, task.attempt)
    command = build_snapshot_command(
        task, vm,
        disk_sas_urls=[_placeholder(d.blob_url) for d in vm.disks],
        status_blob_sas=_placeholder(svc.status_blobs.url(status_blob)),
        log_blob_sas=_placeholder(svc.status_blobs.url(log_blob)),
        now=now)
    return to_extension_resource(command, vm, redact=True)


def _prepare_attempt(svc, task: SnapshotTask, vm: Vm, now: datetime) -> tuple[ExtensionCommand, str, str]:
    """The attempt's empty status/log blobs, its SAS and its command; returns (command, status, log)."""
    status_blob, log_blob = svc.status_blobs.create_attempt_blobs(task.job_id, task.attempt)
    command = build_snapshot_command(
        task, vm,
        disk_sas_urls=[svc.sas.disk_sas_url(d.blob_url) for d in vm.disks],
        status_blob_sas=svc.sas.status_sas_url(svc.status_blobs.url(status_blob)),
        log_blob_sas=svc.sas.log_sas_url(svc.status_blobs.url(log_blob)),
        now=now)
    return command, status_blob, log_blob


def _load_or_create_job(svc, task: SnapshotTask, now: datetime) -> Job:
    job = svc.jobs.get(task.job_id)
    if job is not None:
        return job
    # The message is authoritative: a job record lost or never written is re-created from it.
    fresh = dataclasses.replace(
        Job.new_backup(vm_name=task.vm_name, slot=task.slot, now=now, trigger=task.trigger.value,
                       policy_name=task.policy_name, retain_until=task.retain_until),
        job_id=task.job_id, attempt=task.attempt)
    if svc.jobs.create_if_absent(fresh):
        log.info("job %s: created from its task message (vm %s)", task.job_id, task.vm_name)
    return svc.jobs.get(task.job_id) or fresh


def _fail(svc, job: Job, error: JobError, now: datetime, ids: str) -> DispatchOutcome:
    svc.jobs.update(job.job_id, lambda current: mark_failed(current, error, now))
    log.error("%s: job failed: %s %s", ids, error.error_code, error.error_string)
    return DispatchOutcome(Outcome.FAILED, job.job_id, job.task_id, error.error_string)


def _dispatch_error(exc: Exception) -> JobError:
    """The job error for a command that never reached the VM; a refusal names its own code."""
    detail = redact(str(exc))
    code = getattr(exc, "error_code", None) if isinstance(exc, DispatchRefused) else None
    if code is None or code in remediation.SERVICE_ERRORS:
        fix = remediation.for_service_error(code or remediation.DISPATCH_FAILED)
        return JobError.from_remediation(fix, detail=detail)
    return JobError(error_code=code, error_title="The VM did not accept the snapshot command",
                    error_string=detail, recommendations=[exc.recommendation] if exc.recommendation else [])


def _reject(svc, body: bytes, exc: ValidationError, *, message_id: str, delivery_count: int) -> DispatchOutcome:
    reason = redact(str(exc))
    name = svc.status_blobs.store_rejected(message_id, reason=reason, body=body,
                                           delivery_count=delivery_count, now=svc.clock.now())
    log.error("message %s rejected (delivery %s): %s; kept as %s/%s", message_id, delivery_count,
              reason, svc.status_blobs.rejected_container, name)
    return DispatchOutcome(Outcome.REJECTED, reason=reason)


def _placeholder(blob_url: str) -> str:
    return f"{blob_url.split('?', 1)[0]}?{SAS_PLACEHOLDER}"
