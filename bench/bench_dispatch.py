"""Benchmark the local dispatch of one snapshot command per VM: the time ``LocalDispatcher.dispatch``
takes (seal the protected settings, lay out the settings file, run the handler's enable), for a VM's
first command and for a later one, and how long until the handler's final status blob is written.
Besides wall seconds it prints CPU seconds, which a busy machine disturbs less: the dispatcher's own
(this process) and enable's (the child process the dispatcher waits for; the daemon is not counted).

Run: .venv/bin/python bench/bench_dispatch.py [--vms 10] [--runs 3]. Starts and stops its own
Azurite; each run uses fresh VMs (new extension roots), so the first command of each VM includes
whatever a VM's first command costs. Prints min / median / max over all dispatches of all runs.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from azure.storage.blob import BlobServiceClient  # noqa: E402

from devhost.azurite import Azurite  # noqa: E402
from devhost.processes import interrupt_on_sigterm  # noqa: E402
from shared.adapters.blob_sas import BlobSasMinter, StatusBlobStore  # noqa: E402
from shared.adapters.dispatch_local import LocalDispatcher  # noqa: E402
from shared.clock import SystemClock  # noqa: E402
from shared.domain.command import ExtensionCommand, build_snapshot_command  # noqa: E402
from shared.domain.inventory import OS_DISK_LUN, Disk, Vm, VmKind  # noqa: E402
from shared.domain.task import SnapshotTask  # noqa: E402

DISK_BYTES = 1024 * 1024


def make_vms(blob_service: BlobServiceClient, container: str, count: int, stem: str) -> list[Vm]:
    disks_container = blob_service.get_container_client(container)
    if not disks_container.exists():
        disks_container.create_container()
    vms = []
    for i in range(count):
        name = f"{stem}{i:03d}"
        disks = []
        for lun in (OS_DISK_LUN, 0):
            blob = disks_container.get_blob_client(f"{name}-{lun}.vhd")
            blob.create_page_blob(DISK_BYTES)
            blob.upload_page(name.encode().ljust(512, b"\0"), offset=0, length=512)
            disks.append(Disk(lun=lun, blob_url=blob.url, name=blob.blob_name, size_bytes=DISK_BYTES))
        vms.append(Vm(name=name, kind=VmKind.LOCAL, disks=tuple(disks)))
    return vms


def command_for(vm: Vm, attempt: int, sas: BlobSasMinter, blobs: StatusBlobStore) -> tuple[ExtensionCommand, str]:
    now = datetime.now(timezone.utc)
    task = SnapshotTask(job_id=f"bench-{vm.name}", attempt=attempt, vm_name=vm.name, slot=now)
    status_blob, log_blob = blobs.create_attempt_blobs(task.job_id, attempt)
    command = build_snapshot_command(
        task, vm, disk_sas_urls=[sas.disk_sas_url(d.blob_url) for d in vm.disks],
        status_blob_sas=sas.status_sas_url(blobs.url(status_blob)),
        log_blob_sas=sas.log_sas_url(blobs.url(log_blob)), now=now)
    return command, status_blob


def wait_final(blobs: StatusBlobStore, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = blobs.read(name).rstrip(b"\0 ").decode()
        if text and json.loads(text)[0]["status"]["code"] != "4":
            return
        time.sleep(0.05)
    raise SystemExit(f"status blob {name} never turned final")


def one_run(blob_service: BlobServiceClient, run: int, vms_per_run: int) -> dict[str, list[float]]:
    clock = SystemClock()
    sas = BlobSasMinter(blob_service, clock=clock)
    blobs = StatusBlobStore(blob_service, f"bench-status-{run}")
    vms = make_vms(blob_service, f"bench-disks-{run}", vms_per_run, f"bvm{run}x")
    figures: dict[str, list[float]] = {key: [] for key in FIGURES}
    with tempfile.TemporaryDirectory(prefix="bench-vms-") as vm_root:
        dispatcher = LocalDispatcher(Path(vm_root))
        for attempt, label in ((1, "first"), (2, "later")):
            for vm in vms:
                command, status_blob = command_for(vm, attempt, sas, blobs)
                cpu, child_cpu = time.process_time(), _children_cpu()
                started = time.perf_counter()
                dispatcher.dispatch(vm, command)
                figures[label].append(time.perf_counter() - started)
                figures[f"{label}_cpu"].append(time.process_time() - cpu)
                figures[f"{label}_enable_cpu"].append(_children_cpu() - child_cpu)
                # One VM at a time: the figure is one dispatch, not a crowd of daemons racing it.
                wait_final(blobs, status_blob)
                figures["to_final"].append(time.perf_counter() - started)
    return figures


FIGURES = {
    "first": "first command of a VM, wall",
    "first_cpu": "  dispatcher CPU",
    "first_enable_cpu": "  enable CPU",
    "later": "a later command, wall",
    "later_cpu": "  dispatcher CPU",
    "later_enable_cpu": "  enable CPU",
    "to_final": "dispatch to final status blob, wall",
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summary(values: list[float]) -> str:
    return f"min {min(values):.3f}  median {statistics.median(values):.3f}  max {max(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=10, help="VMs per run (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs (default %(default)s)")
    args = parser.parse_args()
    totals: dict[str, list[float]] = {key: [] for key in FIGURES}
    with Azurite() as azurite:
        blob_service = BlobServiceClient.from_connection_string(azurite.connection_string)
        for run in range(args.runs):
            figures = one_run(blob_service, run, args.vms)
            for key, values in figures.items():
                totals[key].extend(values)
            print(f"run {run + 1}: dispatch, first command per VM {statistics.median(figures['first']):.3f} s, "
                  f"later {statistics.median(figures['later']):.3f} s (medians)", flush=True)
    print(f"dispatch seconds per VM over {args.runs} runs x {args.vms} VMs:")
    for key, label in FIGURES.items():
        print(f"  {label:<36} {summary(totals[key])}")


if __name__ == "__main__":
    interrupt_on_sigterm()
    main()
