"""How the local host finds blobs: an idle pass costs the listing alone, page by page, whatever the
container already holds; receipts go to the host's own storage account; a trigger declared with the
Event Grid source is served by the same scan; Azurite keeps idle connections open. Real Azurite and
azure.functions objects."""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import azure.functions as func
import pytest
from azure.storage.blob import BlobServiceClient

import devhost.host
from devhost.azurite import HOST_ACCOUNT, KEEP_ALIVE_SECONDS
from devhost.host import HOSTS_CONTAINER, LocalFunctionsHost, _listed_etags
from devhost.receipts import read_receipts
from functions.status_ingest import SOURCE_SETTING, blob_source
from shared.errors import ConfigurationError

pytestmark = [pytest.mark.timeout(120), pytest.mark.integration]

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def blob_app(seen: list[str], source: func.BlobSource | None = None) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.function_name("status")
    @app.blob_trigger(arg_name="blob", path="%CONTAINER%/{name}.Status.txt", connection="ST", source=source)
    def status(blob: func.InputStream) -> None:
        seen.append(f"{blob.name}={blob.read().decode()}")

    return app


@pytest.fixture
def env(azurite, unique_name):
    return {"CONTAINER": unique_name("status"), "ST": azurite.connection_string,
            "AzureWebJobsStorage": azurite.host_connection_string}


def _upload(container, names: list[str], data: bytes = b"first") -> None:
    for name in names:
        container.upload_blob(name, data, overwrite=True)


def test_an_idle_pass_over_many_pages_sends_only_the_listing(env, container, unique_name, monkeypatch):
    """Handled blobs cost one listing request per page and nothing else, and every page is read."""
    monkeypatch.setattr(devhost.host, "LIST_PAGE", 5)
    names = [f"job{i:02d}/1.Status.txt" for i in range(12)] + ["job00/1.Logs.txt"]
    _upload(container, names)
    seen: list[str] = []
    requests: list[str] = []
    options = {"raw_request_hook": lambda request: requests.append(request.http_request.url)}
    with LocalFunctionsHost(blob_app(seen), env, host_id=unique_name("host"),
                            storage_client_options=options) as host:
        assert host.scan_blobs("status") == 12        # three pages, the blobs of each one handled
        requests.clear()
        assert host.scan_blobs("status") == 0
    assert len(requests) == 3 and all("comp=list" in url for url in requests)
    assert sorted(seen) == sorted(f"{env['CONTAINER']}/{name}=first" for name in names[:12])


@pytest.mark.parametrize("names", [
    [f"job{i}/1.Status.txt" for i in range(5)],
    # names the listing escapes (& < > ' "), non-ASCII, a space: each pairs with its own ETag
    ["a&b/1.Status.txt", "<c>/1.Status.txt", "d'e\"f/1.Status.txt", "ünï cødé/1.Status.txt", "z/1.Status.txt"],
], ids=["plain", "escaped"])
def test_a_rewritten_blob_is_found_by_its_new_etag_across_pages(env, container, unique_name, monkeypatch, names):
    """A status blob written again on a later page fires again, with the new content; the others do not."""
    monkeypatch.setattr(devhost.host, "LIST_PAGE", 2)
    _upload(container, names)
    seen: list[str] = []
    with LocalFunctionsHost(blob_app(seen), env, host_id=unique_name("host")) as host:
        assert host.scan_blobs("status") == 5
        container.upload_blob(names[3], b"second", overwrite=True)
        assert host.scan_blobs("status") == 1
        assert host.scan_blobs("status") == 0
    assert sorted(seen[:5]) == sorted(f"{env['CONTAINER']}/{name}=first" for name in names)
    assert seen[5:] == [f"{env['CONTAINER']}/{names[3]}=second"]


