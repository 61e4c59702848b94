"""The local host keeps its workers busy: blob receipts match the listing (an idle pass downloads
nothing), blob functions run in parallel up to maxDegreeOfParallelism, and a slow queue message
does not hold back the others. Real Azurite, local Service Bus and azure.functions objects."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from urllib.parse import urlparse

import azure.functions as func
import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage

from devhost.host import HostConfig, LocalFunctionsHost
from tests.devhost.conftest import queue_app

pytestmark = pytest.mark.timeout(120)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class _Concurrency:
    """How many invocations run at once, and the most seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = self.peak = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc) -> None:
        with self._lock:
            self.now -= 1


def blob_app(on_blob) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.function_name("status")
    @app.blob_trigger(arg_name="blob", path="%CONTAINER%/{name}.Status.txt", connection="ST")
    def status(blob: func.InputStream) -> None:
        on_blob(blob)

    return app


@pytest.fixture
def env(local_servicebus, storage_connection_string, unique_name):
    return {"SB": local_servicebus.connection_string, "Q_IN": unique_name("in"),
            "CONTAINER": unique_name("status"), "ST": storage_connection_string,
            "AzureWebJobsStorage": storage_connection_string}


def _upload(container, count: int, stem: str = "job") -> None:
    for i in range(count):
        container.upload_blob(f"{stem}{i}.Status.txt", f"report {i}".encode(), overwrite=True)


def test_host_json_leaves_the_blob_parallelism_to_the_functions_default():
    """The app's host.json sets no maxDegreeOfParallelism: the Functions default, 8 blob functions at once per
    core, is what the host runs (docs/ingestion.md, "Blob functions at once")."""
    doc = json.loads((PROJECT_ROOT / "host.json").read_text())
    assert "maxDegreeOfParallelism" not in doc["extensions"]["blobs"]
    cores = os.cpu_count() or 1
    assert HostConfig.from_host_json(PROJECT_ROOT / "host.json").max_degree_of_parallelism == 8 * cores


def test_a_blob_parallelism_in_host_json_is_the_number_of_blob_functions_at_once(tmp_path):
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0",
                                                    "extensions": {"blobs": {"maxDegreeOfParallelism": 3}}}))
    assert HostConfig.from_host_json(tmp_path / "host.json").max_degree_of_parallelism == 3


def test_an_idle_pass_downloads_nothing_even_after_a_restart(env, container, unique_name):
    """Blobs already handled are recognised from the listing alone, also by a restarted host."""
    _upload(container, 12)
    seen, requests = [], []

    def record(request) -> None:
        requests.append((request.http_request.method, request.http_request.url))

    host_id = unique_name("host")
    with LocalFunctionsHost(blob_app(lambda b: seen.append(b.name)), env, host_id=host_id) as first:
        assert first.scan_blobs("status") == 12
    options = {"raw_request_hook": record}
    with LocalFunctionsHost(blob_app(lambda b: seen.append(b.name)), env, host_id=host_id,
                            storage_client_options=options) as second:
        assert second.scan_blobs("status") == 0
        assert second.scan_blobs("status") == 0
    downloads = [url for method, url in requests if method == "GET" and "comp=list" not in url
                 and urlparse(url).path.split("/")[2] == env["CONTAINER"]]     # /<account>/<container>/<blob>
    assert downloads == []
    assert len(seen) == 12


def test_blob_functions_run_in_parallel_up_to_the_limit(env, container, unique_name):
    """Four blobs with maxDegreeOfParallelism 4 are handled at the same time, never more than four."""
    _upload(container, 12)
    concurrency = _Concurrency()
    together = threading.Barrier(4, timeout=20)

    def handle(blob) -> None:
        with concurrency:
            together.wait()   # passes only when four invocations are running at once

    config = HostConfig(max_degree_of_parallelism=4)
    with LocalFunctionsHost(blob_app(handle), env, config, host_id=unique_name("host")) as host:
        assert host.scan_blobs("status") == 12
        assert host.scan_blobs("status") == 0       # all twelve succeeded: no retry is due
    assert concurrency.peak == 4


def test_a_slow_message_does_not_hold_back_the_others(env, unique_name):
    """With two concurrent calls, one message that runs long leaves the other slot taking new messages."""
    fast_done = threading.Event()
    fast: list[str] = []

    def handle(body: str) -> None:
        if body == "slow":
            assert fast_done.wait(30), "the fast messages waited for the slow one"
            return
        fast.append(body)
        if len(fast) == 6:
            fast_done.set()

    with ServiceBusClient.from_connection_string(env["SB"]) as client, client.get_queue_sender(env["Q_IN"]) as sender:
        sender.send_messages([ServiceBusMessage(b) for b in ["slow", *(f"fast{i}" for i in range(6))]])
    config = HostConfig(max_concurrent_calls=2)
    with LocalFunctionsHost(queue_app(handle), env, config, host_id=unique_name("host")) as host:
        assert host.drain_queue("work") == 7
    assert fast_done.is_set()
    assert sorted(fast) == [f"fast{i}" for i in range(6)]
