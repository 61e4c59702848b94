# Over 400 lines on purpose: tick, fan-out and shard planning share the exactly-once rules.
"""The scheduling tick: every protected item with a slot due gets exactly one job and one task.

The fleet is split into 16 shards (shared/domain/shards.py). A tick plans each shard itself, or,
once the fleet is large (``PLANNER_FAN_OUT_ITEMS``), sends one message per shard to the planner
queue, so the shards are planned by the app's instances side by side (functions/planner.py).

Per page of a shard's items (up to 1,000), in this order, so that a crash anywhere is repaired:
1. plan each item from its watermark (pure: ``plan_item``, shared/domain/planning.py); the watermark is the shard's progress
   (shared/domain/progress.py) unless the item's own is later;
2. create the page's jobs insert-if-absent (deterministic job id per item and slot): one entity per
   job, in transactions of 100 (a shard's jobs of one slot share a partition);
3. send their tasks in one batch (message_id = task id: the queue drops a repeat);
4. write the items whose own state changed (initial backup done, slots skipped), ETag-guarded;
5. record the shard's progress: this run has settled every item up to the page's last.
Each step is tried again with growing pauses while storage or Service Bus fails (steps are
idempotent); a page that still fails ends the shard's run, counted as failed, and the next tick
resumes at that page, finding its jobs by their ids and sending the tasks of those still queued.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from functools import partial
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Callable, Protocol, Sequence, TypeVar

from shared.adapters.metering import metered
from shared.domain.job_transitions import mark_cancelled
from shared.domain.jobs import Job, JobPhase, JobStatus
from shared.domain.planning import ItemPlan, blocks_new_backup, lookahead, plan_item, task_for
from shared.domain.policy import Policy
from shared.domain.progress import PlanRequest, ShardProgress
from shared.domain.protection import STALE_AFTER, ProtectedItem, SkippedSlot
from shared.domain.schedule import slots_between
from shared.domain.shards import SHARDS
from shared.domain.task import SnapshotTask, Trigger
from shared.errors import NotFoundError, TransientError
from shared.ports import JobQuery
from shared.services.needs import (HasClock, HasJobs, HasPolicies, HasProgress, HasProtectedItems, HasSettings,
                                   HasShardQueue, HasTaskQueue)
from shared.services.outages import ride_out

log = logging.getLogger(__name__)


class PlanShardNeeds(HasClock, HasJobs, HasPolicies, HasProgress, HasProtectedItems, HasSettings, HasTaskQueue,
                     Protocol):
    """What plan_shard() (its _ShardRun) reads."""


class TickNeeds(HasClock, HasJobs, HasPolicies, HasProgress, HasProtectedItems, HasSettings, HasShardQueue,
                HasTaskQueue, Protocol):
    """What run_scheduling_tick() reads."""


class SettleNeeds(HasJobs, HasProtectedItems, Protocol):
    """What _settle_conflict() reads."""


PAGE_SIZE = 1000
STEP_BUDGET = timedelta(seconds=45)     # per step of a page: pauses of 1, 2, 4, 8, 16 s
SAMPLE = 5                              # slots and jobs a tick's log line names

T = TypeVar("T")


@dataclass
class TickResult:
    """What a tick (or one shard's planner) did. Requests are counted on the wire (metering.py)."""

    now: datetime
    shards: int = 0             # shards planned by this call
    fanned_out: int = 0         # shard requests sent to planners instead
    items_seen: int = 0
    due: int = 0                # items with a slot (or the initial backup) due
    planned: int = 0            # ... whose job for it exists now (created by this run or found)
    jobs_created: int = 0
    sent: int = 0               # tasks sent
    deferred: int = 0           # due items left for later: a previous backup still in progress
    failed: int = 0             # due items not planned: storage or queue failing, or a policy missing
    stopped: int = 0            # shards whose run stopped on a failure (the next tick resumes them)
    slots_skipped: int = 0
    retries: int = 0            # steps tried again after a transient failure
    table_requests: int = 0     # HTTP requests to Table Storage, retries included
    queue_operations: int = 0   # Service Bus sends
    # For the log, which says no more per task: the tasks sent per slot, and the first few (VM and job id).
    # Any other is found by its VM and slot: 'vmsnap job list --vm V --since SLOT'.
    sent_slots: Counter[datetime] = field(default_factory=Counter)
    sent_sample: list[str] = field(default_factory=list)

    @property
    def tasks_sent(self) -> int:
        return self.sent

    @property
    def operations(self) -> int:
        """Storage requests and queue operations, as sent on the wire."""
        return self.table_requests + self.queue_operations

    def add(self, other: "TickResult") -> None:
        for f in fields(self):
            if f.name != "now":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        del self.sent_sample[SAMPLE:]

    def __str__(self) -> str:
        """The counts, for a log line of bounded length (the dataclass's repr lists every slot sent)."""
        return (f"{self.items_seen} items, {self.due} due, {self.planned} planned ({self.jobs_created} new jobs), "
                f"{self.sent} tasks sent, {self.deferred} deferred, {self.failed} failed, {self.slots_skipped} slots "
                f"skipped, {self.retries} retries, {self.table_requests} table requests, {self.queue_operations} "
                f"queue operations, {self.fanned_out} shard requests")

    def note_sent(self, tasks: Sequence[SnapshotTask]) -> None:
        self.sent += len(tasks)
        self.sent_slots.update(task.slot for task in tasks)
        self.sent_sample += [f"{task.vm_name} {task.job_id}" for task in tasks[:max(0, SAMPLE - len(self.sent_sample))]]


def run_scheduling_tick(svc: TickNeeds, *, past_due: bool = False, page_size: int = PAGE_SIZE,
                        fan_out: bool | None = None, sleep: Callable[[float], None] = time.sleep) -> TickResult:
    """One timer tick: every shard planned here, or (``fan_out``; by default once the fleet counted at
    the last runs reaches ``PLANNER_FAN_OUT_ITEMS``) one request per shard sent to the planners."""
    now = svc.clock.now()
    result = TickResult(now=now)
    if past_due:
        log.warning("scheduling tick at %s is past due; slots missed meanwhile are caught up within %s",
                    now.isoformat(), svc.settings.catch_up)
    progress: list[ShardProgress] | None = None
    with metered() as meter:
        if fan_out is None:
            threshold = svc.settings.fan_out_items
            progress = svc.progress.all()
            fan_out = threshold > 0 and sum(p.items for p in progress) >= threshold
        if fan_out:
            requests = [PlanRequest(shard=shard, tick=now, past_due=past_due) for shard in SHARDS]
            result.queue_operations += ride_out(svc, lambda: svc.shard_queue.send(requests),
                                                what=f"tick {now.isoformat()}: sending shard requests",
                                                budget=STEP_BUDGET, sleep=sleep)
            result.fanned_out = len(requests)
    result.table_requests += meter.requests("table")
    if not fan_out:
        known = {p.shard: p for p in progress or ()}
        policies: dict[str, Policy | None] = {}
        for shard in SHARDS:
            result.add(plan_shard(svc, shard, now, page_size=page_size, sleep=sleep, progress=known.get(shard),
                                  policies=policies))
    log.info("scheduling tick %s: %s", now.isoformat(), _summary(result))
    return result


def plan_shard(svc: PlanShardNeeds, shard: str, now: datetime, *, page_size: int = PAGE_SIZE,
               sleep: Callable[[float], None] = time.sleep, progress: ShardProgress | None = None,
               policies: dict[str, Policy | None] | None = None) -> TickResult:
    """Plan one shard's items as of ``now`` (the tick's time, whenever the planner runs).

    ``progress`` (the shard's, as read) and ``policies`` (a cache) save a tick that plans every
    shard itself a read per shard."""
    result = TickResult(now=now, shards=1)
    with metered() as meter:
        run = _ShardRun(svc, shard, now, result, sleep, policies if policies is not None else {})
        try:
            run.plan_all(page_size, progress)
        except TransientError as exc:
            result.stopped += 1
            log.error("tick %s, shard %s: stopped after %s items (%s); the next tick resumes here",
                      now.isoformat(), shard, result.items_seen, exc)
    result.table_requests += meter.requests("table")
    quiet = not (result.due or result.failed or result.stopped or result.slots_skipped)
    log.log(logging.DEBUG if quiet else logging.INFO, "tick %s, shard %s: %s", now.isoformat(), shard,
            _summary(result))
    return result


def _summary(result: TickResult) -> str:
    """The counts, and the slots and first jobs of the tasks sent."""
    text = str(result)
    if not result.sent:
        return text
    slots = sorted(result.sent_slots.items())
    text += "; tasks by slot: " + ", ".join(f"{slot.isoformat()} x{n}" for slot, n in slots[:SAMPLE])
    if len(slots) > SAMPLE:
        text += f" and {len(slots) - SAMPLE} more slot(s)"
    text += "; jobs: " + ", ".join(result.sent_sample)
    more = result.sent - len(result.sent_sample)
    return text + (f" and {more} more (vmsnap job list --vm V --since SLOT)" if more > 0 else "")


@dataclass
class _ShardRun:
    svc: PlanShardNeeds
    shard: str
    now: datetime
    result: TickResult
    sleep: Callable[[float], None]
    policies: dict[str, Policy | None] = field(default_factory=dict)
    progress: ShardProgress = field(init=False)
    slot_cache: dict[tuple[str, datetime | None, datetime, datetime], tuple[datetime, ...]] = field(
        default_factory=dict)
    busy: dict[str, Job] | None = None

    def __post_init__(self) -> None:
        self.horizon = self.now + lookahead(self.svc.settings.schedule, self.now)
        self.catch_up_from = self.now - self.svc.settings.catch_up

    def step(self, what: str, action: Callable[[], T]) -> T:
        """``action`` tried again with growing pauses while it fails transiently (it is idempotent)."""
        tries = 0

        def attempt() -> T:
            nonlocal tries
            tries += 1
            return action()

        try:
            return ride_out(self.svc, attempt, what=f"tick {self.now.isoformat()}, shard {self.shard}: {what}",
                            budget=STEP_BUDGET, sleep=self.sleep)
        finally:
            self.result.retries += max(0, tries - 1)

    def plan_all(self, page_size: int, progress: ShardProgress | None) -> None:
        self.progress = progress or self.step("reading progress", lambda: self.svc.progress.get(self.shard))
        through: str | None = None
        pages = iter(self.svc.protected_items.pages(page_size, shard=self.shard))

        def next_page() -> list[ProtectedItem] | None:
            nonlocal pages
            try:
                return next(pages, None)
            except TransientError:
                # A listing that failed cannot go on: the next try lists again after the last page.
                pages = iter(self.svc.protected_items.pages(page_size, shard=self.shard, after=through))
                raise

        while True:
            page = self.step("reading items", next_page)
            if page is None:
                break
            if through is not None:     # the page before is settled: saved once another page follows
                done = through
                self.save_progress(lambda p: p.advanced(self.now, self.horizon, done))
            self.result.items_seen += len(page)
            self.plan_page(page)
            through = page[-1].vm_name.lower()
        self.save_progress(lambda p: p.finished(self.now, self.horizon, self.result.items_seen))

    def save_progress(self, change: Callable[[ShardProgress], ShardProgress]) -> None:
        self.progress = self.step("saving progress", lambda: self.svc.progress.update(
            self.shard, change, current=self.progress))

    def slots(self, policy: Policy, after: datetime, until: datetime) -> list[datetime]:
        """``slots_between``, once per policy and bounds: a shard's items mostly share their watermark."""
        key = (policy.name.lower(), policy.modified_at, after, until)
        found = self.slot_cache.get(key)
        if found is None:
            found = self.slot_cache[key] = tuple(slots_between(policy, after, until))
        return list(found)

    def policy(self, name: str) -> Policy | None:
        key = name.lower()
        if key not in self.policies:
            try:
                self.policies[key] = self.step(f"reading policy {name}", lambda: self.svc.policies.get(name))
            except NotFoundError:
                log.error("policy %s is missing; its items are not scheduled", name)
                self.policies[key] = None
        return self.policies[key]

    def previous_job(self, item: ProtectedItem, policy: Policy, watermark: datetime) -> Job | None:
        """The job that may still block a new backup of ``item``: one in progress from a slot (or an
        on-demand request) within the stale window. The shard's in-progress jobs are read once, and
        only if some item has such an earlier slot, so a daily fleet never reads them."""
        recent = self.slots(policy, self.now - STALE_AFTER, watermark)
        if not recent and not item.may_be_busy(self.now):
            return None
        if self.busy is None:
            self.busy = self.step("reading jobs in progress", self.jobs_in_progress)
        return self.busy.get(item.vm_name.lower())

    def jobs_in_progress(self) -> dict[str, Job]:
        found: dict[str, Job] = {}
        token = None
        while True:
            page = self.svc.jobs.query(JobQuery(shard=self.shard, status=JobStatus.IN_PROGRESS,
                                                since=self.now - STALE_AFTER, page_size=1000, continuation=token))
            for job in page.jobs:       # newest first: the first one per VM is its latest
                if blocks_new_backup(job, self.now):
                    found.setdefault(job.vm_name.lower(), job)
            token = page.continuation
            if not token:
                return found

    def plan_page(self, page: list[ProtectedItem]) -> None:
        svc, now, result = self.svc, self.now, self.result
        planned: list[tuple[ProtectedItem, ItemPlan]] = []
        for item in page:
            if not item.is_active:
                continue
            policy = self.policy(item.policy_name)
            if policy is None:
                result.failed += 1
                continue
            watermark = item.watermark(policy.modified_at)
            settled = self.progress.settled_for(item, policy)
            if settled is not None and settled > watermark:
                watermark = settled
            due = self.slots(policy, watermark, self.horizon)
            if not due and not item.initial_backup_pending:
                continue
            previous = self.previous_job(item, policy, watermark)
            plan = plan_item(item, policy, due, now=now, catch_up_from=self.catch_up_from, previous_job=previous)
            if plan is None:
                continue
            if plan.job is not None:
                result.due += 1
            elif blocks_new_backup(previous, now):
                result.due += 1
                result.deferred += 1
            planned.append((item, plan))
        if not planned:
            return
        for item, item_plan in planned:
            if item_plan.skipped:
                self.step(f"cancelling orphans of {item.vm_name}", partial(_cancel_orphans, svc, item, item_plan, now))

        jobs = [plan.job for _, plan in planned if plan.job is not None]
        tasks: list[SnapshotTask] = []
        if jobs:
            try:
                created = self.step("creating jobs", lambda: svc.jobs.create_many_if_absent(jobs))
            except TransientError:
                result.failed += len(jobs)
                raise
            existing = [job.job_id for job, was_created in zip(jobs, created) if not was_created]
            found = self.step("reading existing jobs", lambda: svc.jobs.get_many(existing)) if existing else {}
            for job, was_created in zip(jobs, created):
                result.planned += 1
                if was_created:
                    result.jobs_created += 1
                else:
                    # Planned by a run that stopped before its progress was saved: send again unless it moved on.
                    earlier = found.get(job.job_id)
                    if earlier is None or earlier.status.is_terminal or earlier.phase is not JobPhase.QUEUED:
                        continue
                    log.debug("job %s for %s exists from an earlier tick; sending its task again", job.job_id,
                              job.vm_name)
                tasks.append(task_for(job, now))
        if tasks:
            try:
                result.queue_operations += self.step("sending tasks", lambda: svc.task_queue.send(tasks))
            except TransientError:
                result.failed += len(tasks)
                result.planned -= len(tasks)
                raise
            result.note_sent(tasks)
            # One line per task is 100,000 lines a tick at fleet scale: the shard's summary names the slots
            # and a few jobs at INFO, every task is here at DEBUG.
            for task in tasks:
                log.debug("task %s sent for job %s (%s, slot %s)", task.message_id, task.job_id, task.vm_name,
                          task.slot.isoformat())

        result.slots_skipped += sum(len(plan.skipped) for _, plan in planned)
        for item, plan in planned:
            for skip in plan.skipped:
                log.warning("slot %s of %s skipped: %s", skip.slot.isoformat(), item.vm_name, skip.reason)
        changed = [(item, plan) for item, plan in planned if plan.changes_item]
        if not changed:
            return
        by_name = {item.vm_name.lower(): (item, plan) for item, plan in changed}
        _, conflicts, _ = self.step("saving items", lambda: svc.protected_items.save_many(
            [plan.apply(item) for item, plan in changed]))
        for name in conflicts:
            item, plan = by_name[name.lower()]
            self.step(f"merging {item.vm_name}", lambda: _settle_conflict(svc, item, plan, now))


def _cancel_orphans(svc: HasJobs, item: ProtectedItem, plan: ItemPlan, now: datetime) -> None:
    """A tick that died before advancing watermarks may have created jobs for slots this tick now
    skips (time moved past another slot meanwhile). Cancel them so no job waits forever for a task.
    Only items with skipped slots pay this one query, so a normal tick never does."""
    skipped = {s.slot for s in plan.skipped}
    page = svc.jobs.query(JobQuery(vm_name=item.vm_name, since=min(skipped), page_size=100))
    for job in page.jobs:
        if job.slot in skipped and job.trigger is Trigger.SCHEDULED and job.job_id != item.in_progress_job_id:
            _cancel(svc, job.job_id, now, "its slot was skipped after the scheduler was interrupted")


def _cancel(svc: HasJobs, job_id: str, now: datetime, reason: str) -> None:
    def cancel(job: Job) -> Job | None:
        cancelled = mark_cancelled(job, reason, now)
        if cancelled is not None:
            log.warning("job %s for %s cancelled: %s", job.job_id, job.vm_name, reason)
        return cancelled

    svc.jobs.update(job_id, cancel)


def _settle_conflict(svc: SettleNeeds, seen: ProtectedItem, plan: ItemPlan, now: datetime) -> None:
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


def _refuses(svc: HasJobs, current: ProtectedItem, job: Job, now: datetime) -> bool:
    """Whether the item as it is now refuses ``job``: stopped, or claimed by another job that blocks."""
    if not current.is_active:
        return True
    holder = current.in_progress_job_id
    if holder in (None, job.job_id) or not current.may_be_busy(now):
        return False
    return blocks_new_backup(svc.jobs.get(holder), now)
