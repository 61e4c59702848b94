"""Slot planning, pure: what one scheduling tick does for one protected item (the job of its due slot,
the slots it skips and why, its new watermark), the task a new job's first attempt sends, and how far
ahead of its slot a tick sends it. The tick that reads and writes all this is shared/services/scheduling.py."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeGuard

from croniter import croniter

from shared.domain.job_transitions import timeout_deadline
from shared.domain.jobs import Job, JobStatus
from shared.domain.policy import Frequency, Policy
from shared.domain.protection import ProtectedItem, SkippedSlot
from shared.domain.task import SnapshotTask, Trigger

# A tick sends a slot at most this far ahead of its time (scheduled for it); the worker accepts a task up
# to MAX_TASK_LEAD early (shared/domain/task.py).
MAX_LOOKAHEAD = timedelta(hours=1)


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
                # Its slot is the enable time, not a policy slot, so only this claim tells the next
                # ticks (and backup-now) that a backup may still be running.
                changed = changed.started(self.job.job_id, self.job.start_time)
        return changed

    @property
    def changes_item(self) -> bool:
        """Whether the item itself must be written (otherwise the shard's progress carries the watermark)."""
        return bool(self.skipped) or self.initial_done


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
                             trigger=Trigger.INITIAL, policy_name=policy.name,
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
                         trigger=Trigger.SCHEDULED, policy_name=policy.name,
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
                        trigger=job.trigger, policy_name=job.policy_name,
                        retain_until=job.retain_until, not_before=job.slot if job.slot > now else None)


def lookahead(schedule: str, now: datetime) -> timedelta:
    """Time until the timer's next tick: slots before it are sent now, scheduled for their time."""
    following: datetime = croniter(schedule, now, second_at_beginning=True).get_next(datetime)
    return min(max(following - now, timedelta(0)), MAX_LOOKAHEAD)
