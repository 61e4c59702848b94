"""The scheduling tick: one job and one task per slot, whatever the timer does (twice, late, after a crash)."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import datetime, time, timedelta, timezone

import pytest

from shared.domain.jobs import JobPhase, JobStatus
from shared.domain.policy import EnhancedSchedule, Frequency, Policy, StandardSchedule
from shared.domain.shards import shard_of
from shared.domain.task import Trigger
from shared.errors import TransientError
from shared.services.protection import backup_now, create_policy, disable_protection, enable_protection
from shared.ports import JobQuery
from shared.services.scheduling import run_scheduling_tick
from tests.fakes import InMemoryJobStore, RecordingTaskQueue
from tests.scheduling.conftest import T0, HostDied, dies

UTC = timezone.utc


def one_per_slot(svc) -> None:
    """Every job has exactly one task, every slot of an item exactly one job."""
    jobs = list(svc.jobs.jobs.values())
    assert Counter((j.vm_name, j.slot, j.trigger) for j in jobs).most_common(1)[0][1] == 1
    sent = Counter(t.job_id for t in svc.task_queue.sent)
    assert sent == Counter({j.job_id: 1 for j in jobs})


def protect(svc, *names, policy="DefaultPolicy", initial=False):
    for name in names or ("vm1",):
        enable_protection(svc, name, policy, initial_backup=initial)


def test_initial_backup_runs_at_the_next_tick(make_services):
    """A newly protected VM gets its first backup at the next timer tick, trigger Initial."""
    svc = make_services()
    protect(svc, "vm1", initial=True)
    svc.clock.advance(timedelta(minutes=5))
    result = run_scheduling_tick(svc)
    assert (result.jobs_created, result.tasks_sent) == (1, 1)
    (task,) = svc.task_queue.sent
    assert (task.trigger, task.slot, task.vm_name) == (Trigger.INITIAL, T0, "vm1")
    assert svc.protected_items.get("vm1").initial_backup_pending is False
    one_per_slot(svc)


def test_no_initial_backup_waits_for_the_first_slot(make_services):
    """With the initial backup turned off, nothing runs until the policy's first slot (22:30 UTC)."""
    svc = make_services()
    protect(svc, "vm1")
    assert run_scheduling_tick(svc).jobs_created == 0
    svc.clock.current = datetime(2025, 6, 2, 22, 30, tzinfo=UTC)
    run_scheduling_tick(svc)
    assert [(t.trigger, t.slot) for t in svc.task_queue.sent] == [(Trigger.SCHEDULED, svc.clock.current)]


def test_timer_fired_twice_for_the_same_tick_sends_one_task(make_services):
    """The timer firing twice at the same moment still gives one job and one task for the slot."""
    svc = make_services(vms=("vm1", "vm2"))
    protect(svc, "vm1", "vm2")
    svc.clock.current = datetime(2025, 6, 2, 22, 30, 2, tzinfo=UTC)
    first = run_scheduling_tick(svc)
    second = run_scheduling_tick(svc)
    assert (first.jobs_created, second.jobs_created, second.tasks_sent) == (2, 0, 0)
    one_per_slot(svc)


def test_slot_just_ahead_is_sent_early_for_its_exact_time(make_services):
    """A tick at 22:25 sends the 22:30 backup scheduled for 22:30; the 22:30 tick adds nothing."""
    svc = make_services()
    protect(svc)
    svc.clock.current = datetime(2025, 6, 2, 22, 25, tzinfo=UTC)
    run_scheduling_tick(svc)
    (task,) = svc.task_queue.sent
    assert task.not_before == datetime(2025, 6, 2, 22, 30, tzinfo=UTC)
    svc.clock.advance(timedelta(minutes=5))
    assert run_scheduling_tick(svc).tasks_sent == 0
    one_per_slot(svc)


class CrashingQueue(RecordingTaskQueue):
    """A queue whose first sends fail: the host dies there (a crash between creating jobs and sending
    tasks), or, given ``error``, Service Bus cannot be reached."""

    def __init__(self, crashes=1, error=HostDied("host died")):
        super().__init__()
        self.crashes, self.error = crashes, error

    def send(self, tasks):
        if self.crashes:
            self.crashes -= 1
            raise self.error
        return super().send(tasks)


