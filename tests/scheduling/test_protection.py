"""Protection use cases: enable, change policy, disable, list, and on-demand backups with Azure's limits."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, time, timedelta, timezone

import pytest

from shared.clock import FixedClock
from shared.domain.jobs import Job, JobStatus
from shared.domain.policy import EnhancedSchedule, Frequency, Policy, StandardSchedule
from shared.domain.protection import ProtectionState
from shared.domain.shards import shard_of
from shared.domain.task import Trigger
from shared.errors import ConflictError, NotFoundError, TransientError, ValidationError
from shared.ports import JobQuery
from shared.services.protection import (backup_now, change_policy, create_policy, disable_protection,
                                        enable_protection, get_protected_item, list_protected_items, set_policy)
from shared.services.scheduling import run_scheduling_tick
from tests.fakes import InMemoryJobStore
from tests.scheduling.conftest import T0

UTC = timezone.utc


def test_enable_takes_disks_from_the_inventory(make_services):
    """Protecting a VM records its disks (OS disk as LUN -1) and the DefaultPolicy."""
    svc = make_services()
    item = enable_protection(svc, "VM1")
    stored = svc.protected_items.get("vm1")
    assert (stored.vm_name, stored.policy_name, stored.disk_luns) == ("vm1", "DefaultPolicy", (-1, 0))
    assert stored.initial_backup_pending and item.state is ProtectionState.PROTECTED


def test_enable_refuses_unknown_vm_and_policy_and_double_protection(make_services):
    """Unknown VMs and policies are named in the error; protecting twice is a conflict."""
    svc = make_services()
    with pytest.raises(NotFoundError, match="nosuchvm"):
        enable_protection(svc, "nosuchvm")
    with pytest.raises(NotFoundError, match="Gold"):
        enable_protection(svc, "vm1", "Gold")
    enable_protection(svc, "vm1")
    with pytest.raises(ConflictError, match="already protected"):
        enable_protection(svc, "vm1")


def test_list_shows_last_backup_and_next_slot(make_services):
    """`protection list` shows each item's last backup status and its next scheduled time."""
    svc = make_services(vms=("vm1", "vm2"))
    enable_protection(svc, "vm1")
    enable_protection(svc, "vm2", initial_backup=False)
    run_scheduling_tick(svc)
    statuses = {s.item.vm_name: s for s in list_protected_items(svc)}
    assert statuses["vm1"].last_job.status is JobStatus.IN_PROGRESS
    assert statuses["vm2"].last_job is None
    assert statuses["vm2"].next_slot == datetime(2025, 6, 2, 22, 30, tzinfo=UTC)


@pytest.mark.parametrize("store", ["memory", "table"])
def test_list_finds_each_items_last_backup_as_the_item_alone_does(make_services, store):
    """The listing's last job of each item is the one `protection show` finds for it alone: the
    newest backup since protection began, a restore or an older backup never, VM names in any case,
    past 2,500 newer jobs of other VMs; one walk per shard of items, never a query per VM."""
    vms = ("vm1", "vm2", "vm3", "vm4")
    overrides = {} if store == "table" else {"jobs": InMemoryJobStore()}
    svc = make_services(at=T0 - timedelta(days=10), vms=vms, **overrides)
    enable_protection(svc, "vm1", initial_backup=False)
    enable_protection(svc, "vm3", initial_backup=False)
    enable_protection(svc, "vm4", initial_backup=False)
    svc.clock = FixedClock(T0 - timedelta(days=2))
    enable_protection(svc, "vm2", initial_backup=False)
    svc.clock = FixedClock(T0)

    def backup(vm: str, ago: timedelta) -> Job:
        return Job.new_backup(vm_name=vm, slot=T0 - ago, now=T0 - ago)

    wanted = {"vm1": backup("vm1", timedelta(days=1)), "vm3": backup("VM3", timedelta(days=9))}
    jobs = [backup("vm1", timedelta(days=3)), wanted["vm1"], wanted["vm3"],
            replace(backup("vm1", timedelta(hours=12)), operation="Restore"),
            backup("vm2", timedelta(days=5)),            # before vm2's protection began
            *(backup(f"other{i:04d}", timedelta(minutes=i % 600)) for i in range(2500))]
    assert all(svc.jobs.create_many_if_absent(jobs))

    asked: list[JobQuery] = []
    query = svc.jobs.query
    svc.jobs.query = lambda q: asked.append(q) or query(q)       # type: ignore[method-assign]
    listed = {s.item.vm_name: s.last_job for s in list_protected_items(svc)}
    walked = {shard_of(vm) for vm in vms}
    assert all(q.vm_name is None and q.shard in walked for q in asked) and len(asked) <= 3 * len(walked)
    svc.jobs.query = query                                       # type: ignore[method-assign]
    alone = {vm: get_protected_item(svc, vm).last_job for vm in vms}
    assert {vm: job and job.job_id for vm, job in listed.items()} == \
           {vm: job and job.job_id for vm, job in alone.items()} == \
           {"vm1": wanted["vm1"].job_id, "vm2": None, "vm3": wanted["vm3"].job_id, "vm4": None}


