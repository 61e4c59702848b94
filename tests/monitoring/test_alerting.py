"""The alert evaluator and delivery on in-memory ports (docs/monitoring.md): a failure raises one alert
within a run, later failures count on it without a new notification, the next success resolves it, a slot
with no backup by its deadline raises BackupMissed and then RpoBreach, a failed backup whose point lost
its data makes it Unavailable, a webhook that is down gets its notifications later, two evaluators at once
change nothing twice."""
from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

from shared.domain import remediation
from shared.domain.alerts import AlertKind, AlertStatus, DeliveryState
from shared.domain.compliance import SLOT_ALLOWANCE
from shared.domain.job_transitions import mark_failed
from shared.domain.jobs import DiskResult, Job, JobError, JobPhase, JobStatus
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import DiskSnapshot, PointState, RecoveryPoint
from shared.services.retention import ProblemKind, RetentionPlan, RetentionProblem, RetentionResult
from shared.services.alerting import after_retention, evaluate_alerts, raise_alert, resolve_by_operator
from tests.monitoring.conftest import T0, memory_services

ERROR = JobError.from_remediation(remediation.for_service_error(remediation.VM_NOT_FOUND), detail="gone")


def protect(svc, vm="vm1", since=T0 - timedelta(days=10)):
    svc.protected_items.add(ProtectedItem(vm_name=vm, policy_name="DefaultPolicy", protected_since=since,
                                          policy_assigned_at=since, initial_backup_pending=False))


def backup(svc, vm="vm1", *, ok: bool, at=None, trigger="OnDemand") -> Job:
    """A backup job that ends the way the worker or ingestion ends it: through the job store."""
    at = at or svc.clock.now()
    job = Job.new_backup(vm_name=vm, slot=at, now=at, trigger=trigger, policy_name="DefaultPolicy")
    svc.jobs.create_if_absent(job)
    if ok:
        return svc.jobs.update(job.job_id, lambda j: replace(j, status=JobStatus.COMPLETED, phase=JobPhase.DONE,
                                                             end_time=svc.clock.now(), backup_size_bytes=1024))
    return svc.jobs.update(job.job_id, lambda j: mark_failed(j, ERROR, svc.clock.now()))


def test_a_failure_raises_one_alert_delivered_once_and_later_failures_only_count(svc):
    """One failed backup: an Active BackupFailed alert, its Fired notification sent; three more: count 4, nothing sent."""
    protect(svc)
    first = backup(svc, ok=False)
    evaluate_alerts(svc)
    (alert,) = svc.alerts.list()
    assert (alert.kind, alert.status, alert.count, alert.error_code) == (AlertKind.BACKUP_FAILED, AlertStatus.ACTIVE, 1,
                                                                          remediation.VM_NOT_FOUND)
    assert alert.occurrences[0].job_id == first.job_id
    assert svc.notifier.conditions() == [("Fired", alert.name)]
    for n in range(3):
        svc.clock.advance(timedelta(minutes=10))
        backup(svc, ok=False)
        evaluate_alerts(svc)
    (alert,) = svc.alerts.list()
    assert alert.count == 4 and alert.last_seen == svc.clock.now()
    assert svc.notifier.conditions() == [("Fired", alert.name)]
    assert svc.telemetry.total("vmsnap.jobs", outcome="Failed") == 4
    assert svc.telemetry.total("vmsnap.alerts.active", kind="BackupFailed") == 1


def test_the_next_success_resolves_it_and_says_so(svc):
    """A later successful backup resolves the alert with its job recorded, and the Resolved notice goes out."""
    protect(svc)
    backup(svc, ok=False)
    evaluate_alerts(svc)
    svc.clock.advance(timedelta(minutes=5))
    ok = backup(svc, ok=True)
    evaluate_alerts(svc)
    (alert,) = svc.alerts.list()
    assert (alert.status, alert.resolved_by, alert.resolved_at) == (AlertStatus.RESOLVED, ok.job_id, svc.clock.now())
    assert [c for c, _ in svc.notifier.conditions()] == ["Fired", "Resolved"]
    assert svc.telemetry.total("vmsnap.alerts.active", kind="BackupFailed") == 0
    svc.clock.advance(timedelta(minutes=5))
    backup(svc, ok=False)
    evaluate_alerts(svc)
    assert [a.status for a in svc.alerts.list()] == [AlertStatus.ACTIVE, AlertStatus.RESOLVED]


