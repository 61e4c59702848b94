"""Job ids Table Storage cannot hold (/ \\ # ?, control characters, over 128 characters) are refused
where they enter, as permanent errors: no redelivery storm, no job, a clear reason."""
from __future__ import annotations

import json

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue

from shared.cli import main
from shared.ports import JobQuery
from shared.domain.task import parse_blob_name

BAD_IDS = ["a/b", "job#1", "what?", "back\\slash", "bell\x07", "x" * 129]


def _task_body(job_id: str) -> str:
    return json.dumps({"schema": "vmsnap.snapshot-task/1", "jobId": job_id, "attempt": 1, "vmName": "vm1",
                       "slot": "2026-11-25T22:30:00Z", "trigger": "OnDemand"})


def test_tasks_with_refused_job_ids_are_settled_once_and_kept_with_the_reason(stack):
    """Each such task is handled on its first delivery, kept in the rejected container with why, and
    never comes back: nothing on the queue, nothing dead-lettered, no job record."""
    svc, host = stack
    with ServiceBusClient.from_connection_string(svc.settings.service_bus.connection_string) as client:
        with client.get_queue_sender(svc.settings.tasks_queue) as sender:
            sender.send_messages([ServiceBusMessage(_task_body(job_id), message_id=f"bad-{n}")
                                  for n, job_id in enumerate(BAD_IDS)])
        assert host.drain_queue("dispatch_snapshot", max_wait=0.5) == len(BAD_IDS)
        for sub_queue in (None, ServiceBusSubQueue.DEAD_LETTER):
            with client.get_queue_receiver(svc.settings.tasks_queue, sub_queue=sub_queue) as receiver:
                assert receiver.peek_messages(max_message_count=20) == []
    rejected = svc.blob_service.get_container_client(f"{svc.settings.status_container}-rejected")
    stored = {blob.name: json.loads(rejected.download_blob(blob.name).readall()) for blob in rejected.list_blobs()}
    assert sorted(stored) == sorted(f"bad-{n}.json" for n in range(len(BAD_IDS)))
    assert all(doc["deliveryCount"] == 1 and "jobId" in doc["reason"] for doc in stored.values())
    assert svc.jobs.query(JobQuery()).jobs == []


@pytest.mark.parametrize("job_id", ["a/b", "job#1", "x" * 129])
def test_the_cli_refuses_such_a_job_id_as_a_usage_error(job_id, capsys, monkeypatch):
    """`vmsnap job show|stop|wait` with such an id exits 2 with one line, before any setting is read."""
    monkeypatch.delenv("BackupStorage", raising=False)
    for command in ("show", "stop", "wait"):
        assert main(["job", command, "--name", job_id]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ERROR:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_status_blob_names_follow_the_same_rule():
    """A status blob whose job part breaks the rule is not taken for a job's; the longest valid one is."""
    assert parse_blob_name("job#1/1.Status.txt") is None
    assert parse_blob_name(f"{'x' * 129}/1.Status.txt") is None
    assert parse_blob_name(f"c/{'x' * 128}/2.Status.txt") == ("x" * 128, 2)
