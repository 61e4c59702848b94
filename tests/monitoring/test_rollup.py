"""The compliance report's roll-up, and the retention of the job feed and the roll-up (docs/monitoring.md): once
the roll-up covers a window the report reads no job row of it and says what the jobs say; a deployment with
history gets there with `vmsnap report rebuild`; the window counts exactly from its first instant; feed
entries and roll-up months are deleted once past their retention, and nothing newer."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from shared.bootstrap import reset_services
from shared.cli import main
from shared.domain.jobs import Job, JobError, JobPhase, JobStatus
from shared.domain.protection import ProtectedItem
from shared.domain.rollup import MonthRollup, month_of
from shared.ports import FeedEntry
from shared.services.alerting import evaluate_alerts
from tests.fakes import InMemoryJobStore
from tests.monitoring.conftest import memory_services
from tests.monitoring.fakes import InMemoryRollupStore

UTC = timezone.utc
SLOT = datetime(2025, 6, 1, 22, 30, tzinfo=UTC)        # DefaultPolicy: daily at 22:30 UTC
FAILURE = JobError(error_code="ExtensionSnapshotFailedNoNetwork", error_string="no network")
VMS = ("vm1", "vm2")


class GuardedJobStore(InMemoryJobStore):
    """A job store that can refuse to list a window's jobs (``outcomes``): what a covered report never reads."""

    refuse = False

    def outcomes(self, query):
        assert not self.refuse, f"the report read the jobs of {query}"
        return super().outcomes(query)


def run(svc, *args: str) -> dict:
    """``vmsnap <args> -o json`` on ``svc``: its document."""
    reset_services(svc)
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            assert main([*args, "-o", "json"]) == 0
    finally:
        reset_services(None)
    return json.loads(out.getvalue())


def protect(svc, since: datetime) -> None:
    for vm in VMS:
        svc.protected_items.add(ProtectedItem(vm_name=vm, policy_name="DefaultPolicy", protected_since=since,
                                              policy_assigned_at=since, initial_backup_pending=False))


def finish(svc, vm: str, slot: datetime, *, ok: bool, at: timedelta = timedelta(minutes=10)) -> Job:
    """A backup of ``slot`` that ends ``at`` after it, written through the job store (which notes it in the feed)."""
    svc.clock.current = slot + at
    job = Job.new_backup(vm_name=vm, slot=slot, now=slot, policy_name="DefaultPolicy",
                         trigger="Scheduled" if at >= timedelta(0) else "OnDemand")
    svc.jobs.create_if_absent(replace(job, status=JobStatus.COMPLETED if ok else JobStatus.FAILED,
                                      phase=JobPhase.DONE, end_time=svc.clock.now(), errors=[] if ok else [FAILURE]))
    return job


def daily(svc, days: range, evaluate: bool = False) -> None:
    """A backup of each VM every day at 22:30, every seventh failing; the evaluator six hours on, if asked."""
    for day in days:
        for n, vm in enumerate(VMS):
            finish(svc, vm, SLOT + timedelta(days=day), ok=(day + n) % 7 != 3)
        if evaluate:
            svc.clock.current = SLOT + timedelta(days=day, hours=6)
            evaluate_alerts(svc)


def every_job_read(svc, store: InMemoryJobStore):
    """The same tables, reported on as if there were no roll-up: every job of the window read."""
    plain = InMemoryJobStore()
    plain.jobs = store.jobs
    return memory_services(svc.clock.now(), job_store=plain, job_feed=svc.job_feed, alerts=svc.alerts,
                           recovery_points=svc.recovery_points, policies=svc.policies,
                           protected_items=svc.protected_items, rollup=InMemoryRollupStore())


def compliance(svc, days: int = 30) -> dict:
    document = run(svc, "report", "compliance", "--days", str(days))
    document.pop("generatedAt")
    return document


def test_once_the_roll_up_covers_the_window_the_report_reads_no_job_rows():
    """Forty days of backups with the evaluator folding the feed: a 30-day report reads the roll-up and the
    jobs the last fold has not reached, not the window's job rows, and says what the job rows say."""
    store = GuardedJobStore()
    svc = memory_services(SLOT - timedelta(hours=2), job_store=store)
    protect(svc, SLOT - timedelta(days=1))
    evaluate_alerts(svc)                    # the first fold: the roll-up covers every slot from here on
    daily(svc, range(40), evaluate=True)
    daily(svc, range(40, 41))               # the newest backups: in the feed, not folded yet
    svc.clock.current += timedelta(minutes=1)
    store.refuse = True
    covered = compliance(svc)
    assert covered == compliance(every_job_read(svc, store))
    vm1 = next(item for item in covered["items"] if item["name"] == "vm1")
    assert (vm1["slots"]["met"], vm1["slots"]["missed"]) == (26, 4)
    assert vm1["lastError"]["slot"] == "2025-07-09T22:30:00Z"


