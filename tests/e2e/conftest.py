"""What the end-to-end tests share: the real Function App under the local host, on Azurite and the local
Service Bus, on the real clock, and one backup cycle through it."""
import time

import pytest

from devhost.host import LocalFunctionsHost
from devhost.processes import stop_processes_under
from shared.bootstrap import Services, reset_services
from shared.ports import JobQuery


@pytest.fixture
def loop_with(make_settings, local_servicebus, storage_connection_string, unique_name):
    """``loop_with(**settings)``: (services, host) as ``loop`` gives them, with these app settings added."""
    made = []

    def build(**extra: str):
        settings = make_settings(service_bus=local_servicebus.connection_string, **extra)
        env = {**settings.binding_values(), "AzureWebJobsStorage": storage_connection_string}
        svc = Services(settings)
        reset_services(svc)
        import function_app

        host = LocalFunctionsHost(function_app.app, env, host_id=unique_name("host"))
        made.append((settings, host))
        return svc, host

    yield build
    for settings, host in made:
        host.stop()
        stop_processes_under(settings.local_vm_root)
    reset_services()


@pytest.fixture
def loop(loop_with):
    """(services, host): the app installed as the composition root, its host not started (tests drive it)."""
    return loop_with()


def run_cycle(svc, host, timeout=60.0):
    host.fire_timer("schedule_backups")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        host.drain_queue("dispatch_snapshot", max_wait=0.2)
        host.scan_blobs("ingest_status")
        jobs = svc.jobs.query(JobQuery()).jobs
        if jobs and all(j.status.is_terminal for j in jobs):
            return jobs
        time.sleep(0.2)
    pytest.fail(f"the cycle did not finish in {timeout} s: {svc.jobs.query(JobQuery()).jobs}")