def test_crash_between_creating_jobs_and_sending_tasks_is_repaired_by_the_next_tick(make_services):
    """After a crash that left jobs without tasks, the next tick sends each task exactly once."""
    svc = make_services(vms=("vm1", "vm2", "vm3"), task_queue=CrashingQueue())
    protect(svc, "vm1", "vm2", "vm3")
    svc.clock.current = datetime(2025, 6, 2, 22, 30, 1, tzinfo=UTC)
    with pytest.raises(HostDied):
        run_scheduling_tick(svc, fan_out=False)
    assert svc.jobs.jobs and svc.task_queue.sent == []
    svc.task_queue.crashes = 0
    run_scheduling_tick(svc)          # the other shards' jobs, planned by the tick that died no more
    svc.clock.advance(timedelta(minutes=5))
    assert run_scheduling_tick(svc).tasks_sent == 0
    assert len(svc.jobs.jobs) == 3
    one_per_slot(svc)


def test_service_bus_down_for_seconds_during_a_tick_is_ridden_out(make_services):
    """Service Bus failing a few times during the tick: it tries again, and every VM still gets its task once."""
    svc = make_services(vms=("vm1", "vm2", "vm3"), task_queue=CrashingQueue(3, TransientError("no connection")))
    protect(svc, "vm1", "vm2", "vm3")
    svc.clock.current = datetime(2025, 6, 2, 22, 30, 1, tzinfo=UTC)
    pauses = []
    result = run_scheduling_tick(svc, sleep=pauses.append)
    assert (result.jobs_created, result.tasks_sent, result.failed, result.stopped) == (3, 3, 0, 0)
    assert result.retries == 3 and pauses
    one_per_slot(svc)


def test_service_bus_down_for_the_whole_tick_is_repaired_by_the_next(make_services):
    """Service Bus down for longer than a tick waits: the tick reports the VMs it could not plan instead of
    dying, and the next tick sends each of their tasks once."""
    svc = make_services(vms=("vm1", "vm2", "vm3"), task_queue=CrashingQueue(100, TransientError("no connection")))
    protect(svc, "vm1", "vm2", "vm3")
    svc.clock.current = datetime(2025, 6, 2, 22, 30, 1, tzinfo=UTC)
    result = run_scheduling_tick(svc, sleep=lambda seconds: None)
    shards = len({shard_of(name) for name in ("vm1", "vm2", "vm3")})
    assert (result.jobs_created, result.tasks_sent, result.failed, result.stopped) == (3, 0, 3, shards)
    svc.task_queue.crashes = 0
    svc.clock.advance(timedelta(minutes=5))
    result = run_scheduling_tick(svc)
    assert (result.jobs_created, result.tasks_sent) == (0, 3)
    assert run_scheduling_tick(svc).tasks_sent == 0
    one_per_slot(svc)


def tick_that_dies_before_moving_watermarks(svc) -> None:
    """Run the 22:30 tick with the host dying after jobs and tasks, before the shard's progress is saved."""
    progress, save = svc.progress, svc.progress.update
    progress.update = lambda shard, change, **kw: dies() if shard == shard_of("vm1") else save(shard, change, **kw)
    svc.clock.current = datetime(2025, 6, 2, 22, 30, 1, tzinfo=UTC)
    try:
        with pytest.raises(HostDied):
            run_scheduling_tick(svc, fan_out=False)
    finally:
        del progress.update
    assert len(svc.task_queue.sent) == 1


def test_crash_after_sending_before_watermarks_does_not_double_the_task(make_services):
    """A crash after the tasks went out but before watermarks moved: the re-fire's re-send is dropped."""
    svc = make_services()
    protect(svc)
    tick_that_dies_before_moving_watermarks(svc)
    result = run_scheduling_tick(svc)
    assert result.tasks_sent == 1                 # re-sent: same message id...
    assert len(svc.task_queue.sent) == 1          # ...so the queue dropped it
    one_per_slot(svc)


def test_job_already_dispatched_is_not_sent_again_after_a_crash(make_services):
    """If the worker already picked the job up, the repair tick leaves it alone."""
    svc = make_services()
    protect(svc)
    tick_that_dies_before_moving_watermarks(svc)
    (job,) = svc.jobs.jobs.values()
    svc.jobs.update(job.job_id, lambda j: replace(j, phase=JobPhase.DISPATCHED))
    assert run_scheduling_tick(svc).tasks_sent == 0
    assert svc.progress.get(shard_of("vm1")).settled_until >= datetime(2025, 6, 2, 22, 30, tzinfo=UTC)
    svc.clock.advance(timedelta(minutes=5))
    assert (run_scheduling_tick(svc).due, len(svc.jobs.jobs), len(svc.task_queue.sent)) == (0, 1, 1)