def test_change_policy_moves_the_item_and_refuses_enhanced_to_standard(make_services):
    """An item moves to another policy; from Enhanced back to Standard is refused, as in Azure."""
    svc = make_services()
    create_policy(svc, Policy("hourly", EnhancedSchedule(4, time(0, 0), 24), "Europe/Berlin", 7))
    enable_protection(svc, "vm1")
    assert change_policy(svc, "vm1", "hourly").policy_name == "hourly"
    with pytest.raises(ValidationError) as caught:
        change_policy(svc, "vm1", "DefaultPolicy")
    assert caught.value.field == "policy_name"


def test_enhanced_policy_cannot_become_standard(make_services):
    """Setting an Enhanced policy to a daily Standard schedule is refused naming the schedule."""
    svc = make_services()
    create_policy(svc, Policy("hourly", EnhancedSchedule(), "UTC", 7))
    with pytest.raises(ValidationError) as caught:
        set_policy(svc, Policy("hourly", StandardSchedule(Frequency.DAILY, time(1, 0))))
    assert caught.value.field == "schedule"


def test_disable_keeps_or_soft_deletes_recovery_points(make_services):
    """Disabling stops protection; with --delete-backup-data the item is soft-deleted for 14 days."""
    svc = make_services(vms=("vm1", "vm2"))
    enable_protection(svc, "vm1")
    enable_protection(svc, "vm2")
    assert disable_protection(svc, "vm1").state is ProtectionState.STOPPED
    deleted = disable_protection(svc, "vm2", delete_backup_data=True)
    assert deleted.state is ProtectionState.SOFT_DELETED and deleted.purge_after == T0 + timedelta(days=14)
    assert enable_protection(svc, "vm1").state is ProtectionState.PROTECTED     # resume


def test_backup_now_creates_the_job_and_sends_its_task(make_services):
    """backup-now queues an OnDemand job at once, retained until the given date."""
    svc = make_services()
    enable_protection(svc, "vm1", initial_backup=False)
    keep = datetime(2025, 7, 1, tzinfo=UTC)
    job = backup_now(svc, "vm1", retain_until=keep)
    (task,) = svc.task_queue.sent
    assert (task.job_id, task.trigger, task.retain_until, task.not_before) == (job.job_id, Trigger.ON_DEMAND, keep,
                                                                               None)
    assert svc.jobs.get(job.job_id).status is JobStatus.IN_PROGRESS
    assert svc.protected_items.get("vm1").in_progress_job_id == job.job_id


def test_backup_now_refuses_while_a_backup_is_in_progress(make_services):
    """A second backup-now while the first runs fails like Azure: UserErrorBackupOperationInProgress."""
    svc = make_services()
    enable_protection(svc, "vm1", initial_backup=False)
    backup_now(svc, "vm1", retain_until=None)
    svc.clock.advance(timedelta(minutes=1))
    with pytest.raises(ConflictError, match="UserErrorBackupOperationInProgress"):
        backup_now(svc, "vm1", retain_until=None)
    assert len(svc.task_queue.sent) == 1


class TickingClock(FixedClock):
    """A clock that moves on a millisecond each time it is read, so requests made at once are distinct."""

    def __init__(self, current: datetime) -> None:
        super().__init__(current)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            self.current += timedelta(milliseconds=1)
            return self.current


def test_backup_now_requests_made_at_once_start_one_backup(make_services):
    """Six backup-now requests for one VM at once: one is accepted and holds the VM for its task; the others
    are refused with UserErrorBackupOperationInProgress naming it, and leave no job and no task behind."""
    from shared.services.claims import take_claim

    svc = make_services(clock=TickingClock(T0))
    enable_protection(svc, "vm1", initial_backup=False)
    start = threading.Barrier(6)

    def request(_):
        start.wait(timeout=60)
        try:
            return backup_now(svc, "vm1", retain_until=None)
        except ConflictError as exc:
            return exc

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(request, range(6)))
    [job] = [o for o in outcomes if isinstance(o, Job)]
    refusals = [str(o) for o in outcomes if not isinstance(o, Job)]
    assert len(refusals) == 5 and all("UserErrorBackupOperationInProgress" in r and job.job_id in r for r in refusals)
    assert list(svc.jobs.jobs) == [job.job_id]
    assert [t.job_id for t in svc.task_queue.sent] == [job.job_id]
    # Its own task, when the worker takes it, finds the VM its own.
    assert take_claim(svc, svc.jobs.get(job.job_id), svc.clock.now()) is None


