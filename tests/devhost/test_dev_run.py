"""./dev run as a user runs it: one cycle, clean shutdown, one-line errors for bad configuration.

Each run is a process group of its own (the stack, its Azurite, the handlers it starts): whatever way
a test ends, a failed assertion or a timeout included, the whole group is stopped, not only its parent."""
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

from devhost.ports import free_ports, port_in_use
from devhost.processes import is_azurite, processes_in_group, processes_under, stop_group, stop_processes_under
from tests.polling import eventually

pytestmark = pytest.mark.long

ROOT = Path(__file__).resolve().parents[2]


def run_env(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ, LOCAL_VM_ROOT=str(tmp_path / "vms"), **extra)
    env.pop("BackupStorage", None)
    env.pop("ServiceBusConnection", None)
    env.pop("DASHBOARD_KEEP_WARM", None)        # the stack runs as a developer's does: the sample turns it on
    return env


PORT_OPTIONS = ("--blob-port", "--table-port", "--servicebus-port", "--compute-port")

# A stack that starts its servers takes ports of its own choosing (0): Azurite chooses again when another process
# binds one first, the others bind port 0. A port chosen here and handed over stays free only until a parallel
# test's listener takes it, and a given port is never chosen again.
ANY_PORTS = dict.fromkeys(PORT_OPTIONS, 0)
STACK_UP = re.compile(r"^local stack up: Azurite blob :(\d+) table :(\d+), Service Bus :(\d+), Compute :(\d+), "
                      r"alert receiver :(\d+);", re.M)


def ports():
    """Ports chosen up front, for a stack that must not start a server (nothing may listen on them after it)
    or whose port the test holds itself."""
    return dict(zip(PORT_OPTIONS, free_ports(len(PORT_OPTIONS))))


def stack_ports(output: str) -> list[int]:
    """The ports the stack said it listens on (its "local stack up" line)."""
    up = STACK_UP.search(output)
    assert up, output
    return [int(port) for port in up.groups()]


def still_listening(ports: Iterable[int]) -> dict[int, str]:
    """Of these ports, those something listens on, each with who (pid and command line, from Linux
    /proc), so that a failed check says whether the stack's own process is left or another took the port."""
    listening = {port: "?" for port in ports if port_in_use(port)}
    if not listening:
        return {}
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if fields[3] == "0A" and port in listening:      # 0A: LISTEN
                    inodes[f"socket:[{fields[9]}]"] = port
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                port = inodes.get(os.readlink(fd))
                if port is not None:
                    command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    listening[port] = f"pid {proc.name}: {command.strip()[:200]}"
    return listening


def args_for(chosen: dict) -> list[str]:
    return [item for pair in chosen.items() for item in (pair[0], str(pair[1]))]


@contextlib.contextmanager
def stack_process(args: list[str], env: dict, *, sigint: Any = signal.default_int_handler,
                  **popen) -> Iterator[subprocess.Popen]:
    """`python -m devhost.run ARGS` in a process group of its own; on the way out, however the test
    ended, the group and the handlers under the VM root are stopped. ``sigint`` is the SIGINT
    disposition it inherits: a terminal's by default, whatever this test process was started with
    (SIG_IGN: as a script's background command starts it; an ignored signal stays ignored)."""
    previous = signal.signal(signal.SIGINT, sigint)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "devhost.run", *args], cwd=ROOT, env=env, text=True,
                                start_new_session=True, **popen)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        yield proc
    finally:
        stop_group(proc.pid)
        proc.wait(timeout=30)
        stop_processes_under(Path(env["LOCAL_VM_ROOT"]))