def test_an_hour_of_downtime_still_backs_up_the_missed_slot_once(make_services):
    """The app was down from 22:00 to 23:30: the 22:30 backup runs at 23:30, exactly once."""
    svc = make_services()
    protect(svc)
    svc.clock.current = datetime(2025, 6, 2, 22, 0, tzinfo=UTC)
    run_scheduling_tick(svc)          # 22:30 is not within the 5-minute lookahead
    assert svc.task_queue.sent == []
    svc.clock.current = datetime(2025, 6, 2, 23, 30, tzinfo=UTC)
    result = run_scheduling_tick(svc, past_due=True)
    assert [t.slot for t in svc.task_queue.sent] == [datetime(2025, 6, 2, 22, 30, tzinfo=UTC)]
    assert svc.task_queue.sent[0].not_before is None
    assert result.slots_skipped == 0
    run_scheduling_tick(svc)
    one_per_slot(svc)


def test_downtime_beyond_the_catch_up_bound_records_the_skipped_slots(make_services):
    """After three days down, only the latest slot runs; older ones are listed as missed."""
    svc = make_services()
    protect(svc)
    svc.clock.current = datetime(2025, 6, 5, 23, 0, tzinfo=UTC)
    result = run_scheduling_tick(svc)
    assert [t.slot.day for t in svc.task_queue.sent] == [5]
    item = svc.protected_items.get("vm1")
    assert [(s.slot.day, s.reason.split(":")[0]) for s in item.skipped] == [(2, "missed"), (3, "missed"),
                                                                             (4, "missed")]
    assert result.slots_skipped == 3


def test_enhanced_catch_up_runs_the_latest_slot_and_records_the_rest(make_services):
    """An every-4-hours policy after 9 hours down runs one backup, not a burst of three."""
    svc = make_services()
    create_policy(svc, Policy("four", EnhancedSchedule(4, time(0, 0), 24), "UTC", 7))
    protect(svc, policy="four")
    svc.clock.current = datetime(2025, 6, 2, 21, 0, tzinfo=UTC)     # slots 16:00 and 20:00 are due
    run_scheduling_tick(svc)
    assert [t.slot.hour for t in svc.task_queue.sent] == [20]
    assert [(s.slot.hour, s.reason) for s in svc.protected_items.get("vm1").skipped] == [
        (16, "superseded by a later slot")]


def test_slot_is_skipped_while_the_previous_backup_is_in_progress(make_services):
    """The initial backup still running at the first slot makes the scheduler skip that slot and say why."""
    svc = make_services(at=datetime(2025, 6, 2, 19, 30, tzinfo=UTC))
    create_policy(svc, Policy("four", EnhancedSchedule(4, time(0, 0), 24), "UTC", 7))
    protect(svc, policy="four", initial=True)
    svc.clock.current = datetime(2025, 6, 2, 19, 35, tzinfo=UTC)
    run_scheduling_tick(svc)
    (initial,) = svc.task_queue.sent
    svc.clock.current = datetime(2025, 6, 2, 20, 0, tzinfo=UTC)
    result = run_scheduling_tick(svc)
    assert result.jobs_created == 0 and result.slots_skipped == 1
    (skip,) = svc.protected_items.get("vm1").skipped
    assert skip.slot.hour == 20 and initial.job_id in skip.reason


class ReadCountingJobStore(InMemoryJobStore):
    """The in-memory job store, keeping which reads of jobs a tick made."""

    def __init__(self):
        super().__init__()
        self.reads = Counter()

    def query(self, query):
        self.reads["query"] += 1
        return super().query(query)

    def get(self, job_id):
        self.reads["get"] += 1
        return super().get(job_id)

    def get_many(self, job_ids):
        self.reads["get_many"] += 1
        return super().get_many(job_ids)