def test_backup_now_allows_three_successes_a_day(make_services):
    """After three successful on-demand backups in a UTC day, a fourth is refused until midnight."""
    svc = make_services()
    enable_protection(svc, "vm1", initial_backup=False)
    for _ in range(3):
        job = backup_now(svc, "vm1", retain_until=None)
        svc.jobs.update(job.job_id, lambda j: replace(j, status=JobStatus.COMPLETED))
        svc.clock.advance(timedelta(minutes=10))
    with pytest.raises(ConflictError, match="3 successful"):
        backup_now(svc, "vm1", retain_until=None)
    svc.clock.current = datetime(2025, 6, 3, 0, 1, tzinfo=UTC)
    backup_now(svc, "vm1", retain_until=None)


def test_backup_now_allows_nine_attempts_a_day(make_services):
    """Failed on-demand backups count too: the tenth attempt in a day is refused."""
    svc = make_services()
    enable_protection(svc, "vm1", initial_backup=False)
    for _ in range(9):
        job = backup_now(svc, "vm1", retain_until=None)
        svc.jobs.update(job.job_id, lambda j: replace(j, status=JobStatus.FAILED))
        svc.clock.advance(timedelta(minutes=10))
    with pytest.raises(ConflictError, match="9 on-demand backup attempts"):
        backup_now(svc, "vm1", retain_until=None)


def test_backup_now_refuses_a_past_retain_until_and_unprotected_vms(make_services):
    """A retain-until in the past names the field; an unprotected VM says how to protect it."""
    svc = make_services(vms=("vm1", "vm2"))
    enable_protection(svc, "vm1")
    with pytest.raises(ValidationError) as caught:
        backup_now(svc, "vm1", retain_until=T0 - timedelta(days=1))
    assert caught.value.field == "retain_until"
    with pytest.raises(NotFoundError, match="enable-for-vm"):
        backup_now(svc, "vm2", retain_until=None)


def test_scheduled_slot_is_skipped_while_an_on_demand_backup_runs(make_services):
    """An on-demand backup running at 22:30 makes the scheduler skip that slot and record why."""
    svc = make_services()
    enable_protection(svc, "vm1", initial_backup=False)
    svc.clock.current = datetime(2025, 6, 2, 22, 20, tzinfo=UTC)
    job = backup_now(svc, "vm1", retain_until=None)
    svc.clock.current = datetime(2025, 6, 2, 22, 30, tzinfo=UTC)
    assert run_scheduling_tick(svc).jobs_created == 0
    (skip,) = get_protected_item(svc, "vm1").item.skipped
    assert job.job_id in skip.reason


def _backup_now_during(svc, port, method, when=lambda *args, **kwargs: True):
    """Run backup-now when the tick reaches ``port.method`` (called so that ``when``), then let the tick
    go on; the list it returns gets backup-now's job, or its refusal."""
    real, outcome = getattr(port, method), []

    def backup_now_first(*args, **kwargs):
        if not when(*args, **kwargs):
            return real(*args, **kwargs)
        setattr(port, method, real)
        try:
            outcome.append(backup_now(svc, "vm1", retain_until=None))
        except ConflictError as exc:
            outcome.append(exc)
        return real(*args, **kwargs)

    setattr(port, method, backup_now_first)
    return outcome


@pytest.mark.parametrize("during", ["creating its job", "saving its progress"])
def test_on_demand_backup_racing_the_scheduler_leaves_one_backup_in_progress(make_services, during):
    """backup-now while the tick plans the same VM, before it created its job or after it sent its task:
    the request holds the VM before the worker takes the scheduled task, so that task gives way, naming
    the on-demand backup. One backup of the VM runs."""
    from shared.services.dispatch import Outcome, handle_snapshot_task
    from tests.fakes import RecordingDispatcher

    svc = make_services(dispatcher=RecordingDispatcher())
    enable_protection(svc, "vm1", initial_backup=False)
    svc.clock.current = datetime(2025, 6, 2, 22, 30, tzinfo=UTC)
    if during == "creating its job":
        outcome = _backup_now_during(svc, svc.jobs, "create_many_if_absent")
    else:
        outcome = _backup_now_during(svc, svc.progress, "update", lambda shard, *_, **__: shard == shard_of("vm1"))
    run_scheduling_tick(svc, fan_out=False)
    [on_demand] = outcome
    assert on_demand.trigger == "OnDemand"
    [scheduled_task] = [t for t in svc.task_queue.sent if t.job_id != on_demand.job_id]
    delivered = handle_snapshot_task(svc, scheduled_task.to_json().encode(), message_id=scheduled_task.message_id,
                                     delivery_count=1)
    scheduled = svc.jobs.get(scheduled_task.job_id)
    assert delivered.outcome is Outcome.DUPLICATE and scheduled.status is JobStatus.CANCELLED
    assert on_demand.job_id in " ".join(scheduled.notes) and svc.dispatcher.sent == []
    running = [j for j in svc.jobs.jobs.values() if j.status is JobStatus.IN_PROGRESS]
    assert [j.job_id for j in running] == [on_demand.job_id]


