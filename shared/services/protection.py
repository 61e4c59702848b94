"""Use cases of policies and protection: create/set policies, enable/change/disable protection,
list protected items with their last backup and next slot, and on-demand backups (backup-now)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Iterator, Protocol, Sequence

from shared.clock import utc
from shared.domain import remediation
from shared.domain.job_transitions import mark_failed
from shared.domain.jobs import Job, JobError, JobPhase, JobStatus, job_id_for
from shared.domain.planning import task_for
from shared.domain.policy import Policy, PolicyType
from shared.domain.protection import DiskSelection, ProtectedItem, ProtectionState
from shared.domain.recovery import MAX_RETENTION, ON_DEMAND_DEFAULT_RETENTION
from shared.domain.schedule import next_slot
from shared.domain.shards import SHARDS
from shared.domain.task import Trigger
from shared.errors import ConfigurationError, ConflictError, NotFoundError, ValidationError, VmsnapError
from shared.ports import JobQuery, TaskQueue
from shared.redaction import redact
from shared.services.claims import give_back_claim, take_claim
from shared.services.needs import (HasClaims, HasClock, HasInventory, HasJobs, HasPolicies, HasProtectedItems,
                                   HasTaskQueue)

log = logging.getLogger(__name__)


class PolicyNeeds(HasClock, HasPolicies, Protocol):
    """What create_policy(), set_policy(), _status() read."""


class DisableNeeds(HasClock, HasProtectedItems, Protocol):
    """What disable_protection() reads."""


class ChangePolicyNeeds(HasClock, HasPolicies, HasProtectedItems, Protocol):
    """What change_policy() reads."""


class EnableNeeds(HasClock, HasInventory, HasPolicies, HasProtectedItems, Protocol):
    """What enable_protection() reads."""


class RecordJobNeeds(HasClock, HasJobs, Protocol):
    """What record_protection_job() reads."""


class ItemStatusNeeds(HasClock, HasJobs, HasPolicies, HasProtectedItems, Protocol):
    """What get_protected_item(), list_protected_items() read."""


class NotQueuedNeeds(HasClaims, HasJobs, HasProtectedItems, Protocol):
    """What _not_queued() reads."""


class BackupNowNeeds(HasClaims, HasClock, HasJobs, HasProtectedItems, HasTaskQueue, Protocol):
    """What backup_now() reads."""


# --- policies -------------------------------------------------------------------------------------
def create_policy(svc: PolicyNeeds, policy: Policy) -> Policy:
    return svc.policies.create(policy.touched(svc.clock.now()))


def set_policy(svc: PolicyNeeds, policy: Policy) -> Policy:
    """Replace a policy; it applies to every item on it from the next slot (no slot is re-run)."""
    current = svc.policies.get(policy.name)
    if current.policy_type is PolicyType.ENHANCED and policy.policy_type is PolicyType.STANDARD:
        raise ValidationError(f"policy {policy.name!r} is Enhanced; an Enhanced policy cannot become Standard "
                              f"(create a new Standard policy instead)", field="schedule")
    return svc.policies.replace(policy.touched(svc.clock.now()))


# --- protection -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ItemStatus:
    """What `protection list` shows about one item."""

    item: ProtectedItem
    last_job: Job | None
    next_slot: datetime | None


def enable_protection(svc: EnableNeeds, vm_name: str, policy_name: str = "DefaultPolicy", *,
                      initial_backup: bool = True) -> ProtectedItem:
    """Protect a VM with a policy; unless told otherwise its first backup runs at the next tick."""
    policy = svc.policies.get(policy_name)
    vm = svc.inventory.get_vm(vm_name)
    if not vm.disks:
        raise ValidationError(f"VM {vm.name!r} has no disks to back up", field="vm")
    now = svc.clock.now()
    item = ProtectedItem(vm_name=vm.name, policy_name=policy.name, protected_since=now, policy_assigned_at=now,
                         vm_kind=vm.kind.value, resource_id=vm.resource_id,
                         disk_luns=tuple(d.lun for d in vm.disks), initial_backup_pending=initial_backup)
    existing = svc.protected_items.get(vm.name)
    if existing is None:
        item = svc.protected_items.add(item)
    elif existing.is_active:
        raise ConflictError(f"VM {vm.name!r} is already protected with policy {existing.policy_name!r}; "
                            f"use `vmsnap item set-policy` to change its policy")
    else:
        # Resuming a stopped (or soft-deleted) item keeps its history and in-progress guard.
        def resume(current: ProtectedItem) -> ProtectedItem:
            return replace(item, last_slot=current.last_slot, in_progress_job_id=current.in_progress_job_id,
                           in_progress_since=current.in_progress_since,
                           last_job_id=current.last_job_id, skipped=current.skipped,
                           protected_since=current.protected_since, disk_selection=current.disk_selection,
                           version=current.version)

        item = svc.protected_items.update(vm.name, resume)
    log.info("protection enabled for %s with policy %s (initial backup %s)", vm.name, policy.name,
             "at the next tick" if initial_backup else "skipped")
    return item


def change_policy(svc: ChangePolicyNeeds, vm_name: str, policy_name: str) -> ProtectedItem:
    policy = svc.policies.get(policy_name)
    now = svc.clock.now()

    def change(item: ProtectedItem) -> ProtectedItem:
        if not item.is_active:
            raise ConflictError(f"protection of {item.vm_name!r} is stopped; enable it again with a policy")
        old = svc.policies.get(item.policy_name) if item.policy_name.lower() != policy.name.lower() else policy
        if old.policy_type is PolicyType.ENHANCED and policy.policy_type is PolicyType.STANDARD:
            raise ValidationError(f"{item.vm_name!r} is on Enhanced policy {old.name!r}; it cannot move to "
                                  f"Standard policy {policy.name!r}", field="policy_name")
        return replace(item, policy_name=policy.name, policy_assigned_at=now)

    item = svc.protected_items.update(vm_name, change)
    log.info("protected item %s now follows policy %s", vm_name, policy.name)
    return item


def disable_protection(svc: DisableNeeds, vm_name: str, *, delete_backup_data: bool = False) -> ProtectedItem:
    """Stop scheduling; keep the recovery points, or mark them for deletion (soft delete, 14 days)."""
    now = svc.clock.now()

    def stop(item: ProtectedItem) -> ProtectedItem | None:
        if delete_backup_data:
            return replace(item, state=ProtectionState.SOFT_DELETED, deleted_at=now, initial_backup_pending=False)
        if item.state is ProtectionState.STOPPED:
            return None
        return replace(item, state=ProtectionState.STOPPED, initial_backup_pending=False)

    item = svc.protected_items.update(vm_name, stop)
    log.info("protection of %s stopped (%s)", vm_name,
             "recovery points deleted after soft-delete retention" if delete_backup_data else "recovery points kept")
    return item


def set_disk_selection(svc: HasProtectedItems, vm_name: str, selection: DiskSelection) -> ProtectedItem:
    """Which data disks the VM's next backups take (``az backup protection update-for-vm``)."""
    def change(item: ProtectedItem) -> ProtectedItem:
        if not item.is_active:
            raise ConflictError(f"protection of {item.vm_name!r} is stopped; enable it again first")
        return replace(item, disk_selection=selection)

    item: ProtectedItem = svc.protected_items.update(vm_name, change)
    log.info("protected item %s now backs up disks: %s %s", vm_name, selection.setting.value,
             list(selection.luns))
    return item


