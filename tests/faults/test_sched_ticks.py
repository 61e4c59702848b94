"""Overlapping scheduling ticks on the real parts: however many run at once, in threads of one process
or in separate processes, each of 24 VMs gets exactly one job for the slot, none is cancelled, and all
of them complete once the worker and the ingestion have run."""
from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from datetime import datetime

import pytest
from azure.servicebus import ServiceBusClient

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.jobs import JobPhase, JobStatus
from shared.ports import JobQuery
from shared.services.protection import enable_protection
from shared.services.scheduling import run_scheduling_tick
from shared.settings import Settings
from tests.faults.conftest import make_vms, run_worker_and_ingestion, snapshots_per_disk

pytestmark = pytest.mark.long

VMS = 24    # each races in every tick; all of them then go through a whole backup


def _tick(env: dict[str, str], at: datetime, barrier) -> None:
    """One tick as one host would run it: its own Services (clients, sender), started with the others."""
    svc = Services(Settings.from_env(env), clock=FixedClock(at))
    svc.protected_items, svc.jobs, svc.task_queue, svc.policies, svc.progress   # connect before the start line
    barrier.wait(timeout=60)
    run_scheduling_tick(svc)
    svc.task_queue.close()


def _tick_in_process(env: dict[str, str], at: str, barrier, errors) -> None:
    try:
        _tick(env, datetime.fromisoformat(at), barrier)
    except BaseException as exc:        # reported to the test, which fails with it
        errors.put(repr(exc))
        raise


def _protected_vms(svc) -> list:
    vms = make_vms(svc, "tick", VMS)
    for vm in vms:
        enable_protection(svc, vm.name, initial_backup=True)
    return vms


def _queued_messages(svc) -> Counter:
    with ServiceBusClient.from_connection_string(svc.settings.service_bus.connection_string) as client, \
            client.get_queue_receiver(svc.settings.tasks_queue) as receiver:
        return Counter(str(m.message_id) for m in receiver.peek_messages(max_message_count=5 * VMS))


def _assert_one_running_job_per_vm(svc, vms) -> list[str]:
    items = [svc.protected_items.get(vm.name) for vm in vms]
    per_vm = [svc.jobs.query(JobQuery(vm_name=vm.name)).jobs for vm in vms]
    assert [len(jobs) for jobs in per_vm] == [1] * VMS
    jobs = [job for [job] in per_vm]
    job_ids = [job.job_id for job in jobs]
    assert {job.trigger for job in jobs} == {"Initial"}
    assert Counter((j.status, j.phase) for j in jobs) == Counter({(JobStatus.IN_PROGRESS, JobPhase.QUEUED): VMS})
    assert all(not item.initial_backup_pending and item.skipped == [] for item in items)
    assert _queued_messages(svc) == Counter({f"{job_id}_1": 1 for job_id in job_ids})
    return job_ids


def _assert_all_complete(svc, host, vms, job_ids) -> None:
    jobs = run_worker_and_ingestion(svc, host, job_ids)
    assert Counter(j.status for j in jobs) == Counter({JobStatus.COMPLETED: VMS}), \
        [(j.vm_name, j.status.value, j.errors[:1]) for j in jobs if j.status is not JobStatus.COMPLETED][:3]
    assert set(snapshots_per_disk(svc, vms).values()) == {1}


@pytest.mark.parametrize("ticks", [2, 5])
def test_concurrent_ticks_in_threads_give_one_job_per_vm_that_completes(stack, stack_env, ticks):
    """Two or five ticks at the same moment (threads): 24 jobs, none cancelled, every one completes."""
    svc, host = stack
    vms = _protected_vms(svc)
    barrier = threading.Barrier(ticks)
    threads = [threading.Thread(target=_tick, args=(stack_env, svc.clock.now(), barrier)) for _ in range(ticks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    job_ids = _assert_one_running_job_per_vm(svc, vms)
    _assert_all_complete(svc, host, vms, job_ids)


def test_concurrent_ticks_in_separate_processes_give_one_job_per_vm_that_completes(stack, stack_env):
    """Five ticks in five processes (five hosts) at the same moment: 24 jobs, none cancelled, all complete."""
    svc, host = stack
    vms = _protected_vms(svc)
    context = multiprocessing.get_context("spawn")
    barrier, errors = context.Barrier(5), context.Queue()
    processes = [context.Process(target=_tick_in_process, args=(stack_env, svc.clock.now().isoformat(), barrier,
                                                                 errors)) for _ in range(5)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    reported = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert [p.exitcode for p in processes] == [0] * 5, reported
    job_ids = _assert_one_running_job_per_vm(svc, vms)
    _assert_all_complete(svc, host, vms, job_ids)
