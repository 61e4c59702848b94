"""The scheduling tick: every protected item with a slot due gets exactly one job and one task.

Per page of items (up to 1,000: Table's largest page, and one queue sender per page), in this order, so that a crash anywhere is repaired by the next tick:
1. plan each item from its watermark (pure: ``plan_item``);
2. create the page's jobs insert-if-absent (deterministic job id per item and slot);
3. send their tasks in one batch (message_id = task id: the queue drops a repeat);
4. advance the items' watermarks (ETag-guarded Table transactions).
A tick that dies after 2 or 3 leaves watermarks behind, so the next tick plans the same slots, finds
the jobs already there and sends their tasks again (only for jobs still Queued). Memory holds one
page at a time, whatever the number of VMs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeGuard

from croniter import croniter

from shared.domain.jobs import Job, JobPhase, JobStatus, mark_cancelled, timeout_deadline
from shared.domain.policy import Frequency, Policy
from shared.domain.protection import ProtectedItem, SkippedSlot
from shared.domain.schedule import slots_between
from shared.domain.task import SnapshotTask, Trigger
from shared.errors import NotFoundError
from shared.ports import JobQuery

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
MAX_LOOKAHEAD = timedelta(hours=1)


@dataclass
class TickResult:
    now: datetime
    items_seen: int = 0
    jobs_created: int = 0
    tasks_sent: int = 0
    slots_skipped: int = 0
    pages_read: int = 0
    item_transactions: int = 0
    job_store_calls: int = 0
    queue_operations: int = 0

    @property
    def operations(self) -> int:
        """Storage and queue round trips this tick asked for (a batch or a transaction counts once)."""
        return self.pages_read + self.item_transactions + self.job_store_calls + self.queue_operations


@dataclass(frozen=True)
class ItemPlan:
    job: Job | None
    skipped: tuple[SkippedSlot, ...] = ()
    last_slot: datetime | None = None       # the new watermark, if it moves
    initial_done: bool = False

    def apply(self, item: ProtectedItem) -> ProtectedItem:
        changed = replace(item, skipped=item.with_skipped(list(self.skipped)))
        if self.last_slot is not None and (item.last_slot is None or self.last_slot > item.last_slot):
            changed.last_slot = self.last_slot
        if self.initial_done:
            changed.initial_backup_pending = False
        if self.job is not None:
            changed = changed.started(self.job.job_id, self.job.start_time)
        return changed


def blocks_new_backup(job: Job | None, now: datetime) -> TypeGuard[Job]:
    """A previous job blocks a new one while it is InProgress and before its timeout deadline."""
    return job is not None and job.status is JobStatus.IN_PROGRESS and now < timeout_deadline(job)


def retain_until_for(policy: Policy, slot: datetime) -> datetime:
    """A scheduled point's basic expiry: its daily retention (weekly for a Weekly policy)."""
    if policy.schedule.frequency is Frequency.WEEKLY:
        return slot + timedelta(weeks=policy.retention.weekly_weeks or 1)
    return slot + timedelta(days=policy.retention.daily_days or 30)


def plan_item(item: ProtectedItem, policy: Policy, due: list[datetime], *, now: datetime,
              catch_up_from: datetime, previous_job: Job | None) -> ItemPlan | None:
    """What one tick does for one item, given its due slots (ascending, after its watermark).

    - Slots older than the catch-up bound are skipped ("missed").
    - Of the slots within the bound, the latest runs; earlier ones are skipped: after downtime the
      user gets one fresh backup, not a burst of back-to-back ones.
    - While the previous job is InProgress (and not stale) a due slot is skipped; a slot still
      ahead (scheduled early, within the lookahead) is left for a later tick to decide.
    - A pending initial backup runs first (slot = the enable time); past slots it covers are skipped.
    """
    if not item.is_active or (not due and not item.initial_backup_pending):
        return None
    blocked = blocks_new_backup(previous_job, now)
    skipped: list[SkippedSlot] = []
    missed = [s for s in due if s <= catch_up_from]
    skipped += [SkippedSlot(s, "missed: older than the catch-up bound when the scheduler ran") for s in missed]
    candidates = [s for s in due if s > catch_up_from]
    past = [s for s in candidates if s <= now]
    ahead = [s for s in candidates if s > now]

    if item.initial_backup_pending:
        if blocked:
            return _plan(None, skipped)
        skipped += [SkippedSlot(s, "the initial backup ran instead") for s in past]
        job = Job.new_backup(vm_name=item.vm_name, slot=item.initial_slot, now=now,
                             trigger=Trigger.INITIAL.value, policy_name=policy.name,
                             retain_until=retain_until_for(policy, now))
        return _plan(job, skipped, initial_done=True)

    target = ahead[-1] if ahead else (past[-1] if past else None)
    if target is None:
        return _plan(None, skipped)
    if blocked and previous_job is not None:
        busy = f"backup {previous_job.job_id} was still in progress"
        skipped += [SkippedSlot(s, busy) for s in past]
        # A slot still ahead is decided when due: the previous job may well have finished by then.
        return _plan(None, skipped)
    skipped += [SkippedSlot(s, "superseded by a later slot") for s in candidates if s < target]
    job = Job.new_backup(vm_name=item.vm_name, slot=target, now=max(now, target),
                         trigger=Trigger.SCHEDULED.value, policy_name=policy.name,
                         retain_until=retain_until_for(policy, target))
    return _plan(job, skipped, last_slot=target)


