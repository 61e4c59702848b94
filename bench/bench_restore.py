"""Restore throughput on Azurite: the whole restore (the service's job: copy, then verification by parallel
ranged reads of the allocated pages) in MiB/s for 64 MiB - 1 GiB disks, against Azurite's own Copy Blob rate
measured in the same run on the same snapshot. Fully written disks of random bytes (the worst case for
verification: every page allocated). Prints min / median / max of --runs.

    .venv/bin/python bench/bench_restore.py [--sizes 64 256 1024] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devhost.azurite import Azurite  # noqa: E402
from devhost.ports import free_port  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.domain.inventory import OS_DISK_LUN, Disk, Vm, VmKind  # noqa: E402
from shared.domain.recovery import DiskSnapshot, RecoveryPoint  # noqa: E402
from shared.domain.restore import RestoreTask  # noqa: E402
from shared.services.restore import request_restore, run_restore  # noqa: E402
from shared.settings import Settings  # noqa: E402

MIB = 2**20


class _Queue:
    def __init__(self):
        self.sent = []

    def send(self, task, *, not_before=None):
        self.sent.append(task)


def _disk(svc, size_mib: int, n: int) -> tuple[Vm, RecoveryPoint]:
    container = svc.blob_service.get_container_client("bench-disks")
    if not container.exists():
        container.create_container()
    blob = container.get_blob_client(f"vm{n}-os.vhd")
    blob.create_page_blob(size_mib * MIB)
    chunk = os.urandom(4 * MIB)
    for offset in range(0, size_mib * MIB, 4 * MIB):
        blob.upload_page(chunk, offset=offset, length=4 * MIB)
    snap = blob.create_snapshot()["snapshot"]
    vm = Vm(name=f"bench{n}", kind=VmKind.LOCAL, disks=(Disk(OS_DISK_LUN, blob.url, blob.blob_name, size_mib * MIB),))
    svc.inventory.put_vm(vm)
    point = RecoveryPoint(name=f"{n:018d}", vm_name=vm.name, created_at=datetime.now(timezone.utc), job_id=f"b{n}",
                          disks=(DiskSnapshot(OS_DISK_LUN, blob.url, f"{blob.url}?snapshot={snap}", snap),))
    svc.recovery_points.add_if_absent(point)
    return vm, point


def _raw_copy(svc, point: RecoveryPoint, n: int) -> float:
    """Azurite's Copy Blob of the same snapshot, started and polled until it succeeds."""
    target = svc.blob_service.get_blob_client("bench-raw", f"copy{n}.vhd")
    started = time.perf_counter()
    svc.snapshots.start_copy(point.disks[0].snapshot, "bench-raw", f"copy{n}.vhd", owner="raw")
    while target.get_blob_properties().copy.status == "pending":
        time.sleep(0.01)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024], help="disk sizes in MiB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    azurite = Azurite(free_port(), free_port(), None).start()
    try:
        settings = Settings.from_env({"BackupStorage": azurite.connection_string, "TABLE_PREFIX": "bench",
                                      "ServiceBusConnection": "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=x;"
                                                              "SharedAccessKey=y;"})
        svc = Services(settings, restore_queue=_Queue())
        n = 0
        print(f"{'size':>8}  {'restore+verify MiB/s (min/median/max)':>40}  {'Azurite Copy Blob MiB/s':>28}  ratio")
        for size in args.sizes:
            restore, raw = [], []
            for _ in range(args.runs):
                n += 1
                vm, point = _disk(svc, size, n)
                raw.append(size / _raw_copy(svc, point, n))
                started = time.perf_counter()
                job = request_restore(svc, vm.name, point.name, f"bench-restored-{n}")
                done = run_restore(svc, RestoreTask(job.job_id, vm.name), poll_seconds=0.05)
                elapsed = time.perf_counter() - started
                assert done is not None and done.status.value == "Completed", done
                restore.append(size / elapsed)
                for container in (f"bench-restored-{n}",):
                    svc.blob_service.delete_container(container)
                svc.blob_service.get_container_client("bench-disks").delete_blob(f"vm{n}-os.vhd",
                                                                                  delete_snapshots="include")
            r, c = sorted(restore), sorted(raw)
            print(f"{size:>5} MiB  {r[0]:>12.0f} / {statistics.median(r):>6.0f} / {r[-1]:>6.0f}"
                  f"{'':>14}  {c[0]:>8.0f} / {statistics.median(c):>6.0f} / {c[-1]:>6.0f}  "
                  f"{statistics.median(r) / statistics.median(c):.3f}", flush=True)
    finally:
        azurite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
