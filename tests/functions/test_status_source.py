"""A bad STATUS_BLOB_SOURCE costs the status blob trigger alone: the real app, indexed in a process of
its own as the worker indexes it, leaves ingest_status out with one line saying why, and its other
functions index and run under the local host."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NAMES = "import json, function_app; print(json.dumps(sorted(f.get_function_name() for f in function_app.app.get_functions())))"

# Index the app, then run each of its functions once under the local host: every timer fired, every
# queue listened to until it is empty (HTTP functions answer requests only; indexing is what counts).
SCRIPT = """
import json, os
import function_app
from devhost.host import LocalFunctionsHost

host = LocalFunctionsHost(function_app.app, os.environ)
for name, spec in sorted(host.functions.items()):
    if spec.trigger_type == "timerTrigger":
        host.fire_timer(name)
    elif spec.trigger_type == "serviceBusTrigger":
        host.drain_queue(name, max_wait=0.5)
host.stop()
print(json.dumps(sorted(host.functions)))
"""


def test_a_bad_source_leaves_out_the_blob_trigger_alone_with_one_line(make_settings, local_servicebus, azurite):
    """STATUS_BLOB_SOURCE=EvenGrid: every other function indexes and runs, ingest_status is out, stderr says
    why in one line."""
    settings = make_settings(service_bus=local_servicebus.connection_string)
    env = {**os.environ, **settings.binding_values(), "AzureWebJobsStorage": azurite.host_connection_string,
           "TABLE_PREFIX": settings.table_prefix, "STATUS_BLOB_SOURCE": "EvenGrid"}
    indexed = subprocess.run([sys.executable, "-c", NAMES], cwd=ROOT, env={**env, "STATUS_BLOB_SOURCE": ""},
                             capture_output=True, text=True, timeout=120)
    every = json.loads(indexed.stdout.strip().splitlines()[-1])
    assert "ingest_status" in every and len(every) > 5, every
    others = [name for name in every if name != "ingest_status"]
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == others
    reasons = [line for line in done.stderr.splitlines() if "STATUS_BLOB_SOURCE" in line]
    assert reasons == ["function ingest_status is disabled: setting STATUS_BLOB_SOURCE is 'EvenGrid'; use "
                       "EventGrid or LogsAndContainerScan (the other functions run; the stale-job sweep reads "
                       "the status blobs of dispatched jobs meanwhile)"]
    assert "Traceback" not in done.stderr