def test_a_slot_with_no_backup_raises_backup_missed_at_its_deadline_then_rpo_breach():
    """DefaultPolicy (22:30 UTC): no job for the slot; nothing before 01:30 (its deadline), BackupMissed
    right after; the VM's last point is from the day before, so its RPO is breached too."""
    slot = T0.replace(hour=22, minute=30)
    svc = memory_services(slot - timedelta(minutes=1))
    protect(svc)
    svc.recovery_points.add_if_absent(RecoveryPoint(name="p1", vm_name="vm1", created_at=slot - timedelta(days=1),
                                                    job_id="j0"))
    evaluate_alerts(svc)
    svc.clock.current = slot + SLOT_ALLOWANCE - timedelta(seconds=1)
    evaluate_alerts(svc)
    assert svc.alerts.list() == []
    svc.clock.current = slot + SLOT_ALLOWANCE + timedelta(seconds=30)
    evaluate_alerts(svc)
    kinds = {a.kind: a for a in svc.alerts.list(status=AlertStatus.ACTIVE)}
    assert set(kinds) == {AlertKind.BACKUP_MISSED, AlertKind.RPO_BREACH}
    assert kinds[AlertKind.BACKUP_MISSED].occurrences[0].time == slot
    evaluate_alerts(svc)
    assert [a.count for a in svc.alerts.list()] == [1, 1]


def test_a_slot_before_the_item_was_protected_is_not_missed():
    """A VM protected after the 22:30 slot owes nothing for it: no BackupMissed at its deadline."""
    slot = T0.replace(hour=22, minute=30)
    svc = memory_services(slot + SLOT_ALLOWANCE + timedelta(seconds=30))
    protect(svc, since=slot + timedelta(minutes=1))
    evaluate_alerts(svc)
    assert [a.kind for a in svc.alerts.list()] == []


def test_an_item_with_a_recent_point_is_watched_and_breaches_later():
    """A missed slot after an on-demand backup at noon: BackupMissed at the deadline, RpoBreach only once
    the point is older than a day plus the allowance, found by the watch without another slot."""
    slot = T0.replace(hour=22, minute=30)
    svc = memory_services(slot)
    protect(svc)
    svc.recovery_points.add_if_absent(RecoveryPoint(name="p1", vm_name="vm1", created_at=T0, job_id="j0"))
    svc.clock.current = slot + SLOT_ALLOWANCE + timedelta(minutes=1)
    svc.alerts.advance_marks({"deadlines": slot, "feed": slot})
    evaluate_alerts(svc)
    assert {a.kind for a in svc.alerts.list()} == {AlertKind.BACKUP_MISSED}
    breach = T0 + timedelta(days=1) + SLOT_ALLOWANCE
    svc.clock.current = breach + timedelta(seconds=10)
    svc.alerts.advance_marks({"deadlines": svc.clock.now()})     # no slot's deadline in between
    evaluate_alerts(svc)
    assert {a.kind for a in svc.alerts.list()} == {AlertKind.BACKUP_MISSED, AlertKind.RPO_BREACH}
    assert svc.alerts.due_watches(svc.clock.now() + timedelta(days=30)) == []


def test_a_failed_backup_whose_point_lost_its_data_makes_it_unavailable(svc):
    """A disk deleted with its snapshots: the failed backup has the newest point checked; it becomes
    Unavailable with the reason, and PointUnavailable fires; a later success resolves every alert."""
    protect(svc)
    base = "http://127.0.0.1:10000/devstoreaccount1/vhds/vm1-os.vhd"
    snapshot = svc.snapshots.take(base, {"jobId": "j0"})
    svc.recovery_points.add_if_absent(RecoveryPoint(name="p1", vm_name="vm1", created_at=T0 - timedelta(hours=2),
                                                    job_id="j0", disks=(DiskSnapshot(0, base, snapshot),)))
    svc.snapshots.blobs[base].clear()          # the disk went, and its snapshots with it
    backup(svc, ok=False)
    evaluate_alerts(svc)
    point = svc.recovery_points.get("vm1", "p1")
    assert point.state is PointState.UNAVAILABLE and "no longer exists" in point.unavailable_reason
    # It was the only point: the VM has none left to restore, so its RPO is breached as well.
    assert {a.kind for a in svc.alerts.list(status=AlertStatus.ACTIVE)} == {
        AlertKind.BACKUP_FAILED, AlertKind.POINT_UNAVAILABLE, AlertKind.RPO_BREACH}
    svc.clock.advance(timedelta(minutes=1))
    backup(svc, ok=True)
    evaluate_alerts(svc)
    assert svc.alerts.list(status=AlertStatus.ACTIVE) == []