PROTECTION_OPERATIONS = ("ConfigureBackup", "DisableBackup", "DeleteBackupData")


def record_protection_job(svc: RecordJobNeeds, operation: str, item: ProtectedItem) -> Job:
    """The job az lists for an operator's protection change (enable: ConfigureBackup; disable:
    DisableBackup or DeleteBackupData). It completes as it is made: the change is already done.

    Front ends call it after the change; the scheduler's own state changes record no job."""
    if operation not in PROTECTION_OPERATIONS:
        raise ValidationError(f"{operation!r} is not a protection operation", field="operation")
    now = svc.clock.now()
    vm_name, policy_name = item.vm_name, item.policy_name
    job = Job(job_id=job_id_for(vm_name, now, operation), vm_name=vm_name, slot=now, start_time=now,
              trigger=Trigger.ON_DEMAND, operation=operation, status=JobStatus.COMPLETED,
              phase=JobPhase.DONE, policy_name=policy_name, end_time=now)
    svc.jobs.create_if_absent(job)
    log.info("job %s recorded: %s of %s", job.job_id, operation, vm_name)
    return job


def get_protected_item(svc: ItemStatusNeeds, vm_name: str) -> ItemStatus:
    item = svc.protected_items.get(vm_name)
    if item is None:
        raise NotFoundError(f"VM {vm_name!r} is not protected; run `vmsnap protection enable-for-vm`")
    # The tick writes no item per job, so the last job is the VM's newest job since its protection began.
    newest = svc.jobs.query(JobQuery(vm_name=item.vm_name, operation="Backup", since=item.protected_since,
                                     page_size=1)).jobs
    return _status(svc, item, {}, newest[0] if newest else None)


