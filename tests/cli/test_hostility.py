"""A hostile operator against the real `vmsnap` executable: bad dates, names, files, enums in any case,
missing and malformed settings, unreachable services, output cut short by `| head`. Every invocation
must end with its documented exit code and never with a traceback.

Each case runs `.venv/bin/vmsnap` as its own process (on the session's Azurite and local Service Bus,
or on settings made to fail), many at a time in threads.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.bootstrap import Services
from shared.domain.jobs import Job
from shared.domain.status import ParseError, parse_status_blob
from tests.jobs.helpers import CORPUS

# Every check runs the installed vmsnap as a process.
pytestmark = [pytest.mark.integration, pytest.mark.long]

VMSNAP = Path(sys.executable).with_name("vmsnap")
SB_KEY = "SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
SEEDED_JOBS = 200     # enough JSON that `| head -1` closes the pipe while vmsnap still writes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    expected: int
    env: str = "ok"            # which settings: see the ``envs`` fixture
    pipe_head: bool = False    # run as `vmsnap ... | head -n 1`

    @property
    def label(self) -> str:
        return f"[{self.env}] vmsnap {' '.join(self.argv)}{' | head -n 1' if self.pipe_head else ''}"


def c(cmd: str, expected: int, env: str = "ok", *, head: bool = False) -> Case:
    return Case(tuple(shlex.split(cmd)), expected, env, head)


# Files the cases name: {tmp}/... is replaced with the test's own folder.
NESTED = "[" * 5000 + "]" * 5000
POLICY_FILES = {
    "not-json.json": "{ nope",
    "list.json": "[1, 2, 3]",
    "string-schedule.json": json.dumps({"schedulePolicy": "daily", "retentionPolicy": {}}),
    "list-retention.json": json.dumps({"schedulePolicy": {"scheduleRunFrequency": "Daily",
                                                          "scheduleRunTimes": ["22:30"]},
                                       "retentionPolicy": [1]}),
    "number-times.json": json.dumps({"schedulePolicy": {"scheduleRunFrequency": "Daily", "scheduleRunTimes": 7}}),
    "deep.json": NESTED,
    "deep-object.json": '{"a":' * 3000 + "1" + "}" * 3000,
    "deep-valid-prefix.json": json.dumps({"schedulePolicy": {"x": {"y": {"z": {"a": {"b": {"c": {"d": {"e": {
        "f": {"g": {"h": {"i": {"j": {"k": {"l": {"m": {"n": {}}}}}}}}}}}}}}}}}}}),
    "binary.json": "\udcff",
    "az-daily.json": json.dumps({
        "id": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/backupPolicies/P",
        "name": "P", "type": "Microsoft.RecoveryServices/vaults/backupPolicies",
        "properties": {"backupManagementType": "AzureIaasVM", "instantRpRetentionRangeInDays": 2,
                       "policyType": "V1", "protectedItemsCount": 0, "timeZone": "W. Europe Standard Time",
                       "schedulePolicy": {"schedulePolicyType": "SimpleSchedulePolicy",
                                          "scheduleRunFrequency": "Daily", "scheduleRunDays": None,
                                          "scheduleRunTimes": ["2023-06-01T02:30:00+00:00"],
                                          "scheduleWeeklyFrequency": 0},
                       "retentionPolicy": {"retentionPolicyType": "LongTermRetentionPolicy",
                                           "dailySchedule": {"retentionDuration": {"count": 30, "durationType": "Days"},
                                                             "retentionTimes": ["2023-06-01T02:30:00+00:00"]},
                                           "weeklySchedule": None, "monthlySchedule": None, "yearlySchedule": None}}}),
    "az-sql.json": json.dumps({"name": "S", "properties": {"backupManagementType": "AzureWorkload"}}),
}

CASES = [
    # --- dates --------------------------------------------------------------------------------
    c("job list --since yesterday", 2), c("job list --until 9999-12-31", 0), c("job list --since 9999-12-31", 0),
    c("job list --since 0001-01-01", 0), c("job list --until 0001-01-01", 0), c("job list --since 31-02-2025", 2),
    c("job list --since 2025-13-01", 2), c("job list --start-date ''", 2), c("job list --end-date 1-1-1", 2),
    c("job list --since 2025-03-01T25:00:00Z", 2), c("job list --since 01-03-2025 --until 02-03-2025", 0),
    c("job list --top 0", 2), c("job list --top -5", 2), c("job list --top many", 2),
    c("backup-now --vm vm1 --retain-until 31-31-2031", 2), c("backup-now --vm vm1 --retain-until 01-01-2000", 2),
    c("backup-now --vm vm1 --retain-until tomorrow", 2),
    # --- enums in any case --------------------------------------------------------------------
    c("job list --status failed", 0), c("job list --status FAILED", 0), c("job list --status inprogress", 0),
    c("job list --status broken", 2), c("job list --operation configurebackup", 0),
    c("job list --operation BACKUP", 0), c("job list --operation Restorex", 2), c("job list -o JSON", 0),
    c("job list -o Table", 0), c("job list -o xml", 2), c("policy create -n Weekly1 --frequency weekly", 0),
    c("policy create -n Bad1 --frequency monthly", 2), c("protection disable --vm vm9 --delete-backup-data maybe", 2),
    c("protection update-for-vm --vm vm1 --diskslist 0 --disk-list-setting INCLUDE", 0),
    c("protection update-for-vm --vm vm1 --diskslist 0 --disk-list-setting sometimes", 2),
    # --- output formats and --query -----------------------------------------------------------
    c("job list -o tsv", 0), c("job list -o yaml", 0), c("job list -o jsonc", 0), c("job list -o none", 0),
    c("job list --query [0].name", 0), c("job list --query '[?'", 2), c("policy list --query '[].name' -o tsv", 0),
    c("policy show -n DefaultPolicy --query timeZone -o tsv", 0), c("protection list -o yaml", 0),
    c("job list --top 200 -o json", 0, head=True), c("job list --top 200", 0, head=True),
    c("job list --top 200 -o tsv", 0, head=True), c("job list --top 200 -o yaml", 0, head=True),
    # --- names --------------------------------------------------------------------------------
    c("job show a/b#c", 2), c("job show --name 'a b'", 3), c("job show --name ''", 2), c("job show", 2),
    c("job wait --name ../../etc", 2), c("job stop --name 'x?y'", 2), c("retention plan --vm a/b#c", 2),
    c("retention run --vm a/b#c", 2), c("recoverypoint list --vm a/b#c", 2), c("job list --vm a/b#c", 2),
    c("job show --name 01954f6e-8d00-8000-8000-000000000000", 3), c("protection show --vm a/b#c", 2),
    c("protection enable-for-vm --vm 'vm 1'", 2), c("protection enable-for-vm --vm ghost", 3),
    c("protection enable-for-vm --vm vm1 -p 'no/such'", 2), c("protection enable-for-vm --vm vm1 -p Ghost", 3),
    c("policy show -n 'a#b'", 2), c("policy show -n Ghost", 3), c("policy create -n " + "x" * 65, 2),
    c("item set-policy --vm vm1 -p Ghost", 3), c("item show --vm ghost", 3), c("backup-now --vm ghost", 3),
    c("local vm add --name 'a/b'", 2), c("local vm add --name d1 --data-disk 99=http://x/y", 2),
    c("local vm add --name d1 --data-disk zero=http://x/y", 2), c("local vm add --name d1 --create-disks 1000", 2),
    c("local vm add --name d1 --create-disks big", 2), c("local vm add --name d1 --create-disks 1MiB", 0),
    c("protection update-for-vm --vm vm1 --diskslist x", 2), c("protection update-for-vm --vm vm1", 2),
    c("protection update-for-vm --vm vm1 --diskslist 99 --disk-list-setting include", 2),
    # --- files --------------------------------------------------------------------------------
    c("policy create -n F1 --policy {tmp}/missing.json", 2), c("policy create -n F2 --policy {tmp}/not-json.json", 2),
    c("policy create -n F3 --policy {tmp}/list.json", 2), c("policy create -n F4 --policy {tmp}/string-schedule.json", 2),
    c("policy create -n F5 --policy {tmp}/list-retention.json", 2),
    c("policy create -n F6 --policy {tmp}/number-times.json", 2), c("policy create -n F7 --policy {tmp}/deep.json", 2),
    c("policy create -n F8 --policy {tmp}/deep-object.json", 2),
    c("policy create -n F9 --policy {tmp}/deep-valid-prefix.json", 2),
    c("policy create -n F10 --policy {tmp}/binary.json", 2), c("policy create -n F11 --policy {tmp}", 2),
    c("policy create -n AzDaily --policy {tmp}/az-daily.json", 0),
    c("policy create -n AzSql --policy {tmp}/az-sql.json", 2),
    c("policy create -n TzWin --time-zone 'Tokyo Standard Time'", 0), c("policy create -n TzBad --time-zone Mars/Base", 2),
    c("status show {tmp}/missing.txt", 3), c("status show {tmp}", 2), c("status show {tmp}/not-json.json", 2),
    c("status show nosuchjob/1.Status.txt", 3),
    # --- settings: missing, malformed, wrong key, unreachable ----------------------------------
    c("job list", 5, "none"), c("policy list", 5, "none"), c("status show {corpus}/02-completed-fs-two-disks.txt", 0, "none"),
    c("job show --name a/b#c", 2, "none"), c("job list --since yesterday", 2, "none"),
    c("job list", 5, "bad-storage"), c("protection list", 5, "bad-storage"), c("policy list", 5, "bad-storage"),
    c("job list", 5, "wrong-key"), c("policy list", 5, "wrong-key"), c("protection list", 5, "wrong-key"),
    c("job list", 5, "storage-down"), c("policy show -n DefaultPolicy", 5, "storage-down"),
    c("backup-now --vm vm2", 5, "bad-servicebus"), c("backup-now --vm vm3", 5, "servicebus-down"),
    c("job list", 5, "bad-dispatcher"), c("job list", 5, "bad-schedule"),
    # --- a reader's settings: storage only, no Service Bus --------------------------------------
    c("job list", 0, "no-servicebus"), c("job list --vm vm1 -o json", 0, "no-servicebus"),
    c("recoverypoint list --vm vm1", 0, "no-servicebus"), c("retention plan", 0, "no-servicebus"),
    c("retention plan -o json", 0, "no-servicebus"), c("protection list", 0, "no-servicebus"),
    c("policy list", 0, "no-servicebus"), c("job show --name 01954f6e-8d00-8000-8000-000000000000", 3, "no-servicebus"),
    c("backup-now --vm vm1", 5, "no-servicebus"),
    # --- usage --------------------------------------------------------------------------------
    c("", 0), c("job", 2), c("nonsense", 2), c("job list --no-such-flag", 2), c("--help", 0), c("job list --help", 0),
    c("protection disable --vm vm9 --delete-backup-data", 2),
]


@pytest.fixture(scope="module")
def stack(azurite, local_servicebus, tmp_path_factory):
    """Settings on the session's Azurite and Service Bus, with VMs, protected items and many jobs."""
    from shared.settings import Settings
    from tests.scheduling.conftest import local_vm

    prefix = f"hostile{os.getpid() % 1000}"
    queue = f"tasks-{prefix}"
    env = {"BackupStorage": azurite.connection_string, "ServiceBusConnection": local_servicebus.connection_string,
           "TABLE_PREFIX": prefix, "STATUS_CONTAINER": f"status-{prefix}", "SNAPSHOT_TASKS_QUEUE": queue,
           "LOCAL_VM_ROOT": str(tmp_path_factory.mktemp("vms"))}
    svc = Services(Settings.from_env(env))
    from shared.services.protection import enable_protection

    for name in ("vm1", "vm2", "vm3", "vm9"):
        svc.inventory.put_vm(local_vm(name))
        enable_protection(svc, name, initial_backup=False)
    start = datetime.now(timezone.utc) - timedelta(days=1)
    svc.jobs.create_many_if_absent([Job.new_backup(vm_name=f"web-{i % 40:02d}", slot=start + timedelta(minutes=i),
                                                   now=start + timedelta(minutes=i)) for i in range(SEEDED_JOBS)])
    folder = tmp_path_factory.mktemp("files")
    for name, text in POLICY_FILES.items():
        (folder / name).write_text(text, errors="surrogateescape")
    return env, folder


