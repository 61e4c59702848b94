"""The RollupStore contract, and the JobFeed's retention: the in-memory fake the report's unit tests use and
the Table adapter merge rows as a union (a row merged twice, or by racing writers, comes out the same), keep
a month's many slots and its newest failure exactly, read the months of a window, keep the state's marks
moving one way, and delete whole months (whole minutes of the feed) before a time and nothing after."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from shared.domain.compliance import LastError
from shared.domain.jobs import JobError
from shared.domain.rollup import MonthRollup, RollupState, advanced, month_of
from shared.ports import FeedEntry, RollupStore

PORTS = (RollupStore,)
MAY = datetime(2025, 5, 1, tzinfo=timezone.utc)
JUNE = datetime(2025, 6, 1, tzinfo=timezone.utc)
ERROR = JobError(error_code="E1", error_string="no network", error_title="Snapshot failed",
                 recommendations=["Allow outbound HTTPS"])


def ok(vm: str, *slots: datetime) -> MonthRollup:
    return MonthRollup(vm_name=vm, month=month_of(slots[0]), successes=frozenset(slots))


def failed(vm: str, job_id: str, slot: datetime, error: JobError | None = ERROR) -> MonthRollup:
    return MonthRollup(vm_name=vm, month=month_of(slot), last_failure=LastError(job_id, slot, error))


def stored(store, vm: str, month: datetime) -> MonthRollup | None:
    found = [r for r in store.months(month, month, vm_name=vm)]
    assert len(found) <= 1
    return found[0] if found else None


def test_rows_merge_as_a_union_and_a_repeat_changes_nothing(rollup_store):
    """Two successes and a failure of one month merge into one row; the same again changes no row."""
    a, b = MAY + timedelta(days=3, hours=22, minutes=30), MAY + timedelta(days=4, hours=22, minutes=30, milliseconds=7)
    assert rollup_store.merge_many([ok("Web-1", a), failed("Web-1", "j2", a + timedelta(hours=1))]) == 1
    assert rollup_store.merge_many([ok("web-1", b)]) == 1
    assert rollup_store.merge_many([ok("WEB-1", a, b), failed("web-1", "j2", a + timedelta(hours=1))]) == 0
    row = stored(rollup_store, "WEB-1", MAY)
    assert row.successes == {a, b} and row.month == MAY
    assert row.last_failure == LastError("j2", a + timedelta(hours=1), ERROR)


def test_the_newest_failure_wins_whatever_the_order(rollup_store):
    """Failures merged newest first or last: the newest stays (by slot, then job id), its error intact."""
    slot = MAY + timedelta(days=10)
    rollup_store.merge_many([failed("vm1", "j9", slot)])
    rollup_store.merge_many([failed("vm1", "j1", slot - timedelta(days=1), None), failed("vm1", "j8", slot)])
    assert stored(rollup_store, "vm1", MAY).last_failure == LastError("j9", slot, ERROR)
    rollup_store.merge_many([failed("vm2", "j1", slot - timedelta(days=1))])
    rollup_store.merge_many([failed("vm2", "j5", slot, None)])
    assert stored(rollup_store, "vm2", MAY).last_failure == LastError("j5", slot, None)


def test_a_month_of_many_slots_round_trips(rollup_store):
    """Five thousand successes in one month (more than a string property holds): every one read back."""
    slots = [MAY + timedelta(minutes=8 * n, milliseconds=n % 1000) for n in range(5000)]
    rollup_store.merge_many([ok("busy", *slots)])
    rollup_store.merge_many([ok("busy", MAY + timedelta(days=30, hours=23))])
    assert stored(rollup_store, "busy", MAY).successes == set(slots) | {MAY + timedelta(days=30, hours=23)}


def test_months_reads_the_rows_of_the_months_a_window_overlaps(rollup_store):
    """A window from mid-May to mid-June reads May's and June's rows of every item, not April's or July's."""
    for vm in ("a", "b", "c"):
        rollup_store.merge_many([ok(vm, month) for month in (MAY - timedelta(days=1), MAY + timedelta(days=9),
                                                            JUNE + timedelta(days=2), JUNE + timedelta(days=31))])
    rows = rollup_store.months(MAY + timedelta(days=15), JUNE + timedelta(days=15))
    assert sorted((r.vm_name, r.month) for r in rows) == [(vm, m) for vm in "abc" for m in (MAY, JUNE)]
    assert [r.month for r in rollup_store.months(JUNE, JUNE + timedelta(days=1), vm_name="B")] == [JUNE]


def test_racing_writers_lose_nothing(rollup_store):
    """Eight writers merge distinct slots into the same rows at once (threads): every slot is there."""
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        start.wait(timeout=60)
        for round_ in range(5):
            slot = MAY + timedelta(days=round_, minutes=n)
            rollup_store.merge_many([ok("shared", slot), ok(f"own{n}", slot)])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    assert stored(rollup_store, "shared", MAY).successes == {
        MAY + timedelta(days=r, minutes=n) for r in range(5) for n in range(8)}
    assert len(rollup_store.months(MAY, MAY)) == 9


def test_the_state_covers_back_and_folds_forward(rollup_store):
    """Coverage only reaches further back, the fold only moves on; no change writes nothing."""
    assert rollup_store.state() == RollupState()
    rollup_store.update_state(lambda s: advanced(s, covered_from=JUNE, folded_through=JUNE))
    rollup_store.update_state(lambda s: advanced(s, covered_from=JUNE + timedelta(days=1),
                                                 folded_through=JUNE - timedelta(days=1)))
    assert rollup_store.state() == RollupState(covered_from=JUNE, folded_through=JUNE)
    after = rollup_store.update_state(lambda s: advanced(s, covered_from=MAY, folded_through=JUNE + timedelta(hours=1)))
    assert after == rollup_store.state() == RollupState(covered_from=MAY, folded_through=JUNE + timedelta(hours=1))
    assert rollup_store.update_state(lambda s: None) == after


def test_prune_deletes_whole_months_before_a_time(rollup_store):
    """Rows of the months before June go, June's stay; the limit bounds one call, the next finishes."""
    for n in range(6):
        rollup_store.merge_many([ok(f"vm{n}", MAY - timedelta(days=40)), ok(f"vm{n}", MAY + timedelta(days=3)),
                                 ok(f"vm{n}", JUNE + timedelta(days=1))])
    assert rollup_store.prune(JUNE, limit=8) >= 8
    rollup_store.prune(JUNE, limit=100)
    assert rollup_store.prune(JUNE, limit=100) == 0
    assert {r.month for r in rollup_store.months(MAY - timedelta(days=60), JUNE)} == {JUNE}
    assert len(rollup_store.months(JUNE, JUNE)) == 6


def test_feed_prune_deletes_the_minutes_before_a_time(job_feed):
    """Entries of the minutes before 10:00 go, 10:00's and later stay; a second call finds none."""
    ten = datetime(2025, 6, 2, 10, 0, tzinfo=timezone.utc)
    for n, minutes in enumerate((-61, -30, -1, 0, 1)):
        job_feed.add(FeedEntry(job_id=f"j{n}", vm_name="vm", status="Failed",
                               at=ten + timedelta(minutes=minutes, seconds=20)))
    assert job_feed.prune(ten, limit=100) == 3
    assert job_feed.prune(ten, limit=100) == 0
    assert [e.job_id for e in job_feed.between(ten - timedelta(days=1), ten + timedelta(hours=1))] == ["j3", "j4"]
