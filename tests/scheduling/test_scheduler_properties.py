"""Property: whatever the timer does (late, twice, crashing), every slot gets exactly one job and one task."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, time, timedelta, timezone

from hypothesis import given, settings, strategies as st

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.jobs import JobStatus
from shared.domain.planning import blocks_new_backup, lookahead
from shared.domain.policy import EnhancedSchedule, Frequency, Policy, StandardSchedule
from shared.domain.schedule import slots_between
from shared.domain.shards import shard_of
from shared.services.protection import create_policy, enable_protection
from shared.services.scheduling import run_scheduling_tick
from shared.settings import Connection, Settings
from tests.fakes import InMemoryInventory, InMemoryJobStore, RecordingTaskQueue
from tests.scheduling.conftest import HostDied, local_vm
from tests.scheduling.fakes import InMemoryPolicyStore, InMemoryProtectedItemStore, InMemoryShardProgressStore
from tests.properties import examples

UTC = timezone.utc
START = datetime(2025, 3, 27, 12, 0, tzinfo=UTC)          # Berlin and New York both change DST near here
POLICIES = [
    Policy("berlin", StandardSchedule(Frequency.DAILY, time(2, 30)), "Europe/Berlin"),
    Policy("newyork", StandardSchedule(Frequency.DAILY, time(1, 30)), "America/New_York"),
    Policy("night", EnhancedSchedule(4, time(20, 0), 12), "Europe/Berlin", instant_rp_days=7),
]


class FlakyQueue(RecordingTaskQueue):
    """Dies on the send it is told to, like a host crashing between creating jobs and sending."""

    def __init__(self) -> None:
        super().__init__()
        self.die_next = False

    def send(self, tasks):
        if self.die_next:
            self.die_next = False
            raise HostDied("host died before sending")
        return super().send(tasks)


class FlakyProgress(InMemoryShardProgressStore):
    """Dies when told to, saving the progress of ``shard``: after the tasks went out, before the
    shard's watermark moved."""

    def __init__(self, shard: str) -> None:
        super().__init__()
        self.shard = shard
        self.die_next = False

    def update(self, shard, change, **kwargs):
        if self.die_next and shard == self.shard:
            self.die_next = False
            raise HostDied("host died before saving progress")
        return super().update(shard, change, **kwargs)


# One tick event: minutes after the previous tick (0 = fired twice), and where (if at all) it crashes.
events = st.lists(st.tuples(st.sampled_from([0, 0, 1, 5, 5, 5, 60, 240, 600]),
                            st.sampled_from([None, None, "sending", "saving progress"])),
                  min_size=5, max_size=80)


@settings(max_examples=examples(60), deadline=None)
@given(events, st.sampled_from(POLICIES))
def test_every_slot_gets_exactly_one_job_and_one_task(ticks, policy):
    """Across DST changes, with duplicate, late and crashing ticks, each slot runs once or is recorded skipped."""
    settings_ = Settings(storage=Connection("BackupStorage", "x"), service_bus=Connection("ServiceBusConnection", "x"))
    clock = FixedClock(START)
    queue, progress = FlakyQueue(), FlakyProgress(shard_of("vm1"))
    svc = Services(settings_, clock=clock, jobs=InMemoryJobStore(), task_queue=queue,
                   policies=InMemoryPolicyStore(), protected_items=InMemoryProtectedItemStore(),
                   progress=progress, inventory=InMemoryInventory(local_vm("vm1")))
    create_policy(svc, policy)
    enable_protection(svc, "vm1", policy.name, initial_backup=False)
    skipped: set[datetime] = set()
    for minutes, crash in ticks + [(5, None)]:
        clock.advance(timedelta(minutes=minutes))
        queue.die_next, progress.die_next = crash == "sending", crash == "saving progress"
        try:
            run_scheduling_tick(svc, fan_out=False)
        except HostDied:
            pass
        skipped |= {s.slot for s in svc.protected_items.get("vm1").skipped}
    horizon = clock.now() + lookahead(settings_.schedule, clock.now())
    jobs = list(svc.jobs.jobs.values())
    active = [j for j in jobs if j.status is not JobStatus.CANCELLED]
    ran = Counter(j.slot for j in active)
    assert set(ran.values()) <= {1}                                    # never two jobs for a slot
    assert not set(ran) & skipped                                      # a slot runs or is skipped, not both
    accounted = set(ran) | skipped
    assert accounted <= set(slots_between(policy, START, horizon))     # nothing invented
    # None is forgotten: every due slot ran or was skipped. A slot ahead of the clock but inside the
    # lookahead is planned early, unless a backup is still running: then it is decided when due.
    pending = set(slots_between(policy, START, horizon)) - accounted
    assert all(slot > clock.now() for slot in pending)
    assert not pending or any(blocks_new_backup(j, clock.now()) for j in active)
    sent = Counter(t.job_id for t in queue.sent)
    assert all(sent[j.job_id] == 1 for j in active)                    # each running job: one task
    assert all(sent[j.job_id] <= 1 for j in jobs)
    if all(minutes < 240 for minutes, _ in ticks):
        assert not skipped                                             # short gaps: every slot runs