def run_stack(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run the stack to its end, as subprocess.run would, within ``stack_process``."""
    with stack_process(args, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# The timers a running stack's tests wait on, seconds apart where the defaults wait up to a minute (restore
# points) or 30 s (alerts): what the tests watch happens the same way, sooner. `--once` keeps the defaults.
QUICK_TIMERS = {"RESTORE_POINT_SCHEDULE": "*/2 * * * * *", "ALERT_SCHEDULE": "*/5 * * * * *"}


@contextlib.contextmanager
def running_stack(tmp_path: Path, *extra: str, **env_extra: str) -> Iterator[list[str]]:
    """`./dev run` going on ports of its choosing (in ``stack_process``) and QUICK_TIMERS, its output lines
    collected as they come; stopped at the end, then nothing may still listen on its ports."""
    env = run_env(tmp_path, **{**QUICK_TIMERS, **env_extra})
    with stack_process([*args_for(ANY_PORTS), *extra], env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT) as proc:
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
        yield lines
    assert not (left := still_listening(stack_ports("".join(lines)))), left


def demo_backups_completed(lines: list[str]) -> bool:
    finished = lambda vm: any(f" {vm} " in line and "Completed" in line for line in list(lines))  # noqa: E731
    return finished("demo-vm") and finished("demo-vm-md")


@pytest.mark.timeout(900)
def test_run_once_backs_up_the_demo_vm_and_stops_everything(tmp_path):
    """`./dev run --once` exits 0 after a job table where both demo VMs' jobs Completed: two blob
    snapshots for demo-vm, one restore point with two disk restore points for demo-vm-md, and demo-vm's point
    digested after its backup."""
    # The cycle's own limit is generous: on a loaded machine a cycle takes minutes, not seconds.
    proc = run_stack(["--once", "--timeout", "600", *args_for(ANY_PORTS)], run_env(tmp_path), timeout=800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if "demo-vm" in line and "Backup" in line]
    assert sorted((row[3], row[2]) for row in rows) == [("demo-vm", "Completed"), ("demo-vm-md", "Completed")], \
        proc.stdout
    assert "demo-vm-osdisk.vhd: 1 snapshot(s)" in proc.stdout
    assert "demo-vm-datadisk0.vhd: 1 snapshot(s)" in proc.stdout
    assert proc.stdout.count("demo-vm-md: restore point ") == 1
    assert "Succeeded ApplicationConsistent, 2 disk restore point(s)" in proc.stdout
    # demo-vm's point of blob snapshots had its digests recorded; demo-vm-md's (a VM restore point) needs none.
    assert "digest requests served: 1 of 1 " in proc.stdout, proc.stdout + proc.stderr
    dashboard = re.search(r"^dashboard: http://127\.0\.0\.1:(\d+)/api/dashboard ", proc.stdout, re.M)
    assert dashboard, proc.stdout           # printed while the stack ran; gone with it (below)
    left = still_listening([*stack_ports(proc.stdout), int(dashboard.group(1))])
    assert not left, f"a server is still listening: {left}"
    assert processes_under(tmp_path / "vms") == []


def test_port_in_use_is_one_line_that_says_what_to_do(tmp_path):
    """A busy Azurite port ends the run with exit 2 and one line naming the port, no traceback."""
    chosen = ports()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", chosen["--blob-port"]))
        busy.listen()
        proc = run_stack(["--once", *args_for(chosen)], run_env(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert f"port {chosen['--blob-port']}" in proc.stderr and "in use" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_invalid_setting_is_one_line_naming_the_setting(tmp_path):
    """A bad SNAPSHOT_SCHEDULE stops the run with the setting's name and the expected form."""
    proc = run_stack(["--once", *args_for(ANY_PORTS)], run_env(tmp_path, SNAPSHOT_SCHEDULE="every day"),
                     timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: setting SNAPSHOT_SCHEDULE") and "six fields" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_status_blob_source_is_refused_before_anything_starts(tmp_path):
    """A typo in STATUS_BLOB_SOURCE, which in Azure costs the blob trigger alone, stops a local run at
    once: one line naming the setting and its two values, no server started."""
    chosen = ports()
    proc = run_stack(["--once", *args_for(chosen)], run_env(tmp_path, STATUS_BLOB_SOURCE="EvenGrid"), timeout=120)
    assert (proc.returncode, proc.stderr) == (2, "error: setting STATUS_BLOB_SOURCE is 'EvenGrid'; use EventGrid "
                                                 "or LogsAndContainerScan\n")
    assert not (left := still_listening(chosen.values())), left


@pytest.mark.parametrize("started_with", ["SIGINT handled", "SIGINT ignored"])
def test_interrupting_a_running_stack_stops_every_process(tmp_path, started_with):
    """Ctrl-C on `./dev run` stops Azurite, the Service Bus server and any handler it started, also when
    it was started with SIGINT ignored (as a script or `nohup ... &` starts a background command)."""
    sigint = signal.SIG_IGN if started_with == "SIGINT ignored" else signal.default_int_handler
    with stack_process(args_for(ANY_PORTS), run_env(tmp_path), sigint=sigint, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT) as proc:
        output = _wait_until_running(proc)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            before = len(output)                    # what it said until now, then every thread's stack
            proc.send_signal(signal.SIGUSR1)
            eventually(lambda: any("most recent call first" in line for line in output[-200:]), timeout=30)
            pytest.fail("./dev run did not stop within 120 s of Ctrl-C; its output ended:\n"
                        + "".join(output[max(0, before - 40):before]) + "\nits threads:\n" + "".join(output[before:]))
    assert not (left := still_listening(stack_ports("".join(output)))), left
    assert processes_under(tmp_path / "vms") == []


def test_a_second_terminal_restores_the_managed_disk_vm_against_the_running_stack(tmp_path):
    """With `./dev run` going, `vmsnap restore restore-disks --vm demo-vm-md ... --target-resource-group
    local` run in the project folder by another process reaches the stack's own Compute endpoint (named
    in the stack settings) and ends with a Completed Restore job, as docs/restore-points.md shows."""
    with running_stack(tmp_path) as lines:
        _second_terminal_restores(lines)


def _second_terminal_restores(lines: list[str]) -> None:
    # The second terminal: no settings of its own, so the running stack's are the ones it finds.
    terminal = {k: v for k, v in os.environ.items()
                if k not in ("BackupStorage", "ServiceBusConnection", "ComputeConnection", "TABLE_PREFIX")}

    def vmsnap(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROOT / ".venv" / "bin" / "vmsnap"), *argv], cwd=ROOT, env=terminal,
                              capture_output=True, text=True, timeout=120)
    assert eventually(lambda: any("Completed" in line and "demo-vm-md" in line for line in lines), timeout=180), \
        "".join(lines)
    point = vmsnap("recoverypoint", "list", "--vm", "demo-vm-md", "--query", "[0].name", "-o", "tsv")
    assert point.returncode == 0 and point.stdout.strip(), point.stderr
    restore = vmsnap("restore", "restore-disks", "--vm", "demo-vm-md", "--rp-name", point.stdout.strip(),
                     "--target-resource-group", "local", "--query", "name", "-o", "tsv")
    assert restore.returncode == 0, restore.stdout + restore.stderr
    waited = vmsnap("job", "wait", "--name", restore.stdout.strip(), "--interval", "0.5", "--timeout", "90")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    shown = vmsnap("job", "show", "--name", restore.stdout.strip(), "-o", "json")
    job = json.loads(shown.stdout)["properties"]
    assert (job["operation"], job["status"]) == ("Restore", "Completed"), job
    disks = [t["target"] for t in job["extendedInfo"]["tasksList"]]
    assert len(disks) == 2 and all("/resourceGroups/local/providers/Microsoft.Compute/disks/demo-vm-md-" in d
                                   for d in disks), disks


