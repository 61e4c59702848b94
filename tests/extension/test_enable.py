"""Driving the handler as WALA does: enable's idempotency, the detached daemon, and ``run`` off Azure."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from extension.handler import EnableResult, enable, run_daemon
from extension.layout import HandlerEnvironment, write_extension_root
from extension.settings import ticks_for
from tests.extension.conftest import requires_root

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _enable(vm, seq):
    started = []
    result = enable(vm.root, seq, spawn=lambda root, n: started.append(n))
    return result, started


def test_enable_records_the_command_and_writes_the_in_progress_file_status(vm):
    """enable leaves code 4 in status/<seq>.status and starts the daemon for that sequence number."""
    vm.write(3, *vm.settings())

    result, started = _enable(vm, 3)

    assert result is EnableResult.STARTED and started == [3]
    (outer,) = vm.status_file(3)
    assert outer["status"]["code"] == "4" and outer["status"]["status"] == "success"
    inner = json.loads(outer["status"]["substatus"][0]["name"])[0]
    assert inner["status"]["code"] == "4"
    assert (vm.root / "mrseq").read_text() == "3"
    assert vm.text("status.txt") == ""  # the blob is the daemon's to write


def test_a_repeated_task_id_is_silently_ignored(vm):
    """A new sequence number carrying the last taskId: no daemon, no new status anywhere."""
    result, started = _enable_the_same_task_twice(vm)

    assert result is EnableResult.SAME_TASK and started == []
    assert not HandlerEnvironment.load(vm.root).status_file(1).exists()
    assert vm.text("status.txt") == ""


def test_a_repeated_sequence_number_is_silently_ignored(vm):
    """Enable run twice for one sequence number does nothing the second time, even with a new taskId."""
    vm.write(0, *vm.settings())
    _enable(vm, 0)
    status_before = HandlerEnvironment.load(vm.root).status_file(0).read_text()
    vm.write(0, *vm.settings())  # a fresh taskId

    result, started = _enable(vm, 0)

    assert result is EnableResult.SAME_SEQ and started == []
    assert HandlerEnvironment.load(vm.root).status_file(0).read_text() == status_before


def _enable_the_same_task_twice(vm):
    """One command enabled as sequence 0, then the same command (same taskId) as sequence 1: the second
    enable's (result, daemons started)."""
    public, protected = vm.settings()
    vm.write(0, public, protected)
    _enable(vm, 0)
    vm.write(1, public, protected)
    return _enable(vm, 1)


def _protected_settings_left(vm, seq: int) -> bool:
    doc = json.loads(HandlerEnvironment.load(vm.root).settings_file(seq).read_text())
    return "protectedSettings" in doc["runtimeSettings"][0]["handlerSettings"]


def test_a_command_declined_for_its_task_id_is_scrubbed_all_the_same(vm):
    """A redelivered command (same taskId, new sequence number) starts nothing and keeps no SAS on the VM."""
    result, _ = _enable_the_same_task_twice(vm)

    assert result is EnableResult.SAME_TASK
    assert not _protected_settings_left(vm, 1)


def test_a_repeated_enable_does_not_take_the_settings_from_under_its_daemon(vm):
    """The agent re-running enable for a sequence whose daemon has not started yet: the backup still runs."""
    vm.write(0, *vm.settings())
    _enable(vm, 0)                      # the daemon is started but has not read its settings yet

    again, _ = _enable(vm, 0)
    element = run_daemon(vm.root, 0, clock=vm.clock,
                         plugin_config_path=vm.etc / "VMSnapshotScriptPluginConfig.json")

    assert again is EnableResult.SAME_SEQ
    assert element["status"]["code"] == "1" and len(vm.snapshots("os.vhd")) == 1
    assert not _protected_settings_left(vm, 0)


def test_a_started_command_keeps_its_protected_settings_for_the_daemon(vm):
    """Enable leaves the protected settings to the daemon it starts: the daemon still has the SAS URIs."""
    vm.write(0, *vm.settings())

    result, _ = _enable(vm, 0)

    assert result is EnableResult.STARTED
    assert _protected_settings_left(vm, 0)


def test_a_daemon_that_cannot_start_leaves_no_protected_settings(vm):
    """If the daemon cannot be started, enable fails and the settings file is scrubbed anyway."""
    vm.write(0, *vm.settings())

    def broken_spawn(root, seq):
        raise OSError("no such interpreter")

    with pytest.raises(OSError):
        enable(vm.root, 0, spawn=broken_spawn)

    assert not _protected_settings_left(vm, 0)


def _wait_for_final_status(vm, deadline: float) -> dict:
    while time.monotonic() < deadline:
        text = vm.text("status.txt")
        if text and json.loads(text)[0]["status"]["code"] != "4":
            return json.loads(text)[0]
        time.sleep(0.1)
    pytest.fail(f"no final status in the blob; daemon log: {(vm.root / 'log' / 'daemon.log').read_text()}")


def _real_ticks_now() -> str:
    """Subprocesses run on the system clock, not the test's fixed one."""
    return ticks_for(datetime.now(timezone.utc))


def _subprocess_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


@requires_root
def test_enable_returns_at_once_and_the_detached_daemon_finishes_the_backup(vm):
    """``python -m extension enable`` exits 0 while a slow pre-script runs; the blob then turns final."""
    vm.scripts(pre="sleep 2")
    done = _enable_in_a_process(vm, 5)

    assert done.returncode == 0, done.stderr
    assert vm.status_file(5)[0]["status"]["code"] == "4"      # returned while the daemon still runs
    element = _wait_for_final_status(vm, time.monotonic() + 30)
    assert element["status"]["code"] == "0"
    assert len(vm.snapshots("os.vhd")) == 1
    assert vm.status_file(5)[0]["status"]["code"] == "0"


