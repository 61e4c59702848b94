"""The scheduling tick: one job and one task per slot, whatever the timer does (twice, late, after a crash)."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import datetime, time, timedelta, timezone

import pytest

from shared.adapters.table_protection import item_partition
from shared.domain.jobs import JobPhase, JobStatus
from shared.domain.policy import EnhancedSchedule, Frequency, Policy, StandardSchedule
from shared.domain.task import Trigger
from shared.errors import TransientError
from shared.services.protection import create_policy, disable_protection, enable_protection
from shared.services.scheduling import run_scheduling_tick
from tests.fakes import RecordingTaskQueue
from tests.scheduling.conftest import T0

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
    """A queue whose first send dies, like a host crash between creating jobs and sending tasks."""

    def __init__(self):
        super().__init__()
        self.crashes = 1

    def send(self, tasks):
        if self.crashes:
            self.crashes -= 1
            raise TransientError("host died")
        return super().send(tasks)


def test_crash_between_creating_jobs_and_sending_tasks_is_repaired_by_the_next_tick(make_services):
    """After a crash that left jobs without tasks, the next tick sends each task exactly once."""
    svc = make_services(vms=("vm1", "vm2", "vm3"), task_queue=CrashingQueue())
    protect(svc, "vm1", "vm2", "vm3")
    svc.clock.current = datetime(2025, 6, 2, 22, 30, 1, tzinfo=UTC)
    with pytest.raises(TransientError):
        run_scheduling_tick(svc)
    assert len(svc.jobs.jobs) == 3 and svc.task_queue.sent == []
    svc.clock.advance(timedelta(minutes=5))
    result = run_scheduling_tick(svc)
    assert (result.jobs_created, result.tasks_sent) == (0, 3)
    assert run_scheduling_tick(svc).tasks_sent == 0
    one_per_slot(svc)


def tick_that_dies_before_moving_watermarks(svc) -> None:
    """Run the 22:30 tick with the host dying after jobs and tasks, before the watermarks are saved."""
    store = svc.protected_items
    save_many = store.save_many
    store.save_many = lambda items: (_ for _ in ()).throw(TransientError("host died"))
    svc.clock.current = datetime(2025, 6, 2, 22, 30, 1, tzinfo=UTC)
    with pytest.raises(TransientError):
        run_scheduling_tick(svc)
    store.save_many = save_many


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
    assert svc.protected_items.get("vm1").last_slot == datetime(2025, 6, 2, 22, 30, tzinfo=UTC)


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


def test_daily_slots_need_no_job_reads(make_services):
    """Yesterday's job cannot block today's slot, so a daily tick costs no per-item job reads."""
    svc = make_services(vms=("vm1", "vm2"))
    protect(svc, "vm1", "vm2")
    svc.clock.current = datetime(2025, 6, 2, 22, 30, tzinfo=UTC)
    run_scheduling_tick(svc)
    svc.clock.current = datetime(2025, 6, 3, 22, 30, tzinfo=UTC)
    result = run_scheduling_tick(svc)
    assert (result.jobs_created, result.job_store_calls) == (2, 1)


def test_a_stale_in_progress_job_does_not_block_forever(make_services):
    """A job stuck InProgress for longer than the extension's 140-minute limit no longer blocks backups."""
    svc = make_services(at=datetime(2025, 6, 2, 17, 0, tzinfo=UTC))
    create_policy(svc, Policy("four", EnhancedSchedule(4, time(0, 0), 24), "UTC", 7))
    protect(svc, policy="four", initial=True)
    run_scheduling_tick(svc)                                          # initial backup at 17:00, never ends
    svc.clock.current = datetime(2025, 6, 2, 20, 0, tzinfo=UTC)       # 3 h later: stale
    assert run_scheduling_tick(svc).jobs_created == 1
    one_per_slot(svc)


def test_finished_previous_backup_lets_the_next_slot_run(make_services):
    """Once the previous backup completed, the next slot runs normally."""
    svc = make_services()
    protect(svc, initial=True)
    run_scheduling_tick(svc)
    (initial,) = svc.task_queue.sent
    svc.jobs.update(initial.job_id, lambda j: replace(j, status=JobStatus.COMPLETED))
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


def test_many_items_are_processed_in_pages_and_transactions(make_services):
    """250 protected VMs get 250 jobs in a handful of Table transactions and queue batches."""
    names = [f"vm{i:03d}" for i in range(250)]
    svc = make_services(vms=names)
    protect(svc, *names)
    svc.clock.current = datetime(2025, 6, 2, 22, 30, tzinfo=UTC)
    result = run_scheduling_tick(svc, page_size=100)
    assert (result.items_seen, result.jobs_created, result.tasks_sent) == (250, 250, 250)
    assert result.pages_read == 3
    ordered = sorted(names, key=lambda n: (item_partition(n), n))
    groups = sum(len({item_partition(n) for n in ordered[i:i + 100]}) for i in range(0, 250, 100))
    assert result.item_transactions == groups          # one transaction per partition within a page
    assert result.queue_operations == 3
    one_per_slot(svc)


def test_crash_then_downtime_past_the_next_slot_leaves_no_orphan_job(make_services):
    """A job created just before a crash, whose slot a later tick supersedes, is cancelled, not left hanging."""
    svc = make_services(task_queue=CrashingQueue())
    create_policy(svc, Policy("four", EnhancedSchedule(4, time(0, 0), 24), "UTC", 7))
    protect(svc, policy="four")
    svc.clock.current = datetime(2025, 6, 2, 16, 0, 5, tzinfo=UTC)
    with pytest.raises(TransientError):
        run_scheduling_tick(svc)                      # job for 16:00 created, its task never sent
    svc.clock.current = datetime(2025, 6, 2, 20, 0, 5, tzinfo=UTC)
    run_scheduling_tick(svc)
    jobs = {j.slot.hour: j for j in svc.jobs.jobs.values()}
    assert jobs[16].status is JobStatus.CANCELLED and jobs[20].status is JobStatus.IN_PROGRESS
    assert [t.slot.hour for t in svc.task_queue.sent] == [20]


def test_overlapping_ticks_for_the_same_slot_keep_the_job(make_services):
    """A second tick that runs while the first is saving (it wins the item's write) leaves the slot's
    one job InProgress: the loser re-reads the item and finds its own job there."""
    svc = make_services(vms=("vm1", "vm2"))
    protect(svc, "vm1", "vm2")
    svc.clock.current = datetime(2025, 6, 2, 22, 30, 2, tzinfo=UTC)
    store = svc.protected_items
    real_save_many = store.save_many

    def other_tick_first(items):
        store.save_many = real_save_many
        run_scheduling_tick(svc)                 # the overlapping tick plans, finds the jobs, saves first
        return real_save_many(items)

    store.save_many = other_tick_first
    run_scheduling_tick(svc)
    assert sorted(j.status.value for j in svc.jobs.jobs.values()) == ["InProgress", "InProgress"]
    for name in ("vm1", "vm2"):
        item = svc.protected_items.get(name)
        assert svc.jobs.get(item.in_progress_job_id).slot == svc.clock.current.replace(second=0)
        assert item.skipped == []
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
        latest = svc.jobs.get(svc.protected_items.get("vm1").in_progress_job_id)
        assert latest.trigger == "Initial" and latest.job_id != first.job_id
        svc.jobs.update(latest.job_id, lambda j: replace(j, status=JobStatus.COMPLETED, phase=JobPhase.DONE))
    assert Counter(j.trigger for j in svc.jobs.jobs.values()) == Counter({"Initial": 3})
