"""Hostile tasks and odd records through the local stack: a task dated 9999 put on the real queue is
rejected with its reason and creates nothing, and retention still plans the whole fleet."""
import json
import time
from datetime import datetime, timezone

from azure.servicebus import ServiceBusClient, ServiceBusMessage

from devhost.demo import create_demo_vm
from shared.bootstrap import reset_services
from shared.cli import main
from shared.domain.jobs import JobStatus
from shared.domain.recovery import RecoveryPoint
from shared.domain.task import SCHEMA, Trigger
from shared.ports import JobQuery
from tests.e2e.conftest import run_cycle

HOSTILE_JOB = "0f6c1e2a-7b1d-4a57-9c0e-2d8e1c4b9a99"


def _cli(svc, capsys, *argv: str) -> tuple[int, str]:
    reset_services(svc)
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_a_task_dated_9999_is_rejected_and_retention_still_plans_the_fleet(loop, local_servicebus, capsys):
    """Sent on the real queue beside a real backup: the hostile task is kept with a reason naming its slot,
    makes no job and no point; the real VM is backed up; `retention plan -o json` exits 0 for the fleet,
    also once a point dated 9999 (written before tasks were bounded) sits in the table."""
    from shared.services.protection import enable_protection

    svc, host = loop
    vm = create_demo_vm(svc, "e2e-hostile")
    enable_protection(svc, vm.name, "DefaultPolicy")
    body = {"schema": SCHEMA, "jobId": HOSTILE_JOB, "attempt": 1, "vmName": vm.name,
            "slot": "9999-12-31T00:00:00Z", "trigger": "OnDemand", "policyName": None, "retainUntil": None}
    with ServiceBusClient.from_connection_string(local_servicebus.connection_string) as client, \
            client.get_queue_sender(svc.settings.tasks_queue) as sender:
        sender.send_messages(ServiceBusMessage(json.dumps(body), message_id=f"{HOSTILE_JOB}_1"))

    (job,) = run_cycle(svc, host)
    assert job.vm_name == vm.name and job.status is JobStatus.COMPLETED, job.errors
    kept = svc.blob_service.get_blob_client(svc.status_blobs.rejected_container, f"{HOSTILE_JOB}_1.json")
    deadline = time.monotonic() + 30
    while not kept.exists() and time.monotonic() < deadline:    # the worker settles it beside the cycle
        host.drain_queue("dispatch_snapshot", max_wait=0.2)
    reason = json.loads(kept.download_blob().readall())["reason"]
    assert "slot 9999-12-31T00:00:00Z" in reason and "window" in reason
    assert svc.jobs.get(HOSTILE_JOB) is None
    assert [p.vm_name for group in svc.recovery_points.scan() for p in group] == [vm.name]

    code, out = _cli(svc, capsys, "retention", "plan", "-o", "json")
    assert code == 0 and json.loads(out)["problems"] == []

    (point,) = svc.recovery_points.list_for_vm(vm.name)
    legacy = RecoveryPoint(name="999999999999999999", vm_name=vm.name, job_id=HOSTILE_JOB, trigger=Trigger.ON_DEMAND,
                           created_at=datetime(9999, 12, 31, tzinfo=timezone.utc), disks=point.disks)
    svc.recovery_points.add_if_absent(legacy)
    code, out = _cli(svc, capsys, "retention", "plan", "-o", "json")
    assert code == 0
    assert [(p["vmName"], p["kind"], p["pointName"]) for p in json.loads(out)["problems"]] == [
        (vm.name, "TimeInFuture", legacy.name)]
    code, out = _cli(svc, capsys, "recoverypoint", "list", "--vm", vm.name, "-o", "json")
    assert code == 0 and {p["name"] for p in json.loads(out)} == {point.name, legacy.name}
    code, _ = _cli(svc, capsys, "retention", "run", "-o", "json")
    assert code == 0
    assert [j.operation for j in svc.jobs.query(JobQuery(vm_name=vm.name, operation="Retention")).jobs] == [
        "Retention"]
