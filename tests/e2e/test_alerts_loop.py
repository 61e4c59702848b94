"""Alerts on the local stack (the real Function App under the local host, Azurite, the local Service Bus,
the webhook receiver of devhost/webhook.py; the evaluator on its own timer, every 5 s here where the default
is 30 s, so the test waits out short ticks): a backup that fails raises one Active alert delivered in the
common alert schema within 60 s; three more failures raise its count to 4
and send nothing; the next success resolves it; a webhook that is down at first gets it later; a slot with
no backup raises BackupMissed."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from devhost.demo import create_demo_vm
from devhost.host import LocalFunctionsHost
from devhost.processes import stop_processes_under
from devhost.webhook import WebhookReceiver
from shared.bootstrap import Services, reset_services
from shared.domain import remediation
from shared.domain.alerts import AlertKind, AlertStatus
from shared.domain.jobs import JobStatus
from shared.domain.policy import Frequency, Policy, StandardSchedule
from shared.domain.protection import ProtectedItem
from shared.services.protection import backup_now, enable_protection
from tests.e2e.conftest import run_cycle
from tests.polling import eventually

pytestmark = pytest.mark.long


@pytest.fixture
def alert_loop(make_settings, local_servicebus, storage_connection_string, unique_name):
    """(services, host, receiver): the app with its webhook pointing at a local receiver."""
    with WebhookReceiver(printer=None) as receiver:
        settings = make_settings(service_bus=local_servicebus.connection_string, ALERT_WEBHOOK_URL=receiver.url,
                                 ALERT_SCHEDULE="*/5 * * * * *")
        env = {**settings.binding_values(), "AzureWebJobsStorage": storage_connection_string}
        svc = Services(settings)
        reset_services(svc)
        import function_app

        host = LocalFunctionsHost(function_app.app, env, host_id=unique_name("host"))
        yield svc, host, receiver
        host.stop()
        stop_processes_under(settings.local_vm_root)
        reset_services()


def protected_vm(svc, host, name):
    """A demo VM protected with DefaultPolicy, its initial backup done."""
    vm = create_demo_vm(svc, name)
    enable_protection(svc, vm.name, "DefaultPolicy")
    (job,) = run_cycle(svc, host)
    assert job.status is JobStatus.COMPLETED, job.errors
    return vm


def failing_backup(svc, vm_name):
    """An on-demand backup the worker fails at once: the VM is gone from the inventory."""
    return backup_now(svc, vm_name, retain_until=None)


def finished(svc, job_id):
    job = svc.jobs.get(job_id)
    return job if job is not None and job.is_terminal else None


def test_a_failure_alerts_once_counts_repeats_and_resolves_on_the_next_success(alert_loop):
    """Fail, then fail three times more, then succeed: one alert (count 4), Fired within 60 s of the job's
    end and Resolved after the success, each delivered once in the common alert schema."""
    svc, host, receiver = alert_loop
    vm = protected_vm(svc, host, "alert-vm")
    host.start()        # the worker, the blob trigger and the evaluator's timer (every 5 s) run on their own
    svc.inventory.delete_vm(vm.name)
    job = failing_backup(svc, vm.name)
    assert eventually(lambda: finished(svc, job.job_id), timeout=60)
    failed = svc.jobs.get(job.job_id)
    assert failed.status is JobStatus.FAILED and failed.errors[0].error_code == remediation.VM_NOT_FOUND
    assert eventually(lambda: receiver.received, timeout=90)
    delivered_at = datetime.now(timezone.utc)
    assert delivered_at - failed.end_time <= timedelta(seconds=60), (failed.end_time, delivered_at)
    (alert,) = svc.alerts.list()
    assert receiver.conditions() == [("Fired", alert.name)] and alert.kind is AlertKind.BACKUP_FAILED
    essentials = receiver.received[0]["data"]["essentials"]
    assert receiver.received[0]["schemaId"] == "azureMonitorCommonAlertSchema"
    assert essentials["configurationItems"] == [vm.name] and essentials["severity"] == "Sev1"

    more = []
    for _ in range(3):
        more.append(failing_backup(svc, vm.name))
        assert eventually(lambda: finished(svc, more[-1].job_id), timeout=60)
    assert eventually(lambda: svc.alerts.get(vm.name, AlertKind.BACKUP_FAILED).count == 4, timeout=90)
    assert receiver.conditions() == [("Fired", alert.name)]

    svc.inventory.put_vm(vm)
    ok = backup_now(svc, vm.name, retain_until=None)
    assert eventually(lambda: finished(svc, ok.job_id), timeout=90)
    assert svc.jobs.get(ok.job_id).status is JobStatus.COMPLETED
    assert eventually(lambda: len(receiver.received) == 2, timeout=90)
    assert receiver.conditions() == [("Fired", alert.name), ("Resolved", alert.name)]
    done = svc.alerts.find(alert.name)
    assert (done.status, done.count, done.resolved_by) == (AlertStatus.RESOLVED, 4, ok.job_id)


def test_a_webhook_that_is_down_at_first_gets_the_alert_later(alert_loop):
    """The receiver answers 503 to the first tries: the alert waits, Retrying, and is delivered once it is up."""
    svc, host, receiver = alert_loop
    vm = protected_vm(svc, host, "down-vm")
    receiver.down = True
    host.start()
    svc.inventory.delete_vm(vm.name)
    job = failing_backup(svc, vm.name)
    def retrying():
        current = svc.alerts.get(vm.name, AlertKind.BACKUP_FAILED)
        return current if current is not None and current.delivery.state.value == "Retrying" else None

    # The refusal is recorded on the alert just after the receiver answers 503: wait for the record.
    assert eventually(retrying, timeout=90)
    alert = retrying() or svc.alerts.get(vm.name, AlertKind.BACKUP_FAILED)
    assert receiver.refused >= 1 and alert.delivery.last_error
    assert receiver.received == []
    receiver.down = False
    assert eventually(lambda: receiver.received, timeout=120)
    assert receiver.conditions() == [("Fired", alert.name)]
    # The delivery is recorded on the alert just after the receiver answers: wait for the record.
    assert eventually(lambda: svc.alerts.get(vm.name, AlertKind.BACKUP_FAILED).delivery.state.value == "Delivered",
                      timeout=30)
    assert alert.occurrences[0].job_id == job.job_id


def test_a_slot_with_no_backup_raises_a_missed_slot_alert(alert_loop):
    """A VM whose policy had a slot between 4 and 3 hours ago and no backup since: the evaluator's next run
    (the timer fired as the host fires it) raises BackupMissed for that slot, delivered to the webhook."""
    svc, host, receiver = alert_loop
    now = datetime.now(timezone.utc)
    slot = (now - timedelta(hours=3, minutes=30)).replace(second=0, microsecond=0)
    slot = slot.replace(minute=0 if slot.minute < 30 else 30)
    policy = Policy(name="Missed", schedule=StandardSchedule(Frequency.DAILY, slot.time()),
                    modified_at=now - timedelta(hours=6))
    svc.policies.create(policy)
    since = now - timedelta(hours=5)
    svc.protected_items.add(ProtectedItem(vm_name="missed-vm", policy_name="Missed", protected_since=since,
                                          policy_assigned_at=since, initial_backup_pending=False))
    host.fire_timer("evaluate_alerts")
    alert = svc.alerts.get("missed-vm", AlertKind.BACKUP_MISSED)
    assert alert is not None and alert.is_active and alert.occurrences[0].time == slot
    assert receiver.conditions()[0] == ("Fired", alert.name)
    host.fire_timer("evaluate_alerts")
    assert svc.alerts.get("missed-vm", AlertKind.BACKUP_MISSED).count == 1