def test_enable_on_a_root_without_handler_environment_exits_non_zero(tmp_path):
    """A mis-laid root is a dispatcher bug: enable says so on stderr and exits 1."""
    done = subprocess.run(
        [sys.executable, "-m", "extension", "enable"],
        cwd=tmp_path, env=_subprocess_env(ConfigSequenceNumber="0"),
        capture_output=True, text=True, timeout=60,
    )

    assert done.returncode == 1
    assert "HandlerEnvironment.json" in done.stderr


def test_run_off_azure_takes_settings_from_a_file_and_prints_the_status(vm, tmp_path):
    """``python -m extension run --settings-file`` backs up in the foreground and prints the status."""
    public, protected = vm.settings(commandStartTimeUTCTicks=_real_ticks_now())
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps({"publicSettings": public, "protectedSettings": protected}))
    root = tmp_path / "vm-root"
    command = [sys.executable, "-m", "extension", "run", "--settings-file", str(settings_file), "--root", str(root)]

    first = subprocess.run(command, env=_subprocess_env(), capture_output=True, text=True, timeout=60)
    again = subprocess.run(command, env=_subprocess_env(), capture_output=True, text=True, timeout=60)

    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["status"]["code"] == "1"
    assert len(vm.snapshots("data0.vhd")) == 1
    assert (again.returncode, again.stdout) == (0, "")
    assert "same taskId" in again.stderr
    assert sorted(p.name for p in (root / "config").iterdir()) == ["0.settings", "1.settings"]


def test_the_log_blob_ends_with_the_enable_and_daemon_phases(vm):
    """As with the real handler, the log blob closes with the shell log: enable, then the daemon."""
    done = _enable_in_a_process(vm, 7)

    assert done.returncode == 0, done.stderr
    assert _wait_for_final_status(vm, time.monotonic() + 30)["status"]["code"] == "1"
    deadline = time.monotonic() + 10                # the log is uploaded just after the status
    while "Tail of shell script log:" not in vm.text("log.txt") and time.monotonic() < deadline:
        time.sleep(0.1)
    run_log, tail = vm.text("log.txt").split("Tail of shell script log:\n")
    assert "daemon: sequence 7" in run_log
    phases = [line.split(" ", 2)[2] for line in tail.splitlines()]
    enable_phase = [p for p in phases if p.startswith("enable:")]
    assert enable_phase == ["enable: sequence 7, python " + platform.python_version(),
                            "enable: started", "enable: exit 0"]
    (daemon_start,) = [i for i, p in enumerate(phases) if p.startswith("daemon: sequence 7")]
    assert daemon_start > phases.index("enable: started")      # the daemon is what enable started


def test_the_daemon_started_by_enable_writes_each_log_line_once(vm):
    """extension.log on the VM has enable's lines and the daemon's, each once: the daemon does not
    write its lines through enable's run log as well, nor does the log blob carry enable's run."""
    done = _enable_in_a_process(vm, 9)

    assert done.returncode == 0, done.stderr
    _wait_for_final_status(vm, time.monotonic() + 30)
    deadline = time.monotonic() + 10
    while "Tail of shell script log:" not in vm.text("log.txt") and time.monotonic() < deadline:
        time.sleep(0.1)
    messages = [line.split("  ", 2)[2].strip()
                for line in (vm.root / "log" / "extension.log").read_text().splitlines() if line.strip()]
    assert messages.count("enable: sequence 9") == 1
    assert messages.count("daemon: sequence 9") == 1
    run_log = vm.text("log.txt").split("Tail of shell script log:\n")[0]
    assert "daemon: sequence 9" in run_log and "enable: sequence 9" not in run_log


def test_enable_loads_neither_cryptography_nor_http_nor_the_daemon(vm):
    """The agent waits for enable on every command: it stays light, the heavy parts load in the daemon."""
    public, protected = vm.settings(commandStartTimeUTCTicks=_real_ticks_now())
    write_extension_root(vm.root, 8, public, protected)
    probe = ("import json, runpy, sys\n"
             "sys.argv = ['extension', 'enable']\n"
             "try:\n    runpy.run_module('extension', run_name='__main__')\n"
             "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
             "print(json.dumps(sorted(sys.modules)))\n")

    done = subprocess.run([sys.executable, "-c", probe], cwd=vm.root,
                          env=_subprocess_env(ConfigSequenceNumber="8"),
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert "extension.enable" in loaded
    assert not {"cryptography", "http.client", "ssl", "extension.handler", "extension.crypto"} & loaded
    assert _wait_for_final_status(vm, time.monotonic() + 30)["status"]["code"] == "1"   # the daemon did the work


def _enable_in_a_process(vm, seq: int) -> subprocess.CompletedProcess:
    """A fresh command as sequence ``seq``, then ``python -m extension enable`` as the agent runs it."""
    public, protected = vm.settings(commandStartTimeUTCTicks=_real_ticks_now())
    write_extension_root(vm.root, seq, public, protected)
    return subprocess.run([sys.executable, "-m", "extension", "enable"], cwd=vm.root,
                          env=_subprocess_env(ConfigSequenceNumber=str(seq)), capture_output=True, text=True,
                          timeout=60)
