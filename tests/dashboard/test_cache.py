"""The compliance report the dashboard reuses (shared/services/dashboard.py): computed once however many
requests arrive together, served for 30 s, then served stale while one background run computes the next,
and computed afresh once it is older than the stale limit."""
from __future__ import annotations

import threading
from datetime import timedelta

from shared.services.dashboard import MAX_AGE, STALE_LIMIT, ReportCache
from tests.dashboard.conftest import seed_fleet
from tests.monitoring.conftest import memory_services
from tests.polling import eventually


class Deferred:
    """A background runner that keeps the work until the test runs it."""

    def __init__(self):
        self.work = []

    def __call__(self, work):
        self.work.append(work)


def test_requests_arriving_together_compute_the_report_once():
    """Eight threads ask a cold cache at once: one computes (its job read waits for all eight), seven wait for it."""
    svc = memory_services()
    seed_fleet(svc)
    cache = ReportCache()
    asked, lock = [0], threading.Lock()
    outcomes = svc.jobs.outcomes

    def slow_outcomes(query):
        assert eventually(lambda: asked[0] == 8, timeout=30)     # every request is in before the first read ends
        return outcomes(query)

    svc.jobs.outcomes = slow_outcomes
    reports = []

    def ask():
        with lock:
            asked[0] += 1
        reports.append(cache.report(svc))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(reports) == 8 and cache.computed == 1 and all(r is reports[0] for r in reports)


def test_a_report_is_fresh_for_max_age_then_served_stale_while_one_refresh_runs():
    """At 10 s the same report; at 40 s still that one, and one refresh queued however often asked; once it ran,
    the new one; past the stale limit the request computes."""
    svc = memory_services()
    seed_fleet(svc)
    background = Deferred()
    cache = ReportCache(background=background)
    first = cache.report(svc)
    svc.clock.advance(timedelta(seconds=10))
    assert cache.report(svc) is first and cache.computed == 1
    svc.clock.advance(MAX_AGE)
    assert cache.report(svc) is first and cache.report(svc) is first
    assert len(background.work) == 1 and cache.computed == 1
    background.work.pop()()
    second = cache.report(svc)
    assert second is not first and second.generated_at == svc.clock.now() and cache.computed == 2
    svc.clock.advance(STALE_LIMIT + timedelta(seconds=1))
    third = cache.report(svc)
    assert third.generated_at == svc.clock.now() and cache.computed == 3 and not background.work


def test_a_refresh_that_fails_keeps_the_stale_report_and_says_why(caplog):
    svc = memory_services()
    background = Deferred()
    cache = ReportCache(background=background)
    first = cache.report(svc)
    svc.clock.advance(MAX_AGE * 2)
    cache.report(svc)

    def down(*args, **kwargs):
        from shared.errors import TransientError
        raise TransientError("Table Storage unavailable")

    svc.policies.list = down
    background.work.pop()()
    assert cache.report(svc) is first and "not refreshed: Table Storage unavailable" in caplog.text
    assert len(background.work) == 1          # the next request tries again


def test_the_last_days_counts_are_reused_like_the_report():
    """A backup that fails after the counts were taken shows once they are refreshed, not before."""
    from tests.dashboard.conftest import backup

    svc = memory_services()
    seed_fleet(svc)
    background = Deferred()
    cache = ReportCache(background=background)
    before = cache.recent(svc).counts["Backup"]
    backup(svc, "web-01", ok=False, at=svc.clock.now() - timedelta(minutes=1))
    assert cache.recent(svc).counts["Backup"] == before
    svc.clock.advance(MAX_AGE + timedelta(seconds=1))
    cache.recent(svc)
    background.work.pop()()
    assert cache.recent(svc).counts["Backup"]["Failed"] == before.get("Failed", 0) + 1


def test_warming_computes_what_the_overview_reuses_so_the_first_page_computes_nothing():
    from shared.services.dashboard import fleet_overview

    svc = memory_services()
    seed_fleet(svc)
    svc.report_cache.warm(svc)
    assert svc.report_cache.computed == 3            # the report, the active alerts, the last day's counts
    overview = fleet_overview(svc)
    assert svc.report_cache.computed == 3 and overview.report.generated_at == svc.clock.now()
    assert sorted(i.vm_name for i in overview.report.items) == ["db-01", "new-vm", "web-01"]


def test_keep_warm_runs_at_once_then_again_every_period_and_stops_when_asked():
    from shared.services.dashboard import keep_warm

    svc = memory_services()
    seed_fleet(svc)
    stop = threading.Event()
    thread = threading.Thread(target=keep_warm, args=(lambda: svc, stop), kwargs={"every": timedelta(hours=1)})
    thread.start()
    try:
        assert eventually(lambda: svc.report_cache.computed == 3, timeout=30)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive() and svc.report_cache.computed == 3      # the hour-long wait ended on stop
    fast = threading.Event()
    again = threading.Thread(target=keep_warm, args=(lambda: svc, fast), kwargs={"every": timedelta(seconds=0.01)})
    again.start()
    try:
        assert eventually(lambda: svc.report_cache.computed >= 9, timeout=30)   # two more rounds at least
    finally:
        fast.set()
        again.join(timeout=30)
    assert not again.is_alive()


def test_keep_warm_logs_a_failed_run_and_tries_again(caplog):
    from shared.errors import TransientError
    from shared.services.dashboard import keep_warm

    svc = memory_services()
    seed_fleet(svc)
    calls = [0]

    def services():
        calls[0] += 1
        if calls[0] == 1:
            raise TransientError("Table Storage unavailable")
        return svc

    stop = threading.Event()
    thread = threading.Thread(target=keep_warm, args=(services, stop), kwargs={"every": timedelta(seconds=0.01)})
    thread.start()
    try:
        assert eventually(lambda: svc.report_cache.computed >= 3, timeout=30)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert "overview was not computed ahead (Table Storage unavailable)" in caplog.text


def test_the_keep_warm_setting_reads_true_or_false_and_names_a_bad_value():
    import pytest

    from shared.errors import ConfigurationError
    from shared.settings import dashboard_keep_warm

    assert dashboard_keep_warm({}) is False and dashboard_keep_warm({"DASHBOARD_KEEP_WARM": ""}) is False
    assert dashboard_keep_warm({"DASHBOARD_KEEP_WARM": " True "}) is True
    assert dashboard_keep_warm({"DASHBOARD_KEEP_WARM": "0"}) is False
    with pytest.raises(ConfigurationError, match="DASHBOARD_KEEP_WARM is 'yes please'; use true or false"):
        dashboard_keep_warm({"DASHBOARD_KEEP_WARM": "yes please"})