@pytest.fixture(scope="module")
def envs(stack):
    base, _ = stack
    down = _free_port()
    bad_key = base["BackupStorage"].replace("AccountKey=", "AccountKey=AAAA")
    return {
        "ok": base,
        "none": {},
        "bad-storage": {**base, "BackupStorage": "this is not a connection string"},
        "wrong-key": {**base, "BackupStorage": bad_key},
        "storage-down": {**base, "BackupStorage": _endpoints_on_port(base["BackupStorage"], down)},
        "no-servicebus": {k: v for k, v in base.items() if k != "ServiceBusConnection"},
        "bad-servicebus": {**base, "ServiceBusConnection": "Endpoint=nonsense"},
        "servicebus-down": {**base, "ServiceBusConnection": f"Endpoint=sb://127.0.0.1:{down};{SB_KEY}"},
        "bad-dispatcher": {**base, "DISPATCHER": "carrier-pigeon"},
        "bad-schedule": {**base, "SNAPSHOT_SCHEDULE": "every five minutes"},
    }


def _endpoints_on_port(connection_string: str, port: int) -> str:
    """The connection string with every service endpoint moved to ``port`` (where nothing listens)."""
    return re.sub(r"(\w+Endpoint=https?://[^:/;]+):\d+", rf"\g<1>:{port}", connection_string)