def _plan(job: Job | None, skipped: list[SkippedSlot], *, last_slot: datetime | None = None,
          initial_done: bool = False) -> ItemPlan | None:
    marks = [s.slot for s in skipped] + ([last_slot] if last_slot else [])
    if job is None and not marks:
        return None
    return ItemPlan(job=job, skipped=tuple(skipped), last_slot=max(marks) if marks else None,
                    initial_done=initial_done)


def task_for(job: Job, now: datetime) -> SnapshotTask:
    """The queue message of a job's first attempt; a slot still ahead is scheduled for its time."""
    return SnapshotTask(job_id=job.job_id, attempt=job.attempt, vm_name=job.vm_name, slot=job.slot,
                        trigger=Trigger(job.trigger), policy_name=job.policy_name,
                        retain_until=job.retain_until, not_before=job.slot if job.slot > now else None)


def lookahead(schedule: str, now: datetime) -> timedelta:
    """Time until the timer's next tick: slots before it are sent now, scheduled for their time."""
    following: datetime = croniter(schedule, now, second_at_beginning=True).get_next(datetime)
    return min(max(following - now, timedelta(0)), MAX_LOOKAHEAD)


def run_scheduling_tick(svc: Services, *, past_due: bool = False, page_size: int = PAGE_SIZE) -> TickResult:
    """One timer tick over every protected item, a page at a time."""
    now = svc.clock.now()
    result = TickResult(now=now)
    horizon = now + lookahead(svc.settings.schedule, now)
    catch_up_from = now - svc.settings.catch_up
    if past_due:
        log.warning("scheduling tick at %s is past due; slots missed meanwhile are caught up within %s",
                    now.isoformat(), svc.settings.catch_up)
    policies: dict[str, Policy | None] = {}
    for page in svc.protected_items.pages(page_size):
        result.pages_read += 1
        result.items_seen += len(page)
        _run_page(svc, page, policies, result, now=now, horizon=horizon, catch_up_from=catch_up_from)
    log.info("scheduling tick %s: %s items, %s jobs created, %s tasks sent, %s slots skipped, %s operations",
             now.isoformat(), result.items_seen, result.jobs_created, result.tasks_sent, result.slots_skipped,
             result.operations)
    return result


def _policy(svc: Services, policies: dict[str, Policy | None], name: str) -> Policy | None:
    key = name.lower()
    if key not in policies:
        try:
            policies[key] = svc.policies.get(name)
        except NotFoundError:
            log.error("policy %s is missing; its items are not scheduled", name)
            policies[key] = None
    return policies[key]


