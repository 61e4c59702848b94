"""With Azurite's BlobCreated events (patches/, devhost/blob_events.py), the local host's blob trigger
lists its container once, then reads only the writes since its last pass: an idle pass sends no
request, whatever the container holds. Real Azurite, requests counted on the host's own clients."""
from __future__ import annotations

import azure.functions as func
import pytest

from devhost.azurite import BLOB_EVENTS_SETTING
from devhost.blob_events import BlobEventReader
from devhost.host import LocalFunctionsHost

pytestmark = [pytest.mark.timeout(120), pytest.mark.integration]


def blob_app(seen: list[str]) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.function_name("status")
    @app.blob_trigger(arg_name="blob", path="%CONTAINER%/{name}.Status.txt", connection="ST")
    def status(blob: func.InputStream) -> None:
        data = blob.read().decode()
        seen.append(f"{blob.name}={data}")
        if data == "fail":
            raise ValueError("cannot read this blob")

    return app


@pytest.fixture
def env(azurite, unique_name):
    return {"CONTAINER": unique_name("status"), "ST": azurite.connection_string,
            "AzureWebJobsStorage": azurite.host_connection_string, BLOB_EVENTS_SETTING: azurite.blob_events}


def test_an_idle_pass_lists_nothing_it_has_seen(env, container, unique_name):
    """The first pass lists the container; after it, an idle pass sends no request at all, and a pass
    after one write reads that blob alone: nothing is listed again."""
    names = [f"job{i:03d}/1.Status.txt" for i in range(30)]
    for name in names:
        container.upload_blob(name, b"first")
    seen: list[str] = []
    requests: list[str] = []
    options = {"raw_request_hook": lambda request: requests.append(request.http_request.url)}
    with LocalFunctionsHost(blob_app(seen), env, host_id=unique_name("host"),
                            storage_client_options=options) as host:
        assert host.scan_blobs("status") == 30
        assert any("comp=list" in url for url in requests)
        requests.clear()
        assert host.scan_blobs("status") == 0
        assert host.scan_blobs("status") == 0
        assert requests == []
        container.upload_blob(names[7], b"second", overwrite=True)      # a rewrite: a new ETag
        container.upload_blob("new/1.Status.txt", b"new")
        container.upload_blob("new/1.Logs.txt", b"not a status blob")
        assert host.scan_blobs("status") == 2
        assert not any("comp=list" in url for url in requests)
        assert len([url for url in requests if "Status.txt" in url and "comp=" not in url]) == 2
    assert sorted(seen[30:]) == sorted([f"{env['CONTAINER']}/{names[7]}=second",
                                        f"{env['CONTAINER']}/new/1.Status.txt=new"])


def test_a_failed_blob_is_tried_again_each_pass_without_a_listing(env, container, unique_name):
    """A blob whose function fails is not written again: the host tries it again from what it holds."""
    seen: list[str] = []
    with LocalFunctionsHost(blob_app(seen), env, host_id=unique_name("host")) as host:
        assert host.scan_blobs("status") == 0                           # the start-up listing
        container.upload_blob("bad/1.Status.txt", b"fail")
        assert [host.scan_blobs("status") for _ in range(3)] == [1, 1, 1]
        container.upload_blob("bad/1.Status.txt", b"fixed", overwrite=True)
        assert host.scan_blobs("status") == 1                           # the new version; the old one left
        assert host.scan_blobs("status") == 0
    assert seen[-1] == f"{env['CONTAINER']}/bad/1.Status.txt=fixed"


def test_blobs_written_while_the_host_was_stopped_are_found_at_start(env, container, unique_name):
    """Events are read from where a listing began: what was written before the host started is
    found by that listing, what is written after it, by the events; nothing twice."""
    container.upload_blob("before/1.Status.txt", b"a")
    seen: list[str] = []
    host_id = unique_name("host")
    with LocalFunctionsHost(blob_app(seen), env, host_id=host_id) as host:
        assert host.scan_blobs("status") == 1
    container.upload_blob("while-stopped/1.Status.txt", b"b")
    with LocalFunctionsHost(blob_app(seen), env, host_id=host_id) as host:
        assert host.scan_blobs("status") == 1
        container.upload_blob("after/1.Status.txt", b"c")
        assert host.scan_blobs("status") == 1
        assert host.scan_blobs("status") == 0
    assert sorted(seen) == sorted(f"{env['CONTAINER']}/{name}/1.Status.txt={data}"
                                  for name, data in (("before", "a"), ("while-stopped", "b"), ("after", "c")))


def test_the_reader_keeps_a_line_being_written_for_the_next_read(tmp_path):
    """A line without its newline yet is left for the next read, whole; other containers' are skipped."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'["PutBlob","acct","c1","a","\\"0x1\\""]\n["PutBlob","acct","c2","x","0x9"]\n'
                     b'["PutBlob","acct","c1","b","0x')
    reader = BlobEventReader(str(path), "acct", "c1")
    assert reader.read() == [("a", "0x1")]
    with path.open("ab") as events:
        events.write(b'2"]\nnot json\n')
    assert reader.read() == [("b", "0x2")]
    assert reader.read() == []
