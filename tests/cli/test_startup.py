"""What a vmsnap process loads: a command that only reads does not pay for the SDKs it does not use.

Each case runs the CLI in its own process (the way an operator starts it) against the session's Azurite and
local Service Bus, and writes the modules it ended with to a file as it exits."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("azure.servicebus", "opentelemetry.sdk", "tabulate")
SDKS = {"azure.servicebus", "opentelemetry.sdk"}

# Runs `vmsnap <args>` in this process and, whatever it exits with, writes the heavy modules it loaded.
PROBE = """
import atexit, json, sys
out, args = sys.argv[1], sys.argv[2:]
heavy = %r
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(
    {prefix for prefix in heavy for name in sys.modules if name == prefix or name.startswith(prefix + ".")}))))
sys.argv = ["vmsnap", *args]
from shared.cli import main
sys.exit(main())
""" % (HEAVY,)


@pytest.fixture
def env(azurite, local_servicebus, tmp_path):
    settings = {"BackupStorage": azurite.connection_string, "ServiceBusConnection": local_servicebus.connection_string,
                "TABLE_PREFIX": f"startup{os.getpid() % 1000}", "SNAPSHOT_TASKS_QUEUE": "tasks-startup",
                "LOCAL_VM_ROOT": str(tmp_path / "vms")}
    return {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}, **settings}


def loaded(env: dict[str, str], tmp_path: Path, *args: str) -> tuple[int, set[str], str]:
    out = tmp_path / "modules.json"
    # Run where no local.settings.json is: the settings are the case's alone.
    done = subprocess.run([sys.executable, "-c", PROBE, str(out), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    return done.returncode, set(json.loads(out.read_text())), done.stderr


@pytest.mark.parametrize("args", [("job", "list", "-o", "json"), ("policy", "list"), ("protection", "list"),
                                  ("recoverypoint", "list", "--vm", "vm1")])
def test_a_command_that_only_reads_loads_neither_service_bus_nor_opentelemetry(env, tmp_path, args):
    """Reading jobs, policies, items or points needs Table Storage only: the Service Bus SDK and
    OpenTelemetry's SDK (together about 0.2 s of a process's start) stay unloaded."""
    code, modules, err = loaded(env, tmp_path, *args)
    assert code == 0, err
    assert modules & SDKS == set(), modules


def test_only_a_table_loads_the_table_printer(env, tmp_path):
    """tabulate (a twentieth of a second) is loaded to print a table, not for json or tsv."""
    for output in ("json", "tsv"):
        code, modules, err = loaded(env, tmp_path, "policy", "list", "-o", output)
        assert code == 0, err
        assert "tabulate" not in modules, (output, modules)
    code, modules, err = loaded(env, tmp_path, "policy", "list", "-o", "table")
    assert code == 0, err
    assert "tabulate" in modules, modules


def test_a_command_that_ends_a_job_or_sends_a_task_loads_what_it_needs(env, tmp_path):
    """The probe sees the loads when there are some: enabling protection ends its ConfigureBackup job, which
    counts in the metrics; backup-now sends its task through Service Bus."""
    code, modules, err = loaded(env, tmp_path, "local", "vm", "add", "--name", "vm1", "--create-disks", "1MiB")
    assert code == 0, err
    code, modules, err = loaded(env, tmp_path, "protection", "enable-for-vm", "--vm", "vm1")
    assert code == 0, err
    assert "opentelemetry.sdk" in modules, (modules, err)
    code, modules, err = loaded(env, tmp_path, "backup-now", "--vm", "vm1")
    assert code == 0, err
    assert "azure.servicebus" in modules, (modules, err)