def test_a_webhook_that_is_down_gets_the_alert_later(svc):
    """The receiver refuses at first: the alert says Retrying with the next try 10 s on; once it is up, the
    next run after that delivers it."""
    protect(svc)
    svc.notifier.down = True
    backup(svc, ok=False)
    evaluate_alerts(svc)
    (alert,) = svc.alerts.list()
    assert alert.delivery.state is DeliveryState.RETRYING and alert.delivery.attempts == 1
    assert alert.delivery.next_attempt_at == svc.clock.now() + timedelta(seconds=10)
    svc.notifier.down = False
    evaluate_alerts(svc)
    assert svc.notifier.sent == []          # not due yet
    svc.clock.advance(timedelta(seconds=30))
    evaluate_alerts(svc)
    (alert,) = svc.alerts.list()
    assert svc.notifier.conditions() == [("Fired", alert.name)] and alert.delivery.state is DeliveryState.DELIVERED


def test_without_a_webhook_alerts_say_so_and_nothing_is_sent():
    """No ALERT_WEBHOOK_URL: the alert is recorded with delivery NotConfigured and nothing is owed."""
    svc = memory_services(notifier=None)
    protect(svc)
    backup(svc, ok=False)
    evaluate_alerts(svc)
    (alert,) = svc.alerts.list()
    assert alert.delivery.state is DeliveryState.NOT_CONFIGURED and svc.alerts.owed() == []


def test_a_webhook_set_later_gets_the_active_alerts_not_the_resolved_ones():
    """Alerts recorded while no webhook was set: once ALERT_WEBHOOK_URL is set, the next run sends the Fired
    notice of the one still active, not of the one that fired and resolved unseen; its resolution follows."""
    unset = memory_services(notifier=None)
    protect(unset, "vm1")
    protect(unset, "vm2")
    backup(unset, "vm1", ok=False)
    backup(unset, "vm2", ok=False)
    evaluate_alerts(unset)
    unset.clock.advance(timedelta(minutes=5))
    backup(unset, "vm2", ok=True)
    evaluate_alerts(unset)
    assert {(a.item, a.status, a.delivery.state) for a in unset.alerts.list()} == {
        ("vm1", AlertStatus.ACTIVE, DeliveryState.NOT_CONFIGURED), ("vm2", AlertStatus.RESOLVED, DeliveryState.NOT_CONFIGURED)}

    svc = memory_services(unset.clock.now(), clock=unset.clock, **{name: getattr(unset, name) for name in (
        "jobs", "job_feed", "alerts", "rollup", "recovery_points", "policies", "protected_items")})    # the setting is set
    svc.clock.advance(timedelta(seconds=30))
    evaluate_alerts(svc)
    active = svc.alerts.get("vm1", AlertKind.BACKUP_FAILED)
    assert svc.notifier.conditions() == [("Fired", active.name)] and active.delivery.state is DeliveryState.DELIVERED
    evaluate_alerts(svc)
    svc.clock.advance(timedelta(minutes=5))
    backup(svc, "vm1", ok=True)
    evaluate_alerts(svc)
    assert svc.notifier.conditions() == [("Fired", active.name), ("Resolved", active.name)]


def test_a_receiver_told_of_an_alert_hears_of_its_resolution_once_a_webhook_is_back(svc):
    """Fired was delivered, then the webhook setting was removed and the alert resolved: once it is set again
    the receiver gets the Resolved notice (else its incident stays open)."""
    protect(svc)
    backup(svc, ok=False)
    evaluate_alerts(svc)
    notifier = svc.notifier
    svc.notifier = None
    svc.clock.advance(timedelta(minutes=5))
    backup(svc, ok=True)
    evaluate_alerts(svc)
    (alert,) = svc.alerts.list()
    assert alert.delivery.state is DeliveryState.NOT_CONFIGURED and [c for c, _ in notifier.conditions()] == ["Fired"]
    svc.notifier = notifier
    evaluate_alerts(svc)
    assert notifier.conditions() == [("Fired", alert.name), ("Resolved", alert.name)]


