"""The roll-up on Azurite, through the real Table stores: jobs written through the job store, the evaluator
folding the feed every few hours, and the compliance report then agreeing with one that reads every job row,
with a fraction of the requests."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from shared.adapters.table_rollup import TableRollupStore
from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.jobs import Job, JobError, JobPhase, JobStatus
from shared.domain.protection import ProtectedItem
from shared.services.alerting import evaluate_alerts
from shared.services.compliance import compliance_report
from shared.telemetry import Telemetry

SLOT = datetime(2025, 6, 1, 22, 30, tzinfo=timezone.utc)
FAILURE = JobError(error_code="ExtensionSnapshotFailedNoNetwork", error_string="no network")
VMS = ("web-1", "Web-2", "db-1")


def test_the_report_from_the_roll_up_agrees_with_every_job_read(make_settings, unique_name):
    """Forty days of three VMs' backups, folded as they end: the 30-day report from the roll-up is the report
    from the job rows, item by item."""
    settings = make_settings()
    svc = Services(settings, clock=FixedClock(SLOT - timedelta(hours=2)), telemetry=Telemetry(), notifier=None)
    for vm in VMS:
        svc.protected_items.add(ProtectedItem(vm_name=vm, policy_name="DefaultPolicy", initial_backup_pending=False,
                                              protected_since=SLOT - timedelta(days=1),
                                              policy_assigned_at=SLOT - timedelta(days=1)))
    evaluate_alerts(svc)
    for day in range(41):
        for n, vm in enumerate(VMS):
            slot = SLOT + timedelta(days=day)
            svc.clock.current = slot + timedelta(minutes=10 + n)
            job = Job.new_backup(vm_name=vm, slot=slot, now=slot, policy_name="DefaultPolicy")
            ok = (day + n) % 5 != 2
            svc.jobs.create_if_absent(replace(job, status=JobStatus.COMPLETED if ok else JobStatus.FAILED,
                                              phase=JobPhase.DONE, end_time=svc.clock.now(),
                                              errors=[] if ok else [FAILURE]))
        if day % 3 == 0:
            svc.clock.current = SLOT + timedelta(days=day, hours=5)
            evaluate_alerts(svc)
    svc.clock.current = SLOT + timedelta(days=40, hours=1)
    assert svc.rollup.state().covered_from == SLOT - timedelta(hours=3)

    covered = compliance_report(svc, days=30)
    every_job = compliance_report(Services(settings, clock=svc.clock, telemetry=Telemetry(), rollup=TableRollupStore(
        svc.table_service, unique_name("empty"))), days=30)
    assert [(i.vm_name, i.slots, i.last_error, i.state) for i in covered.items] == \
        [(i.vm_name, i.slots, i.last_error, i.state) for i in every_job.items]
    # db-1's failure of the last slot is still within its allowance: pending, not missed yet
    assert [(i.vm_name, len(i.slots.missed), len(i.slots.pending)) for i in covered.items] == [
        ("db-1", 5, 1), ("web-1", 6, 0), ("Web-2", 6, 0)]
