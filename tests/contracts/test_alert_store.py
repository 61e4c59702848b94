"""The AlertStore and JobFeed contracts: the in-memory fakes the alerting unit tests use and the Table
adapters keep one current alert per (item, kind) whatever the case of the item, let exactly one of many
racing evaluators fire it (every distinct occurrence counted, none twice), keep the alerts a new one
replaced, find any alert by name, list what a webhook is owed, and read the feed by time."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from shared.domain.alerts import (AlertKind, AlertStatus, Occurrence, Signal, delivered, not_configured, raised,
                                  resolved, unparked)
from shared.ports import AlertStore, FeedEntry, JobFeed

PORTS = (AlertStore, JobFeed)
T0 = datetime(2025, 6, 2, 2, 0, 0, 123000, tzinfo=timezone.utc)
RACERS = 8
KIND = AlertKind.BACKUP_FAILED


def signal(key: str, at: datetime = T0, item: str = "Web-1") -> Signal:
    return Signal(item=item, kind=KIND, occurrence=Occurrence(key=key, time=at, seen_at=at, job_id=key,
                                                               error_code="E"),
                  summary=f"job {key} failed", error_code="E", error_title="t", recommendations=("do this",),
                  policy_name="DefaultPolicy")


def _racing(store, change_of):
    """``RACERS`` threads updating one alert, each change made only once all have read (real races)."""
    everyone_read = threading.Barrier(RACERS)
    seen = threading.local()

    def run(n: int):
        change = change_of(n)

        def once_read_by_all(current):
            if not getattr(seen, "waited", False):
                seen.waited = True
                everyone_read.wait(timeout=60)
            return change(current)

        return store.update("web-1", KIND, once_read_by_all)

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(run, range(RACERS)))


def test_an_alert_round_trips_and_is_found_under_any_case(alert_store):
    """What an update writes is what get and find return; WEB-1 and web-1 are one item."""
    written = alert_store.update("Web-1", KIND, lambda current: raised(current, signal("j1"), T0))
    assert written.version is not None
    assert alert_store.get("WEB-1", KIND) == written == alert_store.find(written.name)
    assert alert_store.get("web-1", AlertKind.RPO_BREACH) is None and alert_store.find("nonsense") is None
    assert alert_store.list(status=AlertStatus.ACTIVE, item="WEB-1") == [written]


def test_no_change_writes_nothing(alert_store):
    """A change that returns None creates no alert and keeps an existing one's version."""
    assert alert_store.update("web-1", KIND, lambda current: None) is None
    assert alert_store.get("web-1", KIND) is None
    written = alert_store.update("web-1", KIND, lambda current: raised(current, signal("j1"), T0))
    assert alert_store.update("web-1", KIND, lambda current: None) == written


def test_racing_evaluators_raising_one_failure_fire_one_alert_counting_it_once(alert_store):
    """Eight evaluators read the same failed job at once: one alert, count 1."""
    results = _racing(alert_store, lambda n: lambda current: raised(current, signal("j1"), T0))
    alert = alert_store.get("web-1", KIND)
    assert alert.count == 1 and {r.name for r in results} == {alert.name}
    assert len(alert_store.list()) == 1


def test_racing_distinct_failures_are_all_counted_on_one_alert(alert_store):
    """Eight different failures raised at once: one alert, count 8, none lost."""
    _racing(alert_store, lambda n: lambda current: raised(current, signal(f"j{n}"), T0))
    alert = alert_store.get("web-1", KIND)
    assert alert.count == RACERS and sorted(o.key for o in alert.occurrences) == sorted(f"j{n}" for n in range(RACERS))


def test_a_new_alert_keeps_the_resolved_one_it_replaces(alert_store):
    """Fire, resolve, fire again: the first is listed Resolved and found by name, the second is current."""
    first = alert_store.update("web-1", KIND, lambda c: raised(c, signal("j1"), T0))
    alert_store.update("web-1", KIND, lambda c: resolved(c, time=T0 + timedelta(hours=1), by="j2", note="ok",
                                                         now=T0 + timedelta(hours=1)))
    second = alert_store.update("web-1", KIND, lambda c: raised(c, signal("j3", T0 + timedelta(hours=2)),
                                                                T0 + timedelta(hours=2)))
    assert second.name != first.name and alert_store.get("web-1", KIND).name == second.name
    old = alert_store.find(first.name)
    assert (old.status, old.resolved_by) == (AlertStatus.RESOLVED, "j2")
    assert [a.name for a in alert_store.list()] == [second.name, first.name]
    assert [a.name for a in alert_store.list(status=AlertStatus.RESOLVED)] == [first.name]