def _run(case: Case, env: dict[str, str], folder: Path) -> tuple[int, str, str]:
    argv = [a.replace("{tmp}", str(folder)).replace("{corpus}", str(CORPUS)) for a in case.argv]
    # Only what a user's shell would carry, plus the case's settings; cwd has no local.settings.json.
    process_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")}
    process_env.update(env)
    if case.pipe_head:
        script = f"{shlex.join([str(VMSNAP), *argv])} | head -n 1 >/dev/null; exit ${{PIPESTATUS[0]}}"
        done = subprocess.run(["bash", "-c", script], env=process_env, cwd=folder, capture_output=True,
                              text=True, timeout=120)
    else:
        done = subprocess.run([str(VMSNAP), *argv], env=process_env, cwd=folder, capture_output=True, text=True,
                              timeout=120)
    return done.returncode, done.stdout, done.stderr


def test_at_least_80_hostile_invocations():
    """The table is as broad as promised: 80 or more invocations."""
    assert len(CASES) >= 80


# 80-odd vmsnap processes, eight at a time: on a machine that gives each a sliver of a CPU that is more
# than the suite's 300 s hang backstop; the backstop is for a hang, so it grows with the work.
@pytest.mark.timeout(1200)
def test_every_hostile_invocation_ends_with_its_exit_code_and_no_traceback(envs, stack):
    """Whatever the input or the state of the services, vmsnap answers with one ERROR line and the
    documented exit code, never a traceback."""
    _, folder = stack
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda case: (case, _run(case, envs[case.env], folder)), CASES))
    wrong = []
    for case, (code, out, err) in results:
        problems = []
        if code != case.expected:
            problems.append(f"exit {code}, expected {case.expected}")
        if "Traceback" in err or "Traceback" in out:
            problems.append("traceback")
        if code not in (0,) and case.argv and "--help" not in case.argv:
            lines = [line for line in err.splitlines() if line.strip()]
            if len(lines) != 1 or not lines[0].startswith("ERROR: "):
                problems.append(f"stderr is not one ERROR line: {err[-400:]!r}")
        if problems:
            wrong.append(f"{case.label}: {'; '.join(problems)}\n    stderr: {err.strip()[-300:]}")
    assert not wrong, "\n".join(wrong)


