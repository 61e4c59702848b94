"""The local host runs functions in FUNCTIONS_WORKER_PROCESS_COUNT worker processes, as the Functions
host does: real processes, real Azurite, the app imported by module in each."""
from __future__ import annotations

import os
from collections import Counter

import pytest
from azure.storage.blob import BlobServiceClient

from devhost.azurite import BLOB_EVENTS_SETTING
from devhost.host import LocalFunctionsHost
from devhost.workers import PROCESS_COUNT_SETTING
from shared.errors import ConfigurationError
from tests.devhost import worker_app
from tests.polling import eventually

pytestmark = [pytest.mark.timeout(180), pytest.mark.integration]


@pytest.fixture
def env(azurite, unique_name):
    return {"CONTAINER": unique_name("status"), "SEEN": unique_name("seen"), "ST": azurite.connection_string,
            "AzureWebJobsStorage": azurite.host_connection_string, PROCESS_COUNT_SETTING: "2",
            BLOB_EVENTS_SETTING: azurite.blob_events}


def _invocations(service: BlobServiceClient, env) -> Counter:
    """(blob, worker pid) of each recorded invocation."""
    names = service.get_container_client(env["SEEN"]).list_blob_names()
    return Counter(tuple(name.rsplit("/", 2)[:2]) for name in names)


def test_two_worker_processes_ingest_a_burst_with_no_blob_lost_or_doubled(env, container, unique_name):
    """A burst written while the host runs: every blob is handled exactly once, and both workers,
    processes other than this one, share the work."""
    burst = [f"job{i:03d}/1" for i in range(80)]
    with BlobServiceClient.from_connection_string(env["ST"]) as service:
        service.get_container_client(env["SEEN"]).create_container()
        host = LocalFunctionsHost(worker_app.app, env, host_id=unique_name("host"), poll_interval=0.05).start()
        try:
            for name in burst:
                container.upload_blob(f"{name}.Status.txt", b"report", overwrite=True)
            assert eventually(lambda: sum(_invocations(service, env).values()) >= len(burst), timeout=120)
            workers = set(host._workers.pids)
        finally:
            host.stop()
        seen = _invocations(service, env)
    per_blob = Counter(blob for blob, _pid in seen.elements())
    assert per_blob == Counter({f"{name}.Status.txt": 1 for name in burst})
    pids = {int(pid) for _blob, pid in seen}
    assert len(workers) == 2 and pids == workers and os.getpid() not in pids


def test_a_failing_function_in_a_worker_is_retried_and_its_worker_keeps_serving(env, container, unique_name):
    """A function raising in a worker process fails that invocation only: the blob is tried again on
    the next pass (it is not written again), and the other blobs are handled."""
    with BlobServiceClient.from_connection_string(env["ST"]) as service:
        service.get_container_client(env["SEEN"]).create_container()
        with LocalFunctionsHost(worker_app.app, env, host_id=unique_name("host")) as host:
            container.upload_blob("bad/1.Status.txt", b"fail")
            container.upload_blob("good/1.Status.txt", b"report")
            assert host.scan_blobs("record") == 2
            assert host.scan_blobs("record") == 1            # the failed one, again
            assert host.scan_blobs("record") == 1
        assert [blob for blob, _pid in _invocations(service, env)] == ["good/1.Status.txt"]


def test_more_than_one_worker_needs_the_app_at_module_level(env):
    import azure.functions as func

    local_app = func.FunctionApp()
    with pytest.raises(ConfigurationError, match="module global"):
        LocalFunctionsHost(local_app, env)
    with pytest.raises(ConfigurationError, match=PROCESS_COUNT_SETTING):
        LocalFunctionsHost(worker_app.app, {**env, PROCESS_COUNT_SETTING: "0"})
