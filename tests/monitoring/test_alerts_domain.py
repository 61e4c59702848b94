"""Alerts as records (docs/monitoring.md): one per item and kind, occurrences counted once, resolved by a
newer success only, delivered Fired then Resolved with backoff, and the common alert schema document."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from shared.domain import remediation
from shared.domain.alert_schema import common_alert_schema
from shared.domain.alerts import (GIVE_UP_AFTER, AlertKind, AlertStatus, DeliveryState, Occurrence, Signal,
                                  alert_name, delivered, delivery_failed, job_verdict, leased,
                                  parse_alert_name, raised, resolved)
from shared.domain.jobs import Job, JobError, JobPhase, JobStatus

T0 = datetime(2025, 6, 2, 2, 0, tzinfo=timezone.utc)
SAS_URL = "https://acct.blob.core.windows.net/vhds/d.vhd?sv=2024&sig=SECRETSECRET"


def signal(key: str, at: datetime = T0, kind: AlertKind = AlertKind.BACKUP_FAILED) -> Signal:
    return Signal(item="vm1", kind=kind, occurrence=Occurrence(key=key, time=at, seen_at=at, job_id=key),
                  summary=f"backup job {key} of vm1 failed", error_code="UserErrorVmNotFound",
                  error_title="The VM was not found", recommendations=("Check the VM",))


def test_later_occurrences_add_to_one_alert_and_a_repeat_adds_nothing():
    """Four failures of one VM: one Active alert, count 4, last seen at the fourth; a re-read counts once."""
    alert = raised(None, signal("j1"), T0)
    name = alert.name
    for n in range(2, 5):
        alert = raised(alert, signal(f"j{n}", T0 + timedelta(hours=n)), T0 + timedelta(hours=n))
    assert (alert.name, alert.status, alert.count, alert.last_seen) == (name, AlertStatus.ACTIVE, 4, T0 + timedelta(hours=4))
    assert raised(alert, signal("j3", T0 + timedelta(hours=3)), T0 + timedelta(hours=5)) is None


def test_a_newer_success_resolves_and_an_older_one_does_not():
    """A success of an earlier slot than the last failure leaves the alert Active; a later one resolves it."""
    alert = raised(None, signal("j1", T0), T0)
    assert resolved(alert, time=T0 - timedelta(hours=1), by="old", note="", now=T0) is None
    done = resolved(alert, time=T0 + timedelta(hours=1), by="j2", note="backup j2 succeeded", now=T0 + timedelta(hours=2))
    assert (done.status, done.resolved_by, done.resolved_time) == (AlertStatus.RESOLVED, "j2", T0 + timedelta(hours=1))
    assert resolved(done, time=T0 + timedelta(hours=3), by="j3", note="", now=T0) is None


def test_after_resolution_a_new_failure_fires_a_new_alert_and_a_stale_one_does_not():
    """The next failure is a new alert (new name); a failure older than the success that resolved is ignored."""
    first = resolved(raised(None, signal("j1", T0), T0), time=T0 + timedelta(hours=1), by="j2", note="", now=T0 + timedelta(hours=1))
    assert raised(first, signal("j0", T0 + timedelta(minutes=30)), T0 + timedelta(hours=2)) is None
    again = raised(first, signal("j3", T0 + timedelta(hours=3)), T0 + timedelta(hours=3))
    assert again.status is AlertStatus.ACTIVE and again.count == 1 and again.name != first.name


def test_names_say_kind_item_and_time_and_read_back():
    """A name is readable and tells where the alert lives; a foreign string is not a name."""
    name = alert_name("web-01.prod", AlertKind.RPO_BREACH, T0 + timedelta(milliseconds=7))
    assert name == "RpoBreach-web-01.prod-20250602T020000007Z"
    assert parse_alert_name(name) == (AlertKind.RPO_BREACH, "web-01.prod", T0 + timedelta(milliseconds=7))
    assert parse_alert_name("Nope-x-1") is None and parse_alert_name("Bogus-vm-20250602T020000007Z") is None


def test_delivery_sends_fired_then_resolved_and_backs_off_on_failure():
    """A failing webhook is tried again 10 s, 20 s, 40 s on; one that accepts clears the errors; after a day it gives up."""
    alert = raised(None, signal("j1"), T0)
    assert alert.owed == "Fired" and alert.delivery.state is DeliveryState.PENDING
    claimed = leased(alert, T0)
    assert claimed is not None and leased(claimed, T0 + timedelta(seconds=1)) is None
    failed = delivery_failed(claimed, f"POST {SAS_URL}: 503", T0)
    assert failed.delivery.next_attempt_at == T0 + timedelta(seconds=10) and "SECRET" not in failed.delivery.last_error
    assert leased(failed, T0 + timedelta(seconds=5)) is None
    twice = delivery_failed(failed, "503", T0 + timedelta(seconds=10))
    assert twice.delivery.next_attempt_at == T0 + timedelta(seconds=30) and twice.delivery.state is DeliveryState.RETRYING
    ok = delivered(twice, "Fired", T0 + timedelta(seconds=30))
    assert (ok.delivery.state, ok.delivery.attempts, ok.owed) == (DeliveryState.DELIVERED, 0, None)
    done = resolved(ok, time=T0 + timedelta(hours=1), by="j2", note="", now=T0 + timedelta(hours=1))
    assert done.owed == "Resolved"
    gave_up = delivery_failed(delivery_failed(done, "down", T0), "down", T0 + GIVE_UP_AFTER)
    assert gave_up.delivery.state is DeliveryState.FAILED and gave_up.owed is None


def test_the_webhook_document_is_the_common_alert_schema_without_secrets():
    """schemaId, essentials (Fired/Resolved, Sev, ids, times) and the alert context; no SAS anywhere."""
    leaky = Signal(item="vm1", kind=AlertKind.BACKUP_FAILED,
                   occurrence=Occurrence(key="j1", time=T0, seen_at=T0, job_id="j1", error_code="X"),
                   summary=f"failed reading {SAS_URL}", error_title=f"t {SAS_URL}", recommendations=(SAS_URL,))
    alert = raised(None, leaky, T0)
    fired = common_alert_schema(alert, "Fired")
    assert fired["schemaId"] == "azureMonitorCommonAlertSchema"
    essentials = fired["data"]["essentials"]
    assert essentials["monitorCondition"] == "Fired" and essentials["severity"] == "Sev1"
    assert essentials["configurationItems"] == ["vm1"] and essentials["firedDateTime"] == "2025-06-02T02:00:00Z"
    assert "resolvedDateTime" not in essentials and fired["data"]["alertContext"]["count"] == 1
    done = resolved(alert, time=T0 + timedelta(hours=1), by="j2", note="ok", now=T0 + timedelta(hours=1))
    back = common_alert_schema(done, "Resolved")["data"]["essentials"]
    assert back["monitorCondition"] == "Resolved" and back["resolvedDateTime"] == "2025-06-02T03:00:00Z"
    assert "SECRET" not in json.dumps(common_alert_schema(done, "Resolved"))


def _job(operation: str, status: JobStatus, errors=()) -> Job:
    return Job(job_id="j9", vm_name="vm1", slot=T0, start_time=T0, operation=operation, status=status,
               phase=JobPhase.DONE, errors=list(errors))


def test_what_a_final_job_means_for_its_items_alerts():
    """Failures raise their kind; successes resolve; Retention maps to RetentionFailed and PointUnavailable."""
    error = JobError(error_code="E", error_string="bad", error_title="Bad")
    assert [s.kind for s in job_verdict(_job("Backup", JobStatus.FAILED, [error]), T0).signals] == [AlertKind.BACKUP_FAILED]
    assert AlertKind.BACKUP_MISSED in job_verdict(_job("Backup", JobStatus.COMPLETED_WITH_WARNINGS), T0).resolves
    assert job_verdict(_job("Backup", JobStatus.CANCELLED), T0).signals == ()
    assert [s.kind for s in job_verdict(_job("Restore", JobStatus.FAILED), T0).signals] == [AlertKind.RESTORE_FAILED]
    data = JobError(error_code=remediation.RP_DATA_MISSING, error_string="gone")
    kinds = [s.kind for s in job_verdict(_job("Retention", JobStatus.FAILED, [error, data]), T0).signals]
    assert kinds == [AlertKind.RETENTION_FAILED, AlertKind.POINT_UNAVAILABLE]
    running = _job("Backup", JobStatus.IN_PROGRESS)
    assert job_verdict(running, T0).signals == () and job_verdict(running, T0).resolves == ()


def test_a_failed_restore_drill_alerts_and_a_restore_that_found_the_data_gone_says_so():
    """A failed RestoreTest raises RestoreTestFailed (a passing one resolves it); a restore or drill that failed
    because the point's snapshots are gone raises PointUnavailable too, named as found by that job."""
    gone = JobError(error_code=remediation.RESTORE_SOURCE_MISSING, error_string="LUN 0: the snapshot is gone",
                    error_title="The recovery point's data is missing")
    drill = job_verdict(_job("RestoreTest", JobStatus.FAILED, [gone]), T0)
    assert [s.kind for s in drill.signals] == [AlertKind.RESTORE_TEST_FAILED, AlertKind.POINT_UNAVAILABLE]
    assert "found by restore drill job j9" in drill.signals[1].summary
    assert drill.signals[0].summary.startswith("restore drill job j9 of vm1 failed: UserErrorRestoreSourceMissing")
    restore = job_verdict(_job("Restore", JobStatus.FAILED, [gone]), T0)
    assert [s.kind for s in restore.signals] == [AlertKind.RESTORE_FAILED, AlertKind.POINT_UNAVAILABLE]
    assert job_verdict(_job("RestoreTest", JobStatus.COMPLETED), T0).resolves == (AlertKind.RESTORE_TEST_FAILED,)
    other = JobError(error_code=remediation.RESTORE_TEST_FAILED, error_string="no file system")
    assert [s.kind for s in job_verdict(_job("RestoreTest", JobStatus.FAILED, [other]), T0).signals] == \
        [AlertKind.RESTORE_TEST_FAILED]