def test_daily_slots_need_no_job_reads(make_services):
    """Yesterday's job cannot block today's slot, so a daily fleet's tick reads no job at all: it only
    creates today's."""
    svc = make_services(vms=("vm1", "vm2"), jobs=ReadCountingJobStore())
    protect(svc, "vm1", "vm2")
    svc.clock.current = datetime(2025, 6, 2, 22, 30, tzinfo=UTC)
    run_scheduling_tick(svc)
    svc.clock.current = datetime(2025, 6, 3, 22, 30, tzinfo=UTC)
    svc.jobs.reads.clear()
    result = run_scheduling_tick(svc)
    assert (result.jobs_created, svc.jobs.reads) == (2, Counter())


def test_a_stale_in_progress_job_does_not_block_forever(make_services):
    """A job stuck InProgress for longer than the extension's 140-minute limit no longer blocks backups."""
    svc = make_services(at=datetime(2025, 6, 2, 17, 0, tzinfo=UTC))
    create_policy(svc, Policy("four", EnhancedSchedule(4, time(0, 0), 24), "UTC", 7))
    protect(svc, policy="four")
    stuck = backup_now(svc, "vm1", retain_until=None)                 # at 17:00, never ends
    svc.clock.current = datetime(2025, 6, 2, 20, 0, tzinfo=UTC)       # 3 h later: past its deadline
    assert run_scheduling_tick(svc).jobs_created == 1
    assert svc.jobs.get(stuck.job_id).status is JobStatus.IN_PROGRESS
    one_per_slot(svc)


def test_finished_previous_backup_lets_the_next_slot_run(make_services):
    """Once the previous backup completed, the next slot runs normally."""
    svc = make_services(at=datetime(2025, 6, 2, 22, 0, tzinfo=UTC))
    protect(svc)
    previous = backup_now(svc, "vm1", retain_until=None)
    svc.jobs.update(previous.job_id, lambda j: replace(j, status=JobStatus.COMPLETED, phase=JobPhase.DONE))
    svc.clock.current = datetime(2025, 6, 2, 22, 30, tzinfo=UTC)
    assert run_scheduling_tick(svc).jobs_created == 1


def test_stopped_protection_schedules_nothing(make_services):
    """After protection is disabled, no more backups are scheduled."""
    svc = make_services()
    protect(svc, initial=True)
    disable_protection(svc, "vm1")
    svc.clock.current = datetime(2025, 6, 3, 23, 0, tzinfo=UTC)
    assert run_scheduling_tick(svc).jobs_created == 0


def test_policy_change_does_not_rerun_todays_earlier_slot(make_services):
    """Moving the policy time earlier in the day does not trigger an immediate catch-up backup."""
    from shared.services.protection import set_policy

    svc = make_services()
    create_policy(svc, Policy("evening", StandardSchedule(Frequency.DAILY, time(22, 0))))
    protect(svc, policy="evening")
    svc.clock.current = datetime(2025, 6, 2, 15, 0, tzinfo=UTC)
    set_policy(svc, Policy("evening", StandardSchedule(Frequency.DAILY, time(9, 0))))
    assert run_scheduling_tick(svc).jobs_created == 0
    svc.clock.current = datetime(2025, 6, 3, 9, 0, tzinfo=UTC)
    assert run_scheduling_tick(svc).jobs_created == 1


