"""Each function called as the Functions host calls it, with real azure.functions trigger objects."""
from datetime import datetime, timezone

import pytest
from azure.functions.blob import InputStream
from azure.functions.servicebus import ServiceBusMessage
from azure.functions.timer import TimerRequest

from devhost.demo import create_demo_vm
from shared.bootstrap import Services, reset_services
from shared.clock import FixedClock
from shared.domain.jobs import JobStatus
from tests.fakes import RecordingTaskQueue

NOW = datetime(2026, 3, 1, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def svc(make_settings):
    services = Services(make_settings(), clock=FixedClock(NOW), task_queue=RecordingTaskQueue())
    reset_services(services)
    yield services
    reset_services()


def message(body: bytes, message_id: str = "m-1") -> ServiceBusMessage:
    return ServiceBusMessage(body=body, message_id=message_id, delivery_count=1,
                             application_properties={}, user_properties={})


def test_timer_sends_the_initial_backup_task_of_a_newly_protected_vm(svc):
    """A timer tick turns a newly protected VM into one job and one task on the queue."""
    from functions.scheduler import schedule_backups
    from shared.services.protection import enable_protection

    enable_protection(svc, create_demo_vm(svc, "trig-vm").name)
    schedule_backups(TimerRequest(past_due=False))
    sent = svc.task_queue.sent
    assert [t.vm_name for t in sent] == ["trig-vm"]
    assert svc.jobs.get(sent[0].job_id).status is JobStatus.IN_PROGRESS


def test_malformed_queue_message_is_kept_with_its_reason_not_retried(svc):
    """A message that is not a task is stored in the rejected container and the function returns."""
    from functions.worker import dispatch_snapshot

    dispatch_snapshot(message(b"{not json", message_id="bad-1"))
    container = svc.blob_service.get_container_client(f"{svc.settings.status_container}-rejected")
    stored = [b.name for b in container.list_blobs()]
    assert len(stored) == 1 and "bad-1" in stored[0]
    assert b"not JSON" in container.download_blob(stored[0]).readall()


def test_task_for_an_unknown_vm_fails_its_job_with_advice(svc):
    """A well-formed task naming a VM the inventory lacks ends its job Failed with a recommendation."""
    from functions.worker import dispatch_snapshot
    from shared.domain.jobs import job_id_for
    from shared.domain.task import SnapshotTask, Trigger

    task = SnapshotTask(job_id=job_id_for("ghost-vm", NOW, "OnDemand"), attempt=1, vm_name="ghost-vm",
                        slot=NOW, trigger=Trigger.ON_DEMAND)
    dispatch_snapshot(message(task.to_json().encode(), message_id=task.message_id))
    job = svc.jobs.get(task.job_id)
    assert job.status is JobStatus.FAILED
    assert "ghost-vm" in job.errors[0].error_string and job.errors[0].recommendations


def test_an_unreadable_status_blob_does_not_raise(svc):
    """A status blob for an unknown job, or garbage, is handled without crash-looping the trigger."""
    from functions.status_ingest import ingest_status

    for data in (b"", b"\x00\xff garbage", b'[{"status": {"code": "1"}}]'):
        ingest_status(InputStream(data=data, name=f"{svc.settings.status_container}/nojob/1.Status.txt",
                                  length=len(data), blob_properties={"ETag": '"0x1"'}, metadata={}))


def test_the_planner_plans_its_shard_and_drops_what_is_not_a_plan_request(svc, caplog):
    """A shard request plans that shard's due VMs as of the tick's time; a stray message is logged and dropped."""
    from functions.scheduler import plan_shard_message
    from shared.domain.progress import PlanRequest
    from shared.domain.shards import shard_of
    from shared.services.protection import enable_protection

    enable_protection(svc, create_demo_vm(svc, "plan-vm").name)
    plan_shard_message(message(b'{"shard": "z"}', message_id="stray"))
    assert svc.task_queue.sent == [] and "not a plan request" in caplog.text
    other = next(s for s in "0123456789abcdef" if s != shard_of("plan-vm"))
    plan_shard_message(message(PlanRequest(other, NOW).to_json().encode()))
    assert svc.task_queue.sent == []
    plan_shard_message(message(PlanRequest(shard_of("plan-vm"), NOW).to_json().encode()))
    assert [t.vm_name for t in svc.task_queue.sent] == ["plan-vm"]


@pytest.mark.parametrize("function, what", [("functions.restorer:run_restore_task", "restore task"),
                                            ("functions.retention:retain_part_message", "retention request"),
                                            ("functions.scheduler:plan_shard_message", "plan request")])
@pytest.mark.parametrize("body", [b"{not json", b'{"shard": "z"}', b"\xff\xfe", b"[]"])
def test_a_message_that_is_not_its_queues_request_is_dropped_with_one_line(svc, caplog, function, what, body):
    """Each queue trigger of a request type reads its message once: not that request, one error line names
    the message and why, nothing is raised (a redelivery would not read it either), nothing is sent."""
    import importlib
    import logging

    module, name = function.split(":")
    with caplog.at_level(logging.ERROR):
        getattr(importlib.import_module(module), name)(message(body, message_id="stray-1"))
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and lines[0].startswith("message stray-1 on the ") and f"is not a {what} (" in lines[0]
    assert lines[0].endswith("; dropped") and svc.task_queue.sent == []


def test_each_invocation_is_traced_and_only_the_latest_spans_are_kept(svc):
    """Each blob function call leaves one span naming its blob (never a SAS); a process that runs for days
    keeps only the latest spans, not every one it ever finished."""
    from functions.status_ingest import ingest_status
    from shared.telemetry import Telemetry

    svc.telemetry = Telemetry(recent_spans=2)
    for n in range(3):
        ingest_status(InputStream(data=b"", name=f"{svc.settings.status_container}/nojob{n}/1.Status.txt",
                                  length=0, blob_properties={"ETag": f'"0x{n}"'}, metadata={}))
    assert svc.telemetry.recent_spans() == [("ingest_status", {"blob": f"nojob{n}/1.Status.txt", "etag": f'"0x{n}"'})
                                            for n in (1, 2)]