def test_a_blob_written_while_its_empty_version_is_read_fires_with_its_content(env, container, unique_name, azurite):
    """The worker creates each status blob empty and the extension then writes it. The SDK reads an
    empty blob with a second request, and keeps that request's ETag but no content; a write landing
    between the two must not leave the written version taken as handled (a job would wait for the
    sweep). Here the write lands exactly there: on the 416 the first read gets."""
    container.upload_blob("job/1.Status.txt", b"")
    writer = BlobServiceClient.from_connection_string(azurite.connection_string)
    blob = writer.get_blob_client(env["CONTAINER"], "job/1.Status.txt")
    written: list[int] = []

    def write_between(response) -> None:
        if response.http_response.status_code == 416 and not written:
            written.append(1)
            blob.upload_blob(b"final report", overwrite=True)

    seen: list[str] = []
    with LocalFunctionsHost(blob_app(seen), env, host_id=unique_name("host"),
                            storage_client_options={"raw_response_hook": write_between}) as host:
        for _ in range(3):
            host.scan_blobs("status")
    writer.close()
    assert written and seen[-1] == f"{env['CONTAINER']}/job/1.Status.txt=final report"


def test_a_page_whose_etags_do_not_match_its_names_is_parsed():
    """Should a page hold ETags the scan cannot pair with the SDK's names, the page is parsed instead."""
    body = (b"<?xml version='1.0'?><EnumerationResults><Blobs>"
            b"<Blob><Name>a</Name><Properties><Etag>0x1</Etag></Properties></Blob>"
            b"<Blob><Name>b</Name><Properties><Etag>0x2</Etag></Properties></Blob>"
            b"</Blobs><NextMarker/></EnumerationResults>")
    assert _listed_etags(["a", "b"], body) == [("a", "0x1"), ("b", "0x2")]
    assert _listed_etags(["a"], body) == [("a", "0x1"), ("b", "0x2")]


def test_a_client_response_hook_still_sees_the_listing(env, container, unique_name):
    """A raw_response_hook given to the host's clients sees the listing responses the host reads too."""
    _upload(container, ["a/1.Status.txt"])
    statuses: list[tuple[str, int]] = []
    options = {"raw_response_hook": lambda response: statuses.append(
        (response.http_request.url, response.http_response.status_code))}
    with LocalFunctionsHost(blob_app([]), env, host_id=unique_name("host"), storage_client_options=options) as host:
        assert host.scan_blobs("status") == 1
    assert any("comp=list" in url and status == 200 for url, status in statuses)


def test_receipts_go_to_the_host_account_not_the_apps(azurite, env, container, unique_name):
    """The host keeps its receipts in AzureWebJobsStorage's account, apart from the watched one, as in Azure."""
    _upload(container, ["a/1.Status.txt"])
    host_id = unique_name("host")
    with LocalFunctionsHost(blob_app([]), env, host_id=host_id) as host:
        assert host.scan_blobs("status") == 1
    with BlobServiceClient.from_connection_string(azurite.host_connection_string) as hosts:
        assert hosts.account_name == HOST_ACCOUNT
        receipts = read_receipts(hosts.get_container_client(HOSTS_CONTAINER), host_id, "status", env["CONTAINER"])
    assert [(r.blob, r.poison) for r in receipts] == [("a/1.Status.txt", False)]
    with BlobServiceClient.from_connection_string(azurite.connection_string) as data:
        # Other tests on this Azurite may name the app's account as AzureWebJobsStorage: this host wrote nothing there.
        kept = data.get_container_client(HOSTS_CONTAINER)
        assert not kept.exists() or not [name for name in kept.list_blob_names() if f"/{host_id}/" in name]


def test_an_event_grid_trigger_is_served_by_scanning(env, container, unique_name):
    """A trigger declared with source=EventGrid still fires locally, once per blob: the host polls."""
    _upload(container, ["a/1.Status.txt", "b/1.Status.txt"])
    seen: list[str] = []
    app = blob_app(seen, source=func.BlobSource.EVENT_GRID)
    with LocalFunctionsHost(app, env, host_id=unique_name("host")) as host:
        assert host.functions["status"].trigger["source"] == "EventGrid"
        assert host.scan_blobs("status") == 2
        assert host.scan_blobs("status") == 0
    assert len(seen) == 2