def test_many_items_are_processed_in_pages_and_batches(make_services):
    """250 protected VMs get 250 jobs: each shard's items are read a page at a time, each page's tasks go
    in one queue batch, and no item is written for a plain scheduled backup."""
    names = [f"vm{i:03d}" for i in range(250)]
    svc = make_services(vms=names)
    protect(svc, *names)
    versions = {name: svc.protected_items.get(name).version for name in names}
    svc.clock.current = datetime(2025, 6, 2, 22, 30, tzinfo=UTC)
    result = run_scheduling_tick(svc, page_size=10)
    assert (result.shards, result.items_seen, result.jobs_created, result.tasks_sent) == (16, 250, 250, 250)
    per_shard = Counter(shard_of(name) for name in names)
    assert result.queue_operations == sum(-(-count // 10) for count in per_shard.values())
    assert {name: svc.protected_items.get(name).version for name in names} == versions
    one_per_slot(svc)


def test_crash_then_downtime_past_the_next_slot_leaves_no_orphan_job(make_services):
    """A job created just before a crash, whose slot a later tick supersedes, is cancelled, not left hanging."""
    svc = make_services(task_queue=CrashingQueue())
    create_policy(svc, Policy("four", EnhancedSchedule(4, time(0, 0), 24), "UTC", 7))
    protect(svc, policy="four")
    svc.clock.current = datetime(2025, 6, 2, 16, 0, 5, tzinfo=UTC)
    with pytest.raises(HostDied):
        run_scheduling_tick(svc)                      # job for 16:00 created, its task never sent
    svc.clock.current = datetime(2025, 6, 2, 20, 0, 5, tzinfo=UTC)
    run_scheduling_tick(svc)
    jobs = {j.slot.hour: j for j in svc.jobs.jobs.values()}
    assert jobs[16].status is JobStatus.CANCELLED and jobs[20].status is JobStatus.IN_PROGRESS
    assert [t.slot.hour for t in svc.task_queue.sent] == [20]


@pytest.mark.parametrize("step", ["create_many_if_absent", "progress"])
def test_overlapping_ticks_for_the_same_slot_keep_the_job(make_services, step):
    """A second tick that runs in the middle of the first (before it creates its jobs, or before it saves
    its progress) leaves each VM's one job for the slot InProgress, with one task and no slot skipped."""
    svc = make_services(vms=("vm1", "vm2"))
    protect(svc, "vm1", "vm2", initial=True)
    svc.clock.current = datetime(2025, 6, 2, 22, 30, 2, tzinfo=UTC)
    port, method = (svc.jobs, step) if step != "progress" else (svc.progress, "update")
    real = getattr(port, method)

    def other_tick_first(*args, **kwargs):
        setattr(port, method, real)
        run_scheduling_tick(svc)                 # the overlapping tick plans, creates, sends and saves first
        return real(*args, **kwargs)

    setattr(port, method, other_tick_first)
    run_scheduling_tick(svc)
    assert sorted(j.status.value for j in svc.jobs.jobs.values()) == ["InProgress", "InProgress"]
    for name in ("vm1", "vm2"):
        (job,) = svc.jobs.query(JobQuery(vm_name=name)).jobs
        assert (job.trigger, job.slot) == ("Initial", T0)
        item = svc.protected_items.get(name)
        assert [(s.slot, s.reason) for s in item.skipped] == [(T0.replace(hour=22, minute=30),
                                                               "the initial backup ran instead")]
        assert not item.initial_backup_pending
    one_per_slot(svc)


def test_an_on_demand_backup_stands_in_for_the_pending_initial_backup(make_services):
    """backup-now right after protecting a VM is its first backup: the next tick adds no initial one."""
    from shared.services.protection import backup_now

    svc = make_services()
    protect(svc, "vm1", initial=True)
    job = backup_now(svc, "vm1", retain_until=None)
    svc.jobs.update(job.job_id, lambda j: replace(j, status=JobStatus.COMPLETED, phase=JobPhase.DONE))
    svc.clock.advance(timedelta(minutes=2))
    assert run_scheduling_tick(svc).jobs_created == 0
    assert [j.trigger for j in svc.jobs.jobs.values()] == ["OnDemand"]
    assert svc.protected_items.get("vm1").initial_backup_pending is False


def test_protection_enabled_again_runs_its_promised_initial_backup(make_services):
    """A VM whose protection was stopped (or soft-deleted) and is enabled again with an initial backup
    gets that backup at the next tick, as a new job."""
    svc = make_services()
    protect(svc, "vm1", initial=True)
    svc.clock.advance(timedelta(minutes=5))
    run_scheduling_tick(svc)
    [first] = svc.jobs.jobs.values()
    svc.jobs.update(first.job_id, lambda j: replace(j, status=JobStatus.COMPLETED, phase=JobPhase.DONE))
    for delete in (False, True):
        disable_protection(svc, "vm1", delete_backup_data=delete)
        svc.clock.advance(timedelta(hours=1))
        enable_protection(svc, "vm1", "DefaultPolicy", initial_backup=True)
        svc.clock.advance(timedelta(minutes=5))
        result = run_scheduling_tick(svc)
        assert (result.jobs_created, result.tasks_sent) == (1, 1)
        latest = svc.jobs.query(JobQuery(vm_name="vm1", page_size=1)).jobs[0]
        assert latest.trigger == "Initial" and latest.job_id != first.job_id
        assert svc.task_queue.sent[-1].job_id == latest.job_id
        svc.jobs.update(latest.job_id, lambda j: replace(j, status=JobStatus.COMPLETED, phase=JobPhase.DONE))
    assert Counter(j.trigger for j in svc.jobs.jobs.values()) == Counter({"Initial": 3})