def _run_page(svc: Services, page: list[ProtectedItem], policies: dict[str, Policy | None], result: TickResult, *,
              now: datetime,              horizon: datetime, catch_up_from: datetime) -> None:
    planned: list[tuple[ProtectedItem, ItemPlan]] = []
    for item in page:
        if not item.is_active:
            continue
        policy = _policy(svc, policies, item.policy_name)
        if policy is None:
            continue
        due = slots_between(policy, item.watermark(policy.modified_at), horizon)
        if not due and not item.initial_backup_pending:
            continue
        previous = None
        if item.may_be_busy(now) and item.in_progress_job_id:
            previous = svc.jobs.get(item.in_progress_job_id)
            result.job_store_calls += 1
        plan = plan_item(item, policy, due, now=now, catch_up_from=catch_up_from, previous_job=previous)
        if plan is not None:
            planned.append((item, plan))
    if not planned:
        return
    for item, plan in planned:
        if plan.skipped:
            _cancel_orphans(svc, item, plan, now, result)

    jobs = [plan.job for _, plan in planned if plan.job is not None]
    tasks: list[SnapshotTask] = []
    if jobs:
        created = svc.jobs.create_many_if_absent(jobs)
        result.job_store_calls += 1
        for job, was_created in zip(jobs, created):
            if was_created:
                result.jobs_created += 1
            else:
                # A tick that stopped before advancing watermarks: send again unless it has moved on.
                existing = svc.jobs.get(job.job_id)
                result.job_store_calls += 1
                if existing is None or existing.status.is_terminal or existing.phase is not JobPhase.QUEUED:
                    continue
                log.info("job %s for %s exists from an earlier tick; sending its task again", job.job_id,
                         job.vm_name)
            tasks.append(task_for(job, now))
    if tasks:
        result.queue_operations += svc.task_queue.send(tasks)
        result.tasks_sent += len(tasks)
        for task in tasks:
            log.info("task %s sent for job %s (%s, slot %s)", task.message_id, task.job_id, task.vm_name,
                     task.slot.isoformat())

    result.slots_skipped += sum(len(plan.skipped) for _, plan in planned)
    for item, plan in planned:
        for skip in plan.skipped:
            log.warning("slot %s of %s skipped: %s", skip.slot.isoformat(), item.vm_name, skip.reason)
    by_name = {item.vm_name.lower(): (item, plan) for item, plan in planned}
    _, conflicts, transactions = svc.protected_items.save_many([plan.apply(item) for item, plan in planned])
    result.item_transactions += transactions
    for name in conflicts:
        item, plan = by_name[name.lower()]
        _settle_conflict(svc, item, plan, now)


def _cancel_orphans(svc: Services, item: ProtectedItem, plan: ItemPlan, now: datetime, result: TickResult) -> None:
    """A tick that died before advancing watermarks may have created jobs for slots this tick now
    skips (time moved past another slot meanwhile). Cancel them so no job waits forever for a task.
    Only items with skipped slots pay this one query, so a normal tick never does."""
    skipped = {s.slot for s in plan.skipped}
    page = svc.jobs.query(JobQuery(vm_name=item.vm_name, since=min(skipped), page_size=100))
    result.job_store_calls += 1
    for job in page.jobs:
        if job.slot in skipped and job.trigger == Trigger.SCHEDULED.value and job.job_id != item.in_progress_job_id:
            _cancel(svc, job.job_id, now, "its slot was skipped after the scheduler was interrupted")


def _cancel(svc: Services, job_id: str, now: datetime, reason: str) -> None:
    def cancel(job: Job) -> Job | None:
        cancelled = mark_cancelled(job, reason, now)
        if cancelled is not None:
            log.warning("job %s for %s cancelled: %s", job.job_id, job.vm_name, reason)
        return cancelled

    svc.jobs.update(job_id, cancel)


def _settle_conflict(svc: Services, seen: ProtectedItem, plan: ItemPlan, now: datetime) -> None:
    """The item changed between read and write (another tick, backup-now, disable, policy change):
    re-read it and merge this tick's plan into what is there now.

    Another tick of the same slot planned the same job (the id is deterministic), so its claim is this
    plan's claim and merging changes nothing: the job runs. The job gives way only when the item now
    refuses it (protection stopped, or a different job that still blocks holds it); every writer that
    sees the item so agrees, so cancelling it is never a lost race.
    """
    job = plan.job
    gave_way = False

    def merge(current: ProtectedItem) -> ProtectedItem:
        nonlocal gave_way
        gave_way = job is not None and _refuses(svc, current, job, now)
        if job is not None and gave_way:
            reason = SkippedSlot(job.slot, "another backup started while this one was scheduled")
            return replace(plan, job=None, skipped=plan.skipped + (reason,)).apply(current)
        return plan.apply(current)

    try:
        svc.protected_items.update(seen.vm_name, merge)
    except NotFoundError:
        gave_way = job is not None
    if job is not None and gave_way:
        _cancel(svc, job.job_id, now, "protection changed while the job was being scheduled")
    elif job is not None:
        log.info("job %s for %s: the item changed meanwhile; merged, the job stands", job.job_id, seen.vm_name)


def _refuses(svc: Services, current: ProtectedItem, job: Job, now: datetime) -> bool:
    """Whether the item as it is now refuses ``job``: stopped, or claimed by another job that blocks."""
    if not current.is_active:
        return True
    holder = current.in_progress_job_id
    if holder in (None, job.job_id) or not current.may_be_busy(now):
        return False
    return blocks_new_backup(svc.jobs.get(holder), now)
