"""A snapshot task delivered again and again while its job is Dispatched: the VM snapshots each disk
once, because only the retry policy ever starts another attempt."""
from __future__ import annotations

from azure.servicebus import ServiceBusClient, ServiceBusMessage

from shared.domain.jobs import JobPhase, JobStatus
from shared.domain.planning import task_for
from shared.services.protection import backup_now, enable_protection
from tests.faults.conftest import (commands_handed_to, make_vms, run_worker_and_ingestion, snapshots_per_disk,
                                  work_queue)


def test_ten_redeliveries_while_dispatched_take_one_snapshot_per_disk(stack):
    """Ten more copies of a dispatched job's task, handled four at a time, dispatch nothing: the job
    completes on its one attempt with one blob snapshot per disk."""
    svc, host = stack
    [vm] = make_vms(svc, "redo", 1, data_disks=2)
    enable_protection(svc, vm.name, initial_backup=False)
    job = backup_now(svc, vm.name, retain_until=None)
    assert work_queue(svc) == 1
    assert svc.jobs.get(job.job_id).phase in (JobPhase.DISPATCHED, JobPhase.RUNNING, JobPhase.DONE)

    body = task_for(job, svc.clock.now()).to_json()
    with ServiceBusClient.from_connection_string(svc.settings.service_bus.connection_string) as client, \
            client.get_queue_sender(svc.settings.tasks_queue) as sender:
        # A redelivery carries the same body; distinct message ids get past duplicate detection, as a
        # message redelivered after a lost lock or sent twice by hand does.
        sender.send_messages([ServiceBusMessage(body, message_id=f"{job.expected_task_id}-copy{n}")
                              for n in range(10)])
    assert work_queue(svc) == 10

    [done] = run_worker_and_ingestion(svc, host, [job.job_id])
    assert commands_handed_to(svc, vm) == 1
    assert snapshots_per_disk(svc, [vm]) == {d.name: 1 for d in vm.disks}
    assert done.status is JobStatus.COMPLETED, done.errors
    assert (done.attempt, done.task_id, done.attempts) == (1, f"{job.job_id}_1", [])


def test_copies_of_a_queued_task_racing_each_other_take_one_snapshot_per_disk(stack):
    """Eight copies of a task for a job not yet dispatched, handled by eight workers at the same time:
    one of them claims the attempt, the others hand the VM nothing."""
    svc, host = stack
    [vm] = make_vms(svc, "race", 1, data_disks=1)
    enable_protection(svc, vm.name, initial_backup=False)
    job = backup_now(svc, vm.name, retain_until=None)
    body = task_for(job, svc.clock.now()).to_json()
    with ServiceBusClient.from_connection_string(svc.settings.service_bus.connection_string) as client, \
            client.get_queue_sender(svc.settings.tasks_queue) as sender:
        sender.send_messages([ServiceBusMessage(body, message_id=f"{job.expected_task_id}-copy{n}")
                              for n in range(7)])
    assert work_queue(svc, workers=8) == 8

    [done] = run_worker_and_ingestion(svc, host, [job.job_id])
    assert commands_handed_to(svc, vm) == 1
    assert snapshots_per_disk(svc, [vm]) == {d.name: 1 for d in vm.disks}
    assert done.status is JobStatus.COMPLETED and (done.attempt, done.attempts) == (1, [])
