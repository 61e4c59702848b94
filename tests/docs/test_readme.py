"""The README and the docs are true: every code block marked ``<!-- doctest: local-stack -->`` in README.md or
docs/*.md runs against a test stack (the session's Azurite and local Service Bus), and the README's
configuration table lists exactly the settings that ``Settings``, the bindings and the Functions host read.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.long

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# The sample sessions moved from the README to docs/ pages; wherever a marked block lives, it runs.
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MARK = "<!-- doctest: local-stack -->"
BLOCK = re.compile(re.escape(MARK) + r"\s*\n```(bash|python)\n(.*?)\n```", re.S)
SAMPLE_SERVICE_BUS = "Endpoint=sb://127.0.0.1:5672;"

# What the Functions host itself reads for this app (Microsoft docs, "identity-based connections" and
# "App settings reference"): its own storage and runtime, and for each trigger's connection the
# settings of its identity-based form.
HOST_SETTINGS = {"AzureWebJobsStorage", "AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential",
                 "AzureWebJobsStorage__clientId", "FUNCTIONS_WORKER_RUNTIME",
                 "FUNCTIONS_WORKER_PROCESS_COUNT"}
HOST_CONNECTION_KEYS = {
    "blobTrigger": ("blobServiceUri", "queueServiceUri", "credential", "clientId"),
    "serviceBusTrigger": ("fullyQualifiedNamespace", "credential", "clientId"),
}


def marked_blocks() -> list[tuple[str, str, str]]:
    """(page, kind, code) of every marked block of the README and the docs."""
    return [(page.relative_to(ROOT).as_posix(), kind, code)
            for page in PAGES for kind, code in BLOCK.findall(page.read_text())]


def table_settings() -> dict[str, str]:
    """The Configuration table: setting name -> its 'default' column."""
    text = README.read_text()
    start = text.index("## Configuration")
    section = text[start:text.index("\n## ", start)]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`([A-Za-z_]+)`\s*\|.*\|\s*(.*?)\s*\|$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


class _Recording(dict):
    """An environment that remembers every name looked up in it."""

    def __init__(self, values: dict[str, str], seen: set[str]):
        super().__init__(values)
        self.seen = seen

    def get(self, key, default=None):
        self.seen.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.seen.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.seen.add(key)
        return super().__contains__(key)


def settings_the_code_reads() -> set[str]:
    from shared.settings import Settings

    seen: set[str] = set()
    with_strings = {"BackupStorage": "UseDevelopmentStorage=true", "ServiceBusConnection": "Endpoint=sb://x;"}
    with_identity = {"BackupStorage__blobServiceUri": "https://a.blob", "BackupStorage__tableServiceUri": "https://a.t",
                     "ServiceBusConnection__fullyQualifiedNamespace": "n.servicebus.windows.net"}
    for env in (with_strings, with_identity, {**with_identity, "DISPATCHER": "arm", "AZURE_SUBSCRIPTION_ID": "s"}):
        Settings.from_env(_Recording(env, seen))
    from functions.status_ingest import blob_source    # read when the worker indexes the app
    from shared.logs import sdk_log_level
    from shared.settings import dashboard_keep_warm
    from shared.telemetry import connection_string

    blob_source(_Recording({}, seen))
    dashboard_keep_warm(_Recording({}, seen))           # read as the app is indexed (functions/dashboard.py)
    sdk_log_level(_Recording({}, seen))                 # read as the app configures logging
    connection_string(_Recording({}, seen))             # read as the composition root builds telemetry
    return seen


def settings_the_bindings_read() -> set[str]:
    # Indexed in a process of its own: the app refuses to be indexed twice in one (duplicate names).
    script = ("import json, function_app; print(json.dumps([(b.type, b.get_dict_repr()) "
              "for f in function_app.app.get_functions() for b in f.get_bindings()], default=str))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=True)
    found: set[str] = set()
    for binding_type, values in json.loads(done.stdout.splitlines()[-1]):
        found |= set(re.findall(r"%([^%]+)%", " ".join(str(v) for v in values.values())))
        connection = values.get("connection")
        if connection:
            found.add(connection)
            found |= {f"{connection}__{key}" for key in HOST_CONNECTION_KEYS.get(binding_type, ())}
    return found


def test_the_docs_mark_runnable_blocks():
    """The walk-through has runnable examples of both kinds: a vmsnap session and a Python snippet."""
    kinds = {(page, kind) for page, kind, _ in marked_blocks()}
    assert {("docs/walkthrough.md", "bash"), ("docs/walkthrough.md", "python")} <= kinds


@pytest.mark.parametrize("index", range(len(marked_blocks())),
                         ids=[f"{page}-{n}" for n, (page, _, _) in enumerate(marked_blocks())])
def test_marked_block_runs_against_a_local_stack(index, make_settings, azurite, local_servicebus, unique_name,
                                                 tmp_path):
    """A reader who copies a marked block into a shell next to a running stack sees it work."""
    page, kind, code = marked_blocks()[index]
    prefix = unique_name("doc")
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR")}
    env.update(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", BackupStorage=azurite.connection_string,
               ServiceBusConnection=local_servicebus.connection_string, TABLE_PREFIX=prefix,
               STATUS_CONTAINER=f"status-{prefix}", LOCAL_VM_ROOT=str(tmp_path / "vms"))
    # The README shows the default ports; the test stack runs wherever it found free ones.
    host = local_servicebus.connection_string.split("Endpoint=sb://", 1)[1].split(";", 1)[0]
    code = code.replace(SAMPLE_SERVICE_BUS, f"Endpoint=sb://{host};")
    argv = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{page} {kind} block failed:\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert "Traceback" not in done.stderr


@pytest.mark.integration
def test_configuration_table_lists_exactly_what_is_read():
    """Every setting the code, the bindings or the host reads is in the table, and nothing else is."""
    documented = set(table_settings())
    read = settings_the_code_reads() | settings_the_bindings_read() | HOST_SETTINGS
    assert sorted(read - documented) == [], "read but not documented"
    assert sorted(documented - read) == [], "documented but never read"


def test_settings_the_host_requires_are_not_called_optional():
    """The table never calls a setting optional that the host or the code requires."""
    rows = table_settings()
    assert all("optional" not in default.lower() for default in rows.values()), rows
    for name in ("BackupStorage__queueServiceUri", "BackupStorage__credential", "AzureWebJobsStorage",
                 "FUNCTIONS_WORKER_RUNTIME"):
        assert "required" in rows[name], name


def test_the_readme_documents_the_on_demand_limit():
    """An operator learns of the 3-a-day on-demand limit before backup-now refuses a fourth."""
    from shared.domain.protection import ON_DEMAND_ATTEMPTS_PER_DAY, ON_DEMAND_SUCCESSES_PER_DAY

    text = README.read_text()
    assert ON_DEMAND_SUCCESSES_PER_DAY == 3 and "three successful" in text
    assert ON_DEMAND_ATTEMPTS_PER_DAY == 9 and "nine attempts" in text
    assert "UserErrorBackupOperationLimitReached" in text