class UnreachableQueue:
    def send(self, tasks):
        raise TransientError("could not send 1 task(s) to queue snapshot-tasks: ServiceBusConnectionError")


def test_backup_now_whose_task_cannot_be_queued_fails_its_job_and_blocks_nothing(make_services):
    """A Service Bus hiccup during backup-now: the job says Failed with why and what to do, it is the VM's
    last backup (with that reason), nothing is left in progress, and the next backup-now runs (the failed
    ones count for no limit)."""
    from shared.domain import remediation

    svc = make_services()
    enable_protection(svc, "vm1", initial_backup=True)
    good = backup_now(svc, "vm1", retain_until=None)
    svc.jobs.update(good.job_id, lambda j: replace(j, status=JobStatus.COMPLETED))
    working = svc.task_queue
    svc.task_queue = UnreachableQueue()
    for _ in range(9):
        svc.clock.advance(timedelta(minutes=1))
        with pytest.raises(TransientError):
            backup_now(svc, "vm1", retain_until=None)
    failed = [j for j in svc.jobs.jobs.values() if j.status is JobStatus.FAILED]
    assert len(failed) == 9
    assert all(j.end_time and j.errors[0].error_code == remediation.TASK_NOT_QUEUED for j in failed)
    assert all("ServiceBusConnection" in " ".join(j.errors[0].recommendations) for j in failed)
    item = get_protected_item(svc, "vm1")
    assert (item.item.last_job_id, item.item.in_progress_job_id) == (good.job_id, good.job_id)
    assert svc.claims.get("vm1").on_demand == (good.job_id,)      # the VM's claim gave them back too
    newest = max(failed, key=lambda j: j.slot)
    assert (item.last_job.job_id, item.last_job.errors[0].error_code) == (newest.job_id, remediation.TASK_NOT_QUEUED)
    svc.task_queue = working
    again = backup_now(svc, "vm1", retain_until=None)
    assert [t.job_id for t in svc.task_queue.sent] == [good.job_id, again.job_id]


def test_backup_now_that_finds_protection_stopped_meanwhile_leaves_the_vm_free(make_services):
    """Protection stopped between backup-now's read and its write: the request is refused, writes no job,
    and gives the VM's claim back, so a backup-now after protection is enabled again is not refused."""
    svc = make_services()
    enable_protection(svc, "vm1", initial_backup=False)
    update = svc.protected_items.update

    def stopped_first(vm_name, change):
        svc.protected_items.update = update
        disable_protection(svc, "vm1")
        return update(vm_name, change)

    svc.protected_items.update = stopped_first
    with pytest.raises(ConflictError, match="stopped meanwhile"):
        backup_now(svc, "vm1", retain_until=None)
    assert svc.jobs.jobs == {} and svc.claims.get("vm1").holder is None
    enable_protection(svc, "vm1", initial_backup=False)
    svc.clock.advance(timedelta(minutes=1))
    assert backup_now(svc, "vm1", retain_until=None).trigger == "OnDemand"


def test_backup_now_with_a_malformed_queue_connection_creates_nothing(make_services):
    """A ServiceBusConnection that is not a connection string is reported before any job exists."""
    from shared.bootstrap import Services
    from shared.errors import ConfigurationError

    base = make_services()
    svc = Services(base.settings.__class__.from_env({
        "BackupStorage": "UseDevelopmentStorage=true", "ServiceBusConnection": "not a connection string"}),
        clock=base.clock, jobs=base.jobs, protected_items=base.protected_items, policies=base.policies,
        inventory=base.inventory)
    enable_protection(svc, "vm1", initial_backup=False)
    with pytest.raises(ConfigurationError, match="ServiceBusConnection"):
        backup_now(svc, "vm1", retain_until=None)
    assert svc.jobs.jobs == {} and svc.protected_items.get("vm1").in_progress_job_id is None