def test_owed_lists_what_a_webhook_has_not_been_told(alert_store):
    """A new alert is owed its Fired notice; once delivered it is not; resolving owes the Resolved notice."""
    alert_store.update("web-1", KIND, lambda c: raised(c, signal("j1"), T0))
    alert_store.update("web-2", KIND, lambda c: raised(c, signal("j2", item="web-2"), T0))
    assert sorted(a.item for a in alert_store.owed()) == ["Web-1", "web-2"]
    alert_store.update("web-1", KIND, lambda c: delivered(c, "Fired", T0))
    alert_store.update("web-2", KIND, lambda c: not_configured(c))
    assert alert_store.owed() == []
    alert_store.update("web-1", KIND, lambda c: resolved(c, time=T0 + timedelta(hours=1), by="j3", note="",
                                                         now=T0 + timedelta(hours=1)))
    assert [(a.item, a.owed) for a in alert_store.owed()] == [("Web-1", "Resolved")]


def test_parked_lists_what_a_webhook_set_later_should_get(alert_store):
    """Recorded with no webhook: an active alert is parked until unparked (then owed Fired); one that resolves
    unseen leaves the list; one whose Fired notice was delivered is parked again for its Resolved notice."""
    alert_store.update("web-1", KIND, lambda c: raised(c, signal("j1"), T0))
    alert_store.update("web-2", KIND, lambda c: raised(c, signal("j2", item="web-2"), T0))
    alert_store.update("web-3", KIND, lambda c: raised(c, signal("j3", item="web-3"), T0))
    alert_store.update("web-3", KIND, lambda c: delivered(c, "Fired", T0))
    for item in ("web-1", "web-2"):
        alert_store.update(item, KIND, lambda c: not_configured(c))
    later = T0 + timedelta(hours=1)
    for item in ("web-2", "web-3"):
        alert_store.update(item, KIND, lambda c: resolved(c, time=later, by="j9", note="", now=later))
    alert_store.update("web-3", KIND, lambda c: not_configured(c))
    assert sorted(a.item for a in alert_store.parked()) == ["Web-1", "web-3"]
    for alert in alert_store.parked():
        alert_store.update(alert.item, KIND, lambda c: unparked(c))
    assert alert_store.parked() == []
    assert sorted((a.item, a.owed) for a in alert_store.owed()) == [("Web-1", "Fired"), ("web-3", "Resolved")]


def test_marks_only_move_forward_and_watches_come_due(alert_store):
    """The evaluator's marks keep the later time; a watch is due once its time has come, and can be dropped."""
    alert_store.advance_marks({"feed": T0})
    alert_store.advance_marks({"feed": T0 - timedelta(minutes=5), "deadlines": T0})
    assert alert_store.marks() == {"feed": T0, "deadlines": T0}
    alert_store.watch("Web-1", T0)
    alert_store.watch("web-2", T0 + timedelta(hours=1))
    assert alert_store.due_watches(T0) == [("Web-1", T0)]
    alert_store.watch("web-1", T0 + timedelta(hours=2))
    assert alert_store.due_watches(T0 + timedelta(hours=1)) == [("web-2", T0 + timedelta(hours=1))]
    alert_store.unwatch("WEB-2")
    alert_store.unwatch("never-watched")
    assert alert_store.due_watches(T0 + timedelta(days=1)) == [("web-1", T0 + timedelta(hours=2))]


def test_the_feed_returns_entries_in_a_time_range_once_each(job_feed):
    """Entries after ``after`` up to ``until``, oldest first; the same (job, status) again is one entry."""
    for n, minutes in enumerate((0, 1, 1, 59, 61)):
        job_feed.add(FeedEntry(job_id=f"j{n}", vm_name="vm", status="Failed", at=T0 + timedelta(minutes=minutes)))
    job_feed.add(FeedEntry(job_id="j1", vm_name="vm", status="Failed", at=T0 + timedelta(minutes=1)))
    job_feed.add(FeedEntry(job_id="j1", vm_name="vm", status="InProgress", at=T0 + timedelta(seconds=30)))
    found = job_feed.between(T0, T0 + timedelta(minutes=60))
    assert [(e.job_id, e.status) for e in found] == [("j1", "InProgress"), ("j1", "Failed"), ("j2", "Failed"),
                                                     ("j3", "Failed")]
    assert found[1].at == T0 + timedelta(minutes=1)
    assert job_feed.between(T0 + timedelta(hours=2), T0) == []