def test_a_demo_vm_whose_disk_is_removed_shows_its_alert_and_its_compliance(tmp_path):
    """With `./dev run` going, remove a data disk of demo-vm and ask for a backup: `vmsnap alert list -o json`
    shows demo-vm's active alert, `vmsnap report compliance -o json` shows it AtRisk or Unprotected and
    demo-vm-md Healthy, and the stack's receiver printed the alert. Whether the worker fails the backup at
    once or retries it, the failure has the VM's newest point checked, so both hold (waited for, not timed)."""
    from azure.storage.blob import BlobServiceClient

    vmsnap = str(Path(sys.executable).parent / "vmsnap")

    def cli(*args):
        done = subprocess.run([vmsnap, *args], cwd=ROOT, env=run_env(tmp_path), capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    with running_stack(tmp_path, "--webhook-port", "0") as lines:
        assert eventually(lambda: demo_backups_completed(lines), timeout=180), "".join(lines)
        settings = json.loads((ROOT / ".local" / "stack.settings.json").read_text())["Values"]
        disks = BlobServiceClient.from_connection_string(settings["BackupStorage"]).get_container_client("vhds")
        disks.delete_blob("demo-vm-datadisk0.vhd", delete_snapshots="include")
        cli("backup-now", "--vm", "demo-vm", "-o", "json")

        def demo_vm_alerted():
            return [a for a in cli("alert", "list", "--status", "Active", "-o", "json")
                    if a["properties"]["itemName"] == "demo-vm"]

        assert eventually(demo_vm_alerted, timeout=240, interval=2), "".join(lines)
        report = {i["name"]: i for i in cli("report", "compliance", "-o", "json")["items"]}
        assert report["demo-vm"]["state"] in ("AtRisk", "Unprotected"), report["demo-vm"]
        assert report["demo-vm-md"]["state"] == "Healthy", report["demo-vm-md"]
        assert eventually(lambda: any(line.startswith("alert Fired") and "demo-vm " in line for line in list(lines)),
                          timeout=60), "".join(lines)


def test_a_test_that_fails_while_the_stack_runs_leaves_no_process_behind(tmp_path):
    """A test failing mid-run stops the stack's whole group: its Azurite too, which killing the parent
    alone would leave running."""
    with pytest.raises(AssertionError, match="the test failed here"):
        with stack_process(args_for(ANY_PORTS), run_env(tmp_path), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT) as proc:
            output = _wait_until_running(proc)
            members = processes_in_group(proc.pid)
            assert any(is_azurite(pid) for pid in members), members
            raise AssertionError("the test failed here")
    assert processes_in_group(proc.pid) == []
    assert not (left := still_listening(stack_ports("".join(output)))), left
    assert processes_under(tmp_path / "vms") == []


def _wait_until_running(proc: subprocess.Popen) -> list[str]:
    """Read the stack's output until it says it runs (no time limit of its own: the test's timeout
    bounds a stack that never comes up), then keep reading, as a terminal does, so a full pipe never
    blocks its log writes; returns the lines read, which go on growing."""
    lines: list[str] = []
    for line in iter(proc.stdout.readline, ""):
        lines.append(line)
        if "running;" in line:
            break
    assert lines and "running;" in lines[-1], "".join(lines)
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return lines


def test_chromium_dump_dom_of_the_dashboard_url_shows_both_demo_vms_and_their_states(tmp_path):
    """With `./dev run` going, `chromium --headless --dump-dom <DashboardUrl>` (the URL read from the top level of
    .local/stack.settings.json) shows demo-vm and demo-vm-md, each Healthy once its first backup completed."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no browser: Debian's chromium is not installed and ./dev setup could not install it "
                    "(it needs root and apt-get)")
    with running_stack(tmp_path) as lines:
        assert eventually(lambda: demo_backups_completed(lines), timeout=180), "".join(lines)
        url = json.loads((ROOT / ".local" / "stack.settings.json").read_text())["DashboardUrl"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api/dashboard")

        def states() -> dict[str, str]:
            dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                  "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", url],
                                 capture_output=True, text=True, timeout=60).stdout
            table = dom.split('data-testid="item-table"', 1)[-1]
            return dict(re.findall(r'<tr data-item="([^"]+)">.*?data-state="(\w+)"', table, re.S))

        # The page reuses a compliance report for up to 30 s: ask again until it is one computed after both backups.
        assert eventually(lambda: states() == {"demo-vm": "Healthy", "demo-vm-md": "Healthy"}, timeout=90,
                          interval=3), states()
