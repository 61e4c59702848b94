"""backup-now while Service Bus cannot take its task: no orphan job blocks the next request, and the
failed job that is now the VM's last backup says why and what to do."""
from __future__ import annotations

import socket

import pytest

from shared.bootstrap import Services
from shared.domain import remediation
from shared.domain.jobs import JobStatus
from shared.errors import ConfigurationError, TransientError
from shared.ports import JobQuery
from shared.services.protection import backup_now, enable_protection, get_protected_item
from shared.services.scheduling import run_scheduling_tick
from shared.settings import Settings
from tests.faults.conftest import make_vms


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _with_service_bus(svc, stack_env, connection: str) -> Services:
    return Services(Settings.from_env({**stack_env, "ServiceBusConnection": connection}), clock=svc.clock)


def test_backup_now_with_a_broken_service_bus_connection_leaves_no_blocking_orphan(stack, stack_env):
    """A malformed ServiceBusConnection is an error before any job exists; an unreachable namespace fails
    the job with the reason and advice and gives the item back; the next backup-now then runs, and it
    stands in for the pending initial backup."""
    svc, _ = stack
    [vm] = make_vms(svc, "sbfail", 1)
    enable_protection(svc, vm.name, initial_backup=True)

    malformed = _with_service_bus(svc, stack_env, "Endpoint=sb://;SharedAccessKeyName=x")
    with pytest.raises(ConfigurationError, match="ServiceBusConnection"):
        backup_now(malformed, vm.name, retain_until=None)
    assert svc.jobs.query(JobQuery(vm_name=vm.name)).jobs == []

    unreachable = _with_service_bus(svc, stack_env, f"Endpoint=sb://127.0.0.1:{_closed_port()};"
                                                    "SharedAccessKeyName=x;SharedAccessKey=y;UseDevelopmentEmulator=true;")
    with pytest.raises(TransientError):
        backup_now(unreachable, vm.name, retain_until=None)
    [orphan] = svc.jobs.query(JobQuery(vm_name=vm.name)).jobs
    assert orphan.status is JobStatus.FAILED and orphan.end_time is not None
    assert orphan.errors[0].error_code == remediation.TASK_NOT_QUEUED and orphan.errors[0].recommendations
    status = get_protected_item(svc, vm.name)
    assert (status.item.in_progress_job_id, status.item.last_job_id) == (None, None)
    assert (status.last_job.job_id, status.last_job.status) == (orphan.job_id, JobStatus.FAILED)
    assert status.item.initial_backup_pending

    job = backup_now(svc, vm.name, retain_until=None)
    assert svc.protected_items.get(vm.name).in_progress_job_id == job.job_id
    assert run_scheduling_tick(svc).jobs_created == 0          # no second, "initial" backup minutes later