def list_protected_items(svc: ItemStatusNeeds, *, after: tuple[str, str] | None = None) -> Iterator[ItemStatus]:
    """Every item with its last backup, shard by shard (the items' own order), in name order within one;
    ``after`` (shard, lower-cased name) resumes a listing after that item (the dashboard's pages)."""
    policies: dict[str, Policy] = {}
    for shard in SHARDS:
        if after is not None and shard < after[0]:
            continue
        resume = after[1] if after is not None and shard == after[0] else None
        items = [item for page in svc.protected_items.pages(shard=shard, after=resume) for item in page]
        last_jobs = _last_backups(svc, items, shard)
        for item in items:
            yield _status(svc, item, policies, last_jobs.get(item.vm_name.lower()))


def _last_backups(svc: HasJobs, items: Sequence[ProtectedItem], shard: str) -> dict[str, Job]:
    """The newest backup job since its protection began of each of one shard's items (by lower-case
    VM name): one newest-first walk through the shard's backup jobs, which ends once every item has
    its job or the walk passes the earliest protection start still waiting. With daily backups that is
    about a day of the shard's jobs, read once; a query per item would scan them again for each."""
    waiting = {item.vm_name.lower(): utc(item.protected_since) for item in items}
    found: dict[str, Job] = {}
    query = JobQuery(operation="Backup", shard=shard, since=min(waiting.values(), default=None), page_size=1000)
    while waiting:
        page = svc.jobs.query(query)
        for job in page.jobs:
            since = waiting.get(job.vm_name.lower())
            if since is not None and job.slot >= since:
                found[job.vm_name.lower()] = job
                del waiting[job.vm_name.lower()]
        # Newest first: once the walk is older than every waiting item's protection, none can match.
        if page.continuation is None or (waiting and page.jobs and page.jobs[-1].slot < min(waiting.values())):
            break
        query = replace(query, continuation=page.continuation)
    return found


def _status(svc: PolicyNeeds, item: ProtectedItem, policies: dict[str, Policy], last_job: Job | None) -> ItemStatus:
    upcoming = None
    if item.is_active:
        key = item.policy_name.lower()
        if key not in policies:
            policies[key] = svc.policies.get(item.policy_name)
        policy = policies[key]
        upcoming = next_slot(policy, max(svc.clock.now(), item.watermark(policy.modified_at)))
    return ItemStatus(item=item, last_job=last_job, next_slot=upcoming)