def test_unreachable_storage_names_the_endpoint_and_a_hint(envs, stack):
    """An Azurite that is not running is named, with what to do, and exit 5 (not 6 'try again')."""
    _, folder = stack
    code, _, err = _run(c("job list", 5, "storage-down"), envs["storage-down"], folder)
    port = envs["storage-down"]["BackupStorage"].split("TableEndpoint=")[1].split("/")[2]
    assert code == 5 and port in err and "./dev run" in err


def test_a_wrong_account_key_gives_one_message_whichever_table_is_read(envs, stack):
    """The same wrong key says the same thing from job, policy and protection commands."""
    _, folder = stack
    messages = {_run(c(cmd, 5, "wrong-key"), envs["wrong-key"], folder)[2]
                for cmd in ("job list", "policy list", "protection list")}
    assert len(messages) == 1 and "account key" in messages.pop()


def test_a_reader_needs_no_service_bus_and_a_sender_names_the_missing_setting(envs, stack):
    """Without ServiceBusConnection (a reader-role auditor's settings) the listings run; backup-now, which
    sends a task, refuses with one line naming the setting (exit 5) and records nothing."""
    _, folder = stack
    env = envs["no-servicebus"]
    code, _, err = _run(c("backup-now --vm vm1", 5, "no-servicebus"), env, folder)
    assert code == 5 and err.startswith("ERROR: setting ServiceBusConnection is missing;"), err
    code, out, err = _run(c("job list --vm vm1 -o json", 0, "no-servicebus"), env, folder)
    assert code == 0, err
    assert [job for job in json.loads(out) if job["properties"]["operation"] == "Backup"] == []


