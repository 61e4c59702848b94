"""The Dispatcher contract: the recording fake, the ARM dispatcher (on a recording transport: ARM has
no emulator) and the local dispatcher (the bundled handler) all hand each attempt's command over once,
in order, and return without waiting for the snapshot."""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import pytest

from extension.layout import HandlerEnvironment
from shared.adapters.dispatch_arm import ArmDispatcher
from shared.adapters.dispatch_local import LocalDispatcher
from shared.domain.command import ExtensionCommand, build_snapshot_command
from shared.domain.inventory import OS_DISK_LUN, Disk, Vm, VmKind
from shared.domain.task import SnapshotTask
from shared.ports import Dispatcher
from tests.dispatch.recording import RecordingTransport, StaticCredential
from tests.fakes import RecordingDispatcher

PORTS = (Dispatcher,)

SUB = "00000000-0000-0000-0000-0000000000aa"
# Nothing listens on port 9: a local handler's status upload and snapshots fail at once.
ACCOUNT = "http://127.0.0.1:9/devstoreaccount1"
HandedOver = Callable[[], list[str]]
_SETTINGS = re.compile(r"^(\d+)[._]settings$")


def make_vm(name: str = "web-1") -> Vm:
    return Vm(name=name, kind=VmKind.AZURE, location="westeurope",
              resource_id=f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}",
              disks=(Disk(OS_DISK_LUN, f"{ACCOUNT}/disks/{name}-os.vhd", "os", 1024),))


def command(vm: Vm, attempt: int) -> ExtensionCommand:
    now = datetime.now(timezone.utc)
    task = SnapshotTask(job_id="3c7d6a52-0b55-4f0e-a1a9-5a4f8a0f1e01", attempt=attempt, vm_name=vm.name, slot=now)
    sas = "?sv=2024&sp=rw&sig=SECRET"
    return build_snapshot_command(task, vm, disk_sas_urls=[vm.disks[0].blob_url + "?sv=2024&sp=c&sig=SECRET"],
                                  status_blob_sas=f"{ACCOUNT}/status/j/{attempt}.Status.txt{sas}",
                                  log_blob_sas=f"{ACCOUNT}/status/j/{attempt}.Logs.txt{sas}", now=now)


@pytest.fixture(params=["fake", "arm", pytest.param("local", marks=pytest.mark.integration)])
def dispatcher(request, tmp_path, monkeypatch) -> Iterator[tuple[Dispatcher, HandedOver]]:
    """The dispatcher, and the taskIds that reached the VM, in the order they arrived."""
    if request.param == "fake":
        fake = RecordingDispatcher()
        yield fake, lambda: [c.task_id for _, c in fake.sent]
    elif request.param == "arm":
        transport = RecordingTransport()
        arm = ArmDispatcher(StaticCredential(), SUB, transport=transport, retry_total=0)
        yield arm, lambda: [json.loads(r.body)["properties"]["settings"]["taskId"] for r in transport.requests]
    else:
        monkeypatch.setenv("VMSNAP_EXTENSION_ETC", str(tmp_path / "etc-azure"))
        monkeypatch.delenv("VMSNAP_FREEZE_MOUNTS", raising=False)
        local = LocalDispatcher(tmp_path / "vms")
        root = local.extension_root(make_vm())
        yield local, lambda: _local_task_ids(root)
        _wait_for_daemons(root)


def _settings_files(root: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in (root / "config").glob("*settings") if (m := _SETTINGS.match(p.name))]
    return sorted(found)


def _local_task_ids(root: Path) -> list[str]:
    docs = [json.loads(path.read_text()) for _, path in _settings_files(root)]
    return [d["runtimeSettings"][0]["handlerSettings"]["publicSettings"]["taskId"] for d in docs]


def _wait_for_daemons(root: Path, timeout: float = 60) -> None:
    """The handler's daemons run on after enable; let each write its final status before the test ends."""
    env = HandlerEnvironment.load(root)
    deadline = time.monotonic() + timeout
    for seq, _ in _settings_files(root):
        while time.monotonic() < deadline:
            path = env.status_file(seq)
            if path.exists() and json.loads(path.read_text())[0]["status"]["code"] != "4":
                break
            time.sleep(0.2)


def test_a_command_is_handed_over_once(dispatcher):
    """Dispatching returns once the VM has the command; the VM sees the attempt's taskId once."""
    target, handed_over = dispatcher
    vm = make_vm()
    assert target.dispatch(vm, command(vm, 1)) is None
    assert handed_over() == [command(vm, 1).task_id]


def test_attempts_arrive_in_order(dispatcher):
    """A retry is a new command with a new taskId, handed over after the first."""
    target, handed_over = dispatcher
    vm = make_vm()
    target.dispatch(vm, command(vm, 1))
    target.dispatch(vm, command(vm, 2))
    assert handed_over() == [command(vm, 1).task_id, command(vm, 2).task_id]