# --- on-demand backup -----------------------------------------------------------------------------
def backup_now(svc: BackupNowNeeds, vm_name: str, *, retain_until: datetime | None) -> Job:
    """Start an on-demand backup now: job created (trigger OnDemand), task sent at once.

    It stands in for a pending initial backup. If its task cannot be sent, the job is Failed with
    the reason and the item is given back as it was, so the next backup-now is not blocked.
    """
    now = svc.clock.now()
    item = svc.protected_items.get(vm_name)
    if item is None:
        raise NotFoundError(f"VM {vm_name!r} is not protected; run `vmsnap protection enable-for-vm` first")
    if not item.is_active:
        raise ConflictError(f"{remediation.NOT_PROTECTED}: protection of {item.vm_name!r} is stopped; "
                            f"enable it again to take backups")
    retain_until = retain_until or now + ON_DEMAND_DEFAULT_RETENTION
    if retain_until <= now:
        raise ValidationError("retain-until must lie in the future", field="retain_until")
    if retain_until > now + MAX_RETENTION:
        raise ValidationError("retain-until may be at most 99 years ahead", field="retain_until")
    queue = _task_queue(svc)        # before anything is written: a bad connection leaves nothing behind

    job = Job.new_backup(vm_name=item.vm_name, slot=now, now=now, trigger=Trigger.ON_DEMAND,
                         policy_name=item.policy_name, retain_until=retain_until)
    # The VM's claim first (services/claims.py): a refused request writes nothing, and the job's own task
    # later finds it holds the VM.
    refused = take_claim(svc, job, now)
    if refused is not None:
        raise ConflictError(str(refused))
    before = item

    def claim(current: ProtectedItem) -> ProtectedItem:
        nonlocal before
        if not current.is_active:
            raise ConflictError(f"protection of {current.vm_name!r} was stopped meanwhile")
        before = current           # what a failed send gives back
        # An on-demand backup is the VM's first backup as much as the pending initial one would be; the
        # tick reads the in-progress job here to skip the VM's slots while it runs.
        return replace(current.started(job.job_id, now), initial_backup_pending=False)

    try:
        svc.protected_items.update(item.vm_name, claim)
    except ConflictError:
        give_back_claim(svc, job)
        raise
    svc.jobs.create_if_absent(job)
    try:
        queue.send([task_for(job, now)])
    except VmsnapError as exc:
        _not_queued(svc, job, before, exc, now)
        raise
    log.info("on-demand backup job %s of %s queued (task %s), retained until %s", job.job_id, item.vm_name,
             job.expected_task_id, retain_until.isoformat())
    return job


def _task_queue(svc: HasTaskQueue) -> TaskQueue:
    try:
        return svc.task_queue
    except ValueError as exc:       # the SDK's word for a malformed connection string
        raise ConfigurationError(f"setting ServiceBusConnection is not a Service Bus connection string "
                                 f"({exc}); fix it and run the command again") from exc


def _not_queued(svc: NotQueuedNeeds, job: Job, before: ProtectedItem, exc: VmsnapError, now: datetime) -> None:
    """Fail the job that never reached the queue, and give the item back its earlier claim and last job."""
    error = JobError.from_remediation(remediation.for_service_error(remediation.TASK_NOT_QUEUED),
                                      detail=redact(str(exc)))
    svc.jobs.update(job.job_id, lambda current: mark_failed(current, error, now))
    _release(svc, job, before)
    give_back_claim(svc, job)
    log.error("on-demand job %s of %s failed: its task could not be queued (%s); the item is released",
              job.job_id, job.vm_name, redact(str(exc)))


def _release(svc: HasProtectedItems, job: Job, before: ProtectedItem) -> None:
    """Give the item back the claim it had before ``job`` took it (unless someone moved on meanwhile)."""
    def release(current: ProtectedItem) -> ProtectedItem | None:
        if current.in_progress_job_id != job.job_id:
            return None         # someone else moved on meanwhile: theirs stands
        return replace(current, in_progress_job_id=before.in_progress_job_id,
                       in_progress_since=before.in_progress_since, last_job_id=before.last_job_id,
                       initial_backup_pending=before.initial_backup_pending or current.initial_backup_pending)

    svc.protected_items.update(job.vm_name, release)
