"""The timer's retention run at fleet scale, on fakes: parts settled a page at a time from a cursor, a run
cut short resuming where it stopped, each job read once per run, the next run reading only what the
last left unsettled, stale requests, and when the timer hands the fleet to the retention workers."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.jobs import DiskResult, Job, JobStatus
from shared.domain.protection import ProtectedItem
from shared.domain.retention_progress import PARTS, RetentionRequest
from shared.domain.shards import shard_of
from shared.errors import TransientError
from shared.ports import JobPage, JobQuery
from shared.services.retention import JOB_MARGIN, retain_part, run_retention, start_retention
from tests.fakes import InMemoryJobStore
from tests.recovery.fakes import FakeSnapshots, FakeStatusArchive, InMemoryRecoveryPointStore
from tests.recovery.test_last_good_point import SHORT
from tests.recovery.test_retention_simulation import SETTINGS, backup, disks_of, timer_fakes, timer_run
from tests.scheduling.fakes import InMemoryPolicyStore, InMemoryProtectedItemStore

NOW = datetime(2026, 6, 15, 9, 0, tzinfo=timezone.utc)
VMS = [f"vm{n:02d}" for n in range(24)]
SHARD = Counter(shard_of(vm) for vm in VMS).most_common(1)[0][0]       # the shard with the most of them
IN_SHARD = sorted(vm for vm in VMS if shard_of(vm) == SHARD)


class ReadCountingJobs(InMemoryJobStore):
    """The fake job store, counting how often each job is handed to a reader."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    def query(self, query: JobQuery) -> JobPage:
        page = super().query(query)
        self.reads.update(job.job_id for job in page.jobs)
        return page


class HostDied(BaseException):
    """The process running an invocation was killed: nothing of the invocation runs after it."""


def _fleet(days: int = 12, seed: int = 3, snapshots: FakeSnapshots | None = None) -> Services:
    """24 protected VMs with a backup a day for ``days`` days before NOW: 1 in 8 failed, 1 in 10 needed a
    second attempt (each leaves snapshots of its job's id that no point holds); points recorded."""
    policies = InMemoryPolicyStore()
    policies.policies[SHORT.name.lower()] = SHORT
    items = InMemoryProtectedItemStore()
    since = NOW - timedelta(days=400)
    for vm in VMS:
        items.add(ProtectedItem(vm_name=vm, policy_name=SHORT.name, protected_since=since, policy_assigned_at=since))
    svc = Services(SETTINGS, clock=FixedClock(NOW), jobs=ReadCountingJobs(), recovery_points=InMemoryRecoveryPointStore(),
                   snapshots=snapshots or FakeSnapshots(), status_archive=FakeStatusArchive(), policies=policies,
                   protected_items=items, **timer_fakes())
    rng = random.Random(seed)
    for day in range(days, 0, -1):
        for vm in VMS:
            luck = rng.random()
            backup(svc, NOW - timedelta(days=day, hours=10), vm=vm, failed=luck < 0.125, attempts=2 if luck > 0.9 else 1)
    svc.jobs.reads.clear()
    return svc


def _state(svc: Services) -> tuple[dict, set[str]]:
    points = {(p.vm_name, p.name): (p.state, p.deleted_by) for vm in VMS for p in svc.recovery_points.list_for_vm(vm)}
    return points, svc.snapshots.all_snapshots()


def test_a_run_settled_a_page_an_invocation_does_what_one_whole_run_does_and_reads_each_job_once():
    """The timer's run handed to the workers, every page ending its invocation's budget: the same points
    deleted, attempts' snapshots gone and kept as by one whole run, and no job read twice."""
    timer, whole = _fleet(), _fleet()
    run_retention(whole)
    assert _state(timer) != _state(whole), "the history has nothing to delete"

    start = start_retention(timer, fan_out=True)
    outcomes = timer.retention_queue.drain(timer, budget=timedelta(0), page_size=3)
    assert [r.part for r in start.sent] == list(PARTS) and not start.outcomes
    assert sum(o.state == "continued" for o in outcomes) >= 8
    assert {o.request.part for o in outcomes if o.state == "finished"} == set(PARTS)
    assert _state(timer) == _state(whole)
    assert set(timer.jobs.reads) == set(timer.jobs.jobs) and max(timer.jobs.reads.values()) == 1


def test_a_worker_killed_mid_part_is_delivered_again_and_resumes_after_the_last_page_it_settled():
    """The host dies while settling the second page of a shard: the redelivered request starts after
    the first page (its VMs' jobs are not read again) and the shard ends as a whole run leaves it."""
    svc, whole = _fleet(), _fleet()
    run_retention(whole)
    victim = IN_SHARD[2]
    points = svc.recovery_points
    listed = points.list_for_vm

    def dies_at_the_victim(vm: str, **kwargs):
        if vm == victim:
            raise HostDied(vm)
        return listed(vm, **kwargs)

    request = RetentionRequest(SHARD, NOW)
    points.list_for_vm = dies_at_the_victim
    with pytest.raises(HostDied):
        retain_part(svc, request, page_size=2)
    assert svc.retention_progress.get(SHARD).cursor == IN_SHARD[1]
    points.list_for_vm = listed
    svc.jobs.reads.clear()

    outcome = retain_part(svc, request, page_size=2)
    assert outcome.state == "finished"
    read = {svc.jobs.jobs[job_id].vm_name for job_id in svc.jobs.reads}
    assert read == set(IN_SHARD[2:]), "a page settled before the host died was read again"
    mine = lambda state: ({k: v for k, v in state[0].items() if k[0] in IN_SHARD},  # noqa: E731
                          {s for s in state[1] if any(f"/{vm}-" in s for vm in IN_SHARD)})
    assert mine(_state(svc)) == mine(_state(whole))


