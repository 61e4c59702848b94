"""The local dispatcher with the bundled handler: a task on the queue ends as a final status blob."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from extension.crypto import decrypt_protected_settings
from extension.layout import write_extension_root
from shared.adapters import dispatch_local
from shared.adapters.dispatch_local import LocalDispatcher, next_sequence_number
from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.command import build_snapshot_command
from shared.domain.task import SnapshotTask
from shared.errors import TransientError
from shared.services.dispatch import Outcome, handle_snapshot_task
from tests.fakes import InMemoryInventory, InMemoryJobStore


@pytest.fixture(autouse=True)
def unprivileged_extension(tmp_path, monkeypatch):
    """The handler's /etc/azure moved into the test's directory (no root needed, nothing frozen)."""
    monkeypatch.setenv("VMSNAP_EXTENSION_ETC", str(tmp_path / "etc-azure"))
    monkeypatch.delenv("VMSNAP_FREEZE_MOUNTS", raising=False)


def _final_status(svc, name: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = svc.status_blobs.read(name).rstrip(b"\0 ").decode()
        if text and json.loads(text)[0]["status"]["code"] != "4":
            return json.loads(text)[0]
        time.sleep(0.3)
    raise AssertionError(f"no final status in {name} after {timeout}s")


def test_task_ends_with_a_final_status_and_snapshots(make_settings, make_vm, tmp_path, blob_service):
    """Dispatching to a local VM snapshots each disk and the status blob ends with success."""
    vm = make_vm(data_luns=(0,))
    now = datetime.now(timezone.utc)
    svc = Services(make_settings(), clock=FixedClock(now), jobs=InMemoryJobStore(),
                   inventory=InMemoryInventory(vm), dispatcher=LocalDispatcher(tmp_path / "vms"))
    task = SnapshotTask(job_id="3c7d6a52-0b55-4f0e-a1a9-5a4f8a0f1e01", attempt=1, vm_name=vm.name,
                        slot=now, retain_until=now + timedelta(days=7))
    started = time.monotonic()
    outcome = handle_snapshot_task(svc, task.to_json().encode(), message_id=task.message_id, delivery_count=1)
    assert outcome.outcome is Outcome.DISPATCHED
    assert time.monotonic() - started < 30          # enable returned; the daemon runs on its own
    job = svc.jobs.get(task.job_id)
    status = _final_status(svc, job.status_blob)["status"]
    assert (status["status"], status["code"], status["taskId"]) == ("success", "1", task.task_id)
    assert [s["isSuccessful"] for s in status["snapshotInfo"]] == [True, True]
    # The backup size is the VM's own disks (two 1 KiB page blobs), not this machine's file systems.
    assert status["storageDetails"]["totalUsedSizeInBytes"] == sum(d.size_bytes for d in vm.disks)
    assert status["storageDetails"]["partitionCount"] == len(vm.disks)
    container = blob_service.get_container_client(vm.disks[0].blob_url.split("/")[-2])
    snaps = [b for b in container.list_blobs(include=["snapshots", "metadata"]) if b.snapshot]
    assert sorted(b.name for b in snaps) == sorted(d.blob_url.rsplit("/", 1)[1] for d in vm.disks)
    assert all(b.metadata["jobId"] == task.job_id for b in snaps)
    deadline = time.monotonic() + 10                # the log is uploaded just after the status
    while not svc.status_blobs.read(job.log_blob) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert svc.status_blobs.read(job.log_blob)
    settings_file = tmp_path / "vms" / vm.name / "config" / "0.settings"
    # They arrived encrypted to the VM's own certificate, which the handler decrypted with its key.
    handler_settings = json.loads(settings_file.read_text())["runtimeSettings"][0]["handlerSettings"]
    assert "protectedSettings" not in handler_settings    # scrubbed by the handler once read
    (cert,) = (tmp_path / "vms" / vm.name / "waagent").glob("*.crt")
    assert handler_settings["protectedSettingsCertThumbprint"] == cert.stem


def test_protected_settings_reach_the_vm_encrypted_to_its_certificate(make_vm, tmp_path):
    """What lands in the VM's settings file is CMS only that VM's key opens; no SAS in the clear."""
    vm = make_vm()
    dispatcher = LocalDispatcher(tmp_path / "vms")
    dispatcher._enable = lambda *args: None        # lay the command out; do not start the handler
    now = datetime.now(timezone.utc)
    command = build_snapshot_command(
        SnapshotTask(job_id="j", attempt=1, vm_name=vm.name, slot=now), vm,
        disk_sas_urls=[d.blob_url + "?sp=c&sig=S3CRET" for d in vm.disks],
        status_blob_sas="http://x/s?sig=S3CRET", log_blob_sas="http://x/l?sig=S3CRET", now=now)
    dispatcher.dispatch(vm, command)
    dispatcher.dispatch(vm, command)
    texts = [(tmp_path / "vms" / vm.name / "config" / f"{seq}.settings").read_text() for seq in (0, 1)]
    assert all("S3CRET" not in text and "blobSASUri" not in text for text in texts)
    (cert,) = (tmp_path / "vms" / vm.name / "waagent").glob("*.crt")   # one key pair, reused
    handler_settings = json.loads(texts[1])["runtimeSettings"][0]["handlerSettings"]
    assert handler_settings["protectedSettingsCertThumbprint"] == cert.stem
    opened = decrypt_protected_settings(handler_settings["protectedSettings"], cert.read_bytes(),
                                        cert.with_suffix(".prv").read_bytes())
    assert opened == command.protected_settings


def test_no_file_on_the_vm_keeps_the_protected_settings(make_vm, tmp_path, monkeypatch):
    """After a command ran, and after its redelivery was declined, no file on the VM holds them."""
    vm = make_vm()
    dispatcher = LocalDispatcher(tmp_path / "vms")
    now = datetime.now(timezone.utc)
    command = build_snapshot_command(
        SnapshotTask(job_id="j", attempt=1, vm_name=vm.name, slot=now), vm,
        disk_sas_urls=[d.blob_url + "?sp=c&sig=S3CRET" for d in vm.disks],
        status_blob_sas="http://127.0.0.1:1/s?sig=S3CRET", log_blob_sas="http://127.0.0.1:1/l?sig=S3CRET",
        now=now)
    sealed: list[str] = []

    def recording_write(root, seq, public, protected, thumbprint):
        sealed.append(protected)
        return write_extension_root(root, seq, public, protected, thumbprint)

    monkeypatch.setattr(dispatch_local, "write_extension_root", recording_write)
    dispatcher.dispatch(vm, command)
    dispatcher.dispatch(vm, command)            # a redelivery: same taskId, declined by enable
    root = dispatcher.extension_root(vm)
    status = root / "status" / "0.status"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
            not status.exists() or json.loads(status.read_text())[0]["status"]["code"] == "4"):
        time.sleep(0.2)

    assert json.loads(status.read_text())[0]["status"]["code"] != "4"
    assert sorted(p.name for p in (root / "config").iterdir()) == ["0.settings", "1.settings"]
    key_pair = set((root / "waagent").iterdir())            # the VM's own key pair stays, as WALA's
    for path in (p for p in root.rglob("*") if p.is_file() and p not in key_pair):
        text = path.read_text(errors="replace")
        assert "S3CRET" not in text and '"protectedSettings"' not in text, path
        assert all(blob[:64] not in text for blob in sealed), path


def test_concurrent_deliveries_of_one_task_run_once_and_leave_no_protected_settings(
        make_settings, make_vm, tmp_path, blob_service):
    """Five workers dispatching the same task at once: one snapshot per disk, every settings file scrubbed."""
    vm = make_vm(data_luns=(0,))
    now = datetime.now(timezone.utc)
    svc = Services(make_settings(), clock=FixedClock(now), jobs=InMemoryJobStore(),
                   inventory=InMemoryInventory(vm), dispatcher=LocalDispatcher(tmp_path / "vms"))
    task = SnapshotTask(job_id="5d0c2a8e-7f3b-4c1e-9a6d-2b8e4f1c3a77", attempt=1, vm_name=vm.name, slot=now)
    status_blob, log_blob = svc.status_blobs.create_attempt_blobs(task.job_id, task.attempt)
    command = build_snapshot_command(
        task, vm, disk_sas_urls=[svc.sas.disk_sas_url(d.blob_url) for d in vm.disks],
        status_blob_sas=svc.sas.status_sas_url(svc.status_blobs.url(status_blob)),
        log_blob_sas=svc.sas.log_sas_url(svc.status_blobs.url(log_blob)), now=now)
    dispatcher = LocalDispatcher(tmp_path / "vms")

    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(lambda _: dispatcher.dispatch(vm, command), range(5)))
    status = _final_status(svc, status_blob)["status"]

    assert (status["status"], status["code"]) == ("success", "1")
    config = dispatcher.extension_root(vm) / "config"
    assert sorted(p.name for p in config.iterdir()) == [f"{n}.settings" for n in range(5)]
    for path in config.iterdir():
        assert "protectedSettings" not in json.loads(path.read_text())["runtimeSettings"][0]["handlerSettings"]
    container = blob_service.get_container_client(vm.disks[0].blob_url.split("/")[-2])
    snaps = [b.name for b in container.list_blobs(include=["snapshots"]) if b.snapshot]
    assert sorted(snaps) == sorted(d.blob_url.rsplit("/", 1)[1] for d in vm.disks)


def test_sequence_numbers_only_go_up(tmp_path):
    """Each dispatch to a VM uses a sequence number above every earlier one, renamed or not."""
    config = tmp_path / "config"
    assert next_sequence_number(tmp_path) == 0
    config.mkdir()
    for name in ("0_settings", "3_settings", "2.settings", "7.status", "notes.txt"):
        (config / name).write_text("{}")
    assert next_sequence_number(tmp_path) == 4


def test_failing_enable_is_retried(make_vm, tmp_path):
    """When the VM's handler cannot start, the message is retried and its unread settings are scrubbed."""
    vm = make_vm()
    dispatcher = LocalDispatcher(tmp_path / "vms")
    root = dispatcher.extension_root(vm)
    (root / "config").mkdir(parents=True)
    (root / "HandlerEnvironment.json").write_text(json.dumps([{"name": "x", "version": "1.0", "handlerEnvironment": {
        "logFolder": str(root / "HandlerEnvironment.json" / "log"), "configFolder": str(root / "config"),
        "statusFolder": str(root / "status"), "heartbeatFile": str(root / "hb")}}]))
    now = datetime.now(timezone.utc)
    command = build_snapshot_command(
        SnapshotTask(job_id="j", attempt=1, vm_name=vm.name, slot=now), vm,
        disk_sas_urls=[d.blob_url + "?sp=c&sig=S" for d in vm.disks],
        status_blob_sas="http://x/s?sig=S", log_blob_sas="http://x/l?sig=S", now=now)
    with pytest.raises(TransientError, match="exited 1") as caught:
        dispatcher.dispatch(vm, command)
    assert "sig=S" not in str(caught.value)
    # The command was not taken, so its protected settings do not stay on the VM for nobody to scrub.
    (settings_file,) = (root / "config").glob("*.settings")
    assert "protectedSettings" not in json.loads(settings_file.read_text())["runtimeSettings"][0]["handlerSettings"]