def test_evaluators_racing_on_the_same_failures_count_each_once_and_send_once(svc):
    """Four failures, then four evaluators at once (threads), each POST taking 0.2 s: one alert, count 4,
    one Fired notification (a sender leases the alert before it posts)."""
    protect(svc)
    svc.notifier.delay = 0.2
    for n in range(4):
        backup(svc, ok=False, at=T0 + timedelta(seconds=n))
    start = threading.Barrier(4)

    def run():
        start.wait(timeout=30)
        evaluate_alerts(svc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    (alert,) = svc.alerts.list()
    assert alert.count == 4 and len(svc.notifier.sent) == 1


def test_an_operator_resolves_and_other_work_raises_through_the_api(svc):
    """A restore drill raises RestoreTestFailed through raise_alert; an operator resolves an alert by name."""
    from shared.domain.alerts import Occurrence, Signal

    alert = raise_alert(svc, Signal(item="vm1", kind=AlertKind.RESTORE_TEST_FAILED,
                                    occurrence=Occurrence(key="drill-1", time=T0, seen_at=T0),
                                    summary="restore drill drill-1 of vm1 failed to boot"))
    done = resolve_by_operator(svc, alert.name, "known issue, ticket 42")
    assert (done.status, done.resolved_by, done.resolution) == (AlertStatus.RESOLVED, "operator", "known issue, ticket 42")


def test_a_retention_run_that_finishes_resolves_retention_failed(svc):
    """A Failed Retention job raises RetentionFailed; the next run that finishes for that VM resolves it."""
    job = Job(job_id="r1", vm_name="vm1", slot=T0, start_time=T0, operation="Retention", status=JobStatus.FAILED,
              phase=JobPhase.DONE, end_time=T0, errors=[ERROR])
    svc.jobs.create_if_absent(job)
    evaluate_alerts(svc)
    assert [a.kind for a in svc.alerts.list(status=AlertStatus.ACTIVE)] == [AlertKind.RETENTION_FAILED]
    svc.clock.advance(timedelta(days=1))
    still = RetentionResult(plan=RetentionPlan(problems=[RetentionProblem("VM1", ProblemKind.DEFERRED, "no answer")]))
    assert after_retention(svc, still) == []
    done = RetentionResult(plan=RetentionPlan(problems=[RetentionProblem("vm1", ProblemKind.FUTURE_TIME, "odd")]))
    assert [a.kind for a in after_retention(svc, done)] == [AlertKind.RETENTION_FAILED]


def test_a_disk_near_the_snapshot_limit_alerts_until_retention_clears_it(svc):
    """The worker's disk check finds 9/10 of SNAPSHOT_LIMIT: SnapshotLimitNear; a retention run that leaves
    the disk below that resolves it."""
    from shared.domain.inventory import OS_DISK_LUN, Disk, Vm, VmKind
    from shared.services.recovery import disk_guard_error

    base = "http://127.0.0.1:10000/devstoreaccount1/vhds/vm1-os.vhd"
    vm = Vm(name="vm1", kind=VmKind.LOCAL, disks=(Disk(OS_DISK_LUN, base, "os"),))
    svc.inventory.vms["vm1"] = vm
    limit = svc.settings.snapshot_limit
    for _ in range(limit * 9 // 10):
        svc.snapshots.take(base, {"jobId": "j"})
    assert disk_guard_error(svc, vm) is None            # not at the limit: the backup goes on
    (alert,) = svc.alerts.list(status=AlertStatus.ACTIVE)
    assert alert.kind is AlertKind.SNAPSHOT_LIMIT_NEAR and str(limit) in alert.summary
    assert disk_guard_error(svc, vm) is None and svc.alerts.list()[0].count == 1     # same count: same occurrence
    svc.snapshots.blobs[base].clear()
    after_retention(svc, RetentionResult(plan=RetentionPlan()))
    assert svc.alerts.list(status=AlertStatus.ACTIVE) == []