def test_the_next_run_reads_the_jobs_since_the_last_settled_and_those_it_left_unsettled():
    """The day after a run, only the last days of jobs are read again, from the oldest the last run left
    unsettled: a job still running then, and one whose attempt's snapshot storage would not delete.
    Their snapshots go now; each job is read once."""
    class DeleteFails(FakeSnapshots):
        refused: set[str] = set()

        def delete_snapshot(self, snapshot_url: str) -> bool:
            if snapshot_url in self.refused:
                raise TransientError("storage did not answer")
            return super().delete_snapshot(snapshot_url)

    svc = _fleet(days=30, snapshots=DeleteFails())
    backups = lambda: [j for j in svc.jobs.jobs.values() if j.operation == "Backup"]  # noqa: E731
    running = Job.new_backup(vm_name="vm07", slot=NOW - timedelta(days=4), now=NOW - timedelta(days=4),
                             policy_name=SHORT.name)
    svc.jobs.create_if_absent(running)
    deferred = max((j for j in backups() if j.status is JobStatus.FAILED and j.slot < NOW - timedelta(days=5)),
                   key=lambda j: j.slot)
    left = {d.snapshot_uri for d in deferred.disks if d.snapshot_uri}
    svc.snapshots.refused = set(left)
    timer_run(svc)
    assert set(svc.jobs.reads) == {j.job_id for j in backups()}, "the first run reads the whole lookback"
    assert left <= svc.snapshots.all_snapshots()

    disk = disks_of("vm07")[0]
    snapshot = svc.snapshots.take(disk, {"jobId": running.job_id})
    svc.jobs.update(running.job_id, lambda j: replace(j, status=JobStatus.FAILED, end_time=NOW, disks=[
        DiskResult(-1, disk, "Completed", snapshot)]))
    svc.snapshots.refused = set()
    svc.clock.advance(timedelta(days=1))
    for vm in VMS:
        backup(svc, NOW + timedelta(hours=13), vm=vm)
    svc.jobs.reads.clear()
    timer_run(svc)

    def window_start(vm: str) -> datetime:       # per shard: from the oldest job it left unsettled
        marks = [NOW] + [j.slot for j in (deferred, running) if shard_of(j.vm_name) == shard_of(vm)]
        return min(marks) - SETTINGS.catch_up - JOB_MARGIN

    assert max(svc.jobs.reads.values()) == 1 and running.job_id in svc.jobs.reads
    assert set(svc.jobs.reads) == {j.job_id for j in backups() if j.slot >= window_start(j.vm_name)}
    assert len(svc.jobs.reads) < len(backups()) / 2
    assert snapshot not in svc.snapshots.all_snapshots() and not left & svc.snapshots.all_snapshots()


def test_a_continuation_of_a_run_overtaken_by_a_later_run_changes_nothing():
    """Yesterday's run stopped half-way on a shard; today's run took the shard and finished it: when
    yesterday's continuation is delivered at last, it reads and deletes nothing."""
    svc = _fleet()
    first = retain_part(svc, RetentionRequest(SHARD, NOW), budget=timedelta(0), page_size=2)
    assert first.state == "continued"
    svc.clock.advance(timedelta(days=1))
    today = retain_part(svc, RetentionRequest(SHARD, NOW + timedelta(days=1)), page_size=2)
    assert today.state == "finished"
    settled, before = svc.retention_progress.get(SHARD), _state(svc)
    svc.jobs.reads.clear()
    (stale,) = svc.retention_queue.drain(svc, page_size=2)
    assert (stale.request.run, stale.state, stale.pages) == (NOW, "stale", 0)
    assert svc.retention_progress.get(SHARD) == settled and _state(svc) == before and not svc.jobs.reads


def test_the_timer_settles_a_small_fleet_itself_and_hands_a_large_one_or_what_its_budget_leaves_to_the_queue():
    """Under PLANNER_FAN_OUT_ITEMS the timer settles every part; at it, it sends a request per part; and
    when its budget runs out, the parts left go to the queue and the part under way continues there."""
    small = _fleet()
    done = start_retention(small)
    assert [o.state for o in done.outcomes] == ["finished"] * len(PARTS) and not done.sent

    large = _fleet()
    for shard in "0123456789abcdef":
        large.progress.update(shard, lambda p: replace(p, items=SETTINGS.fan_out_items // 16 + 1))
    handed = start_retention(large)
    assert not handed.outcomes and [r.part for r in handed.sent] == list(PARTS)

    ticking = _fleet()
    seconds = iter(range(10**6))
    cut = start_retention(ticking, budget=timedelta(seconds=5), monotonic=lambda: float(next(seconds)), page_size=2)
    assert cut.outcomes and cut.sent and len(cut.outcomes) + len(cut.sent) == len(PARTS)
    assert [r.part for r in cut.sent] == list(PARTS[len(cut.outcomes):])
    continued = [r for r in ticking.retention_queue.sent if r.seq > 0]
    assert [r.part for r in continued] == [o.request.part for o in cut.outcomes if o.state == "continued"]