def test_status_show_parses_every_corpus_blob_with_no_settings(tmp_path):
    """`vmsnap status show FILE` needs no settings: every status blob of the corpus is read (or
    refused as malformed with exit 2), none asks for BackupStorage."""
    files = sorted(p for p in CORPUS.iterdir() if p.is_file())

    def expected(path: Path) -> int:
        try:
            parse_status_blob(path.read_bytes())
            return 0
        except ParseError:
            return 2

    cases = [(p, Case(("status", "show", str(p), "-o", "json"), expected(p), "none")) for p in files]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda pc: (pc, _run(pc[1], {}, tmp_path)), cases))
    assert sum(1 for (_, case), _ in results if case.expected == 0) >= 15
    for (path, case), (code, out, err) in results:
        assert code == case.expected and "Traceback" not in err and "BackupStorage" not in err, (path.name, err)
        if code == 0:
            assert json.loads(out)["result"]["jobStatus"]


def test_debug_shows_the_chain_but_never_a_sas(stack):
    """--debug adds the exception chain for an unreachable blob URL, with its SAS signature hidden."""
    _, folder = stack
    port = _free_port()
    url = f"http://127.0.0.1:{port}/devstoreaccount1/c/1.Status.txt?sv=2023-11-03&sp=r&sig=TOPSECRETSIG"
    code, _, err = _run(Case(("status", "show", url, "--debug"), 5, "none"), {}, folder)
    assert code == 5 and "Traceback" in err and f"127.0.0.1:{port}" in err.splitlines()[-1]
    assert "TOPSECRETSIG" not in err
