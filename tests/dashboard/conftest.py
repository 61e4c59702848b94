"""A small fleet on in-memory ports (tests/monitoring/conftest.py), installed as the app's services, and the
dashboard's functions called as the Functions host calls them: real ``azure.functions.HttpRequest`` objects."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from urllib.parse import urlencode

import azure.functions as func
import pytest

from shared.bootstrap import reset_services
from shared.domain import remediation
from shared.domain.job_transitions import mark_failed
from shared.domain.jobs import Job, JobError, JobPhase, JobStatus
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import RecoveryPoint
from tests.monitoring.conftest import T0, memory_services

HOSTILE_NAME = "<script>alert(1)</script>"
ERROR = JobError.from_remediation(remediation.for_service_error(remediation.VM_NOT_FOUND),
                                  detail=f"VM {HOSTILE_NAME} is gone")


def protect(svc, vm: str, since=T0 - timedelta(days=10)) -> None:
    svc.protected_items.add(ProtectedItem(vm_name=vm, policy_name="DefaultPolicy", protected_since=since,
                                          policy_assigned_at=since, initial_backup_pending=False))


def backup(svc, vm: str, *, ok: bool, at) -> Job:
    """A backup job ended through the job store, with its recovery point when it succeeded."""
    job = Job.new_backup(vm_name=vm, slot=at, now=at, trigger="Scheduled", policy_name="DefaultPolicy")
    svc.jobs.create_if_absent(job)
    if not ok:
        return svc.jobs.update(job.job_id, lambda j: mark_failed(j, ERROR, at + timedelta(minutes=5)))
    done = svc.jobs.update(job.job_id, lambda j: replace(j, status=JobStatus.COMPLETED, phase=JobPhase.DONE,
                                                         end_time=at + timedelta(minutes=5)))
    svc.recovery_points.add_if_absent(RecoveryPoint(name=f"p{int(at.timestamp())}", vm_name=vm, created_at=at,
                                                    job_id=job.job_id, policy_name="DefaultPolicy"))
    return done


def seed_fleet(svc) -> None:
    """web-01 Healthy; db-01 AtRisk, its last backup failed; new-vm Unprotected."""
    for vm in ("web-01", "db-01", "new-vm"):
        protect(svc, vm)
    for days in range(1, 6):
        backup(svc, "web-01", ok=True, at=T0 - timedelta(days=days) + timedelta(hours=10))
    backup(svc, "db-01", ok=True, at=T0 - timedelta(days=4))
    backup(svc, "db-01", ok=False, at=T0 - timedelta(hours=2))


@pytest.fixture
def fleet():
    svc = memory_services()
    seed_fleet(svc)
    reset_services(svc)
    yield svc
    reset_services()


@pytest.fixture(scope="session")
def functions():
    import function_app
    from devhost.host import read_functions

    return {spec.name: spec for spec in read_functions(function_app.app)}


@pytest.fixture
def call(functions):
    """``call(function, path, params, route)``: the function's HttpResponse to a GET."""

    def run(name: str, path: str, params: dict | None = None, route: dict | None = None) -> func.HttpResponse:
        query = f"?{urlencode(params)}" if params else ""
        request = func.HttpRequest("GET", f"http://127.0.0.1:7071{path}{query}", headers={}, params=params or {},
                                   route_params=route or {}, body=b"")
        return functions[name].call(req=request)

    return run