def test_the_source_setting_picks_the_status_triggers_source():
    """STATUS_BLOB_SOURCE=EventGrid gives ingest_status the Event Grid source; unset or polling keeps the default."""
    assert blob_source({}) is None
    assert blob_source({SOURCE_SETTING: "LogsAndContainerScan"}) is None
    assert blob_source({SOURCE_SETTING: " eventgrid "}) is func.BlobSource.EVENT_GRID
    with pytest.raises(ConfigurationError, match=f"{SOURCE_SETTING} is 'Queue'; use EventGrid"):
        blob_source({SOURCE_SETTING: "Queue"})


@pytest.mark.parametrize("value, expected", [("EventGrid", "EventGrid"), ("", None)])
def test_the_indexed_app_carries_the_source_the_setting_asks_for(value, expected):
    """The binding the worker hands the host when it indexes the app names the source set in the app settings."""
    script = ("import json, function_app; from devhost.host import read_functions; "
              "print(json.dumps([s.trigger for s in read_functions(function_app.app) if s.name == 'ingest_status']))")
    env = {**os.environ, SOURCE_SETTING: value}
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (trigger,) = json.loads(done.stdout.strip().splitlines()[-1])
    assert trigger.get("source") == expected


def test_azurite_keeps_an_idle_connection_open_past_its_default_five_seconds(azurite):
    """A pooled connection left idle 6 s is still open, so the SDK's next request on it is not reset."""
    assert KEEP_ALIVE_SECONDS > 60
    connection = http.client.HTTPConnection("127.0.0.1", azurite.blob_port, timeout=10)
    try:
        connection.request("GET", "/devstoreaccount1?comp=list")
        connection.getresponse().read()
        first = connection.sock
        time.sleep(6)
        connection.request("GET", "/devstoreaccount1?comp=list")
        response = connection.getresponse()
        response.read()
        assert connection.sock is first and response.status in (200, 403)
    finally:
        connection.close()


def test_an_idle_pass_over_a_big_container_is_followed_by_as_long_a_pause():
    """A host idling over a container whose listing takes 2 s waits 2 s, not 0.5 s; with work it goes on at once."""
    from devhost.host import _pause_after

    assert _pause_after(2.0, 0, 0.5) == 2.0
    assert _pause_after(0.1, 0, 0.5) == 0.5
    assert _pause_after(2.0, 3, 0.5) == 0.5


def test_the_background_loop_finds_a_new_blob(env, container, unique_name):
    """Started in the background, the host picks up a blob written after it started, once."""
    seen: list[str] = []
    with LocalFunctionsHost(blob_app(seen), env, host_id=unique_name("host"), poll_interval=0.1).start():
        container.upload_blob("late/1.Status.txt", b"late")
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)                     # a few more passes: the blob must not fire again
    assert seen == [f"{env['CONTAINER']}/late/1.Status.txt=late"]


def test_stop_gives_up_a_blob_invocation_that_outlives_its_grace(env, container, unique_name):
    """stop(grace) returns once its grace is spent although a blob function still runs (as the Functions
    host ends its worker); that blob gets no receipt, so the next start runs it again."""
    started, release = threading.Event(), threading.Event()
    app = func.FunctionApp()

    @app.function_name("status")
    @app.blob_trigger(arg_name="blob", path="%CONTAINER%/{name}.Status.txt", connection="ST")
    def status(blob: func.InputStream) -> None:
        started.set()
        release.wait(300)

    _upload(container, ["a/1.Status.txt"])
    host_id = unique_name("host")
    host = LocalFunctionsHost(app, env, host_id=host_id).start()
    stopping = threading.Thread(target=host.stop, kwargs={"grace": 1.0})
    try:
        assert started.wait(60)
        stopping.start()
        stopping.join(60)           # a stop that waits for the invocation is still here when this ends
        assert not stopping.is_alive(), "stop() waited for the blob function beyond its grace"
    finally:
        release.set()
        if stopping.is_alive():
            stopping.join()
    seen: list[str] = []
    with LocalFunctionsHost(blob_app(seen), env, host_id=host_id) as again:
        assert again.scan_blobs("status") == 1
    assert seen == [f"{env['CONTAINER']}/a/1.Status.txt=first"]