def test_a_deployment_with_history_rebuilds_the_roll_up_from_the_jobs():
    """Jobs from before the roll-up existed: the report reads them until `vmsnap report rebuild --days 30`
    folds them in; then it reads none and its figures are unchanged."""
    store = GuardedJobStore()
    svc = memory_services(SLOT, job_store=store)
    protect(svc, SLOT - timedelta(days=1))
    daily(svc, range(40))
    svc.clock.current = SLOT + timedelta(days=39, hours=12)
    before = compliance(svc)
    done = run(svc, "report", "rebuild", "--days", "30")
    assert done["jobsRead"] == 2 * 30 and done["coveredFrom"] == "2025-06-11T10:30:00Z"
    store.refuse = True
    assert compliance(svc) == before
    store.refuse = False
    assert run(svc, "report", "rebuild", "--days", "30")["rowsChanged"] == 0      # folded twice: the same rows


def test_the_window_counts_from_its_first_instant_in_its_first_partial_month():
    """A window starting on a slot, mid-June: that slot counts (met by a backup at that instant), and a failure a
    millisecond before the window is not the item's last error, however new in its month."""
    now = SLOT + timedelta(days=44)                         # 15 July 22:30: a 30-day window starts on 15 June's slot
    since = now - timedelta(days=30)
    store = GuardedJobStore()
    svc = memory_services(since - timedelta(days=5), job_store=store)
    protect(svc, since - timedelta(days=5))
    evaluate_alerts(svc)
    for vm in VMS:
        finish(svc, vm, since - timedelta(days=1), ok=False)
        finish(svc, vm, since - timedelta(milliseconds=1), ok=False, at=-timedelta(minutes=5))
        for day in range(31):
            finish(svc, vm, since + timedelta(days=day), ok=True, at=timedelta(0))
    svc.clock.current = now + timedelta(hours=1)
    evaluate_alerts(svc)
    svc.clock.current = now
    store.refuse = True
    covered = compliance(svc)
    assert covered == compliance(every_job_read(svc, store))
    vm1 = next(item for item in covered["items"] if item["name"] == "vm1")
    assert (vm1["slots"]["expected"], vm1["slots"]["met"], vm1["lastError"]) == (31, 31, None)


def test_feed_entries_go_a_day_after_the_evaluator_read_them():
    """The evaluator deletes the feed's minutes a day older than what it has read, an hour at a time, and
    keeps the rest: an entry lives a day, and at most two hours more."""
    now = datetime(2025, 6, 2, 12, 0, 10, tzinfo=UTC)
    svc = memory_services(now)
    ages = {"3 days": timedelta(days=3), "26 h": timedelta(hours=26), "23.5 h": timedelta(hours=23, minutes=30),
            "23 h": timedelta(hours=23), "1 min": timedelta(minutes=1)}
    for name, age in ages.items():
        svc.job_feed.add(FeedEntry(job_id=name, vm_name="vm1", status="Failed", at=now - age))

    def kept() -> set[str]:
        return {e.job_id for e in svc.job_feed.between(now - timedelta(days=30), now + timedelta(days=1))}

    evaluate_alerts(svc)
    assert kept() == {"23.5 h", "23 h", "1 min"}
    for half_hours in range(1, 7):          # three hours of runs
        svc.clock.current = now + timedelta(minutes=30 * half_hours)
        evaluate_alerts(svc)
    assert kept() == {"1 min"}


def test_roll_up_months_go_once_no_report_can_ask_for_them():
    """Months ending before the longest window a report takes (400 days) are deleted, the month it starts
    in and later are kept."""
    now = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
    svc = memory_services(now)
    months = [month_of(now - timedelta(days=days)) for days in (460, 430, 400, 380, 0)]
    svc.rollup.merge_many([MonthRollup(vm_name="vm1", month=m, successes=frozenset((m + timedelta(hours=22),)))
                           for m in months])
    evaluate_alerts(svc)
    assert sorted(r.month for r in svc.rollup.months(now - timedelta(days=500), now)) == months[2:]
