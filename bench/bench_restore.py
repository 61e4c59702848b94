"""Restore throughput on Azurite: the whole restore (the service's job: request, server-side copy, then
verification by parallel ranged reads of the allocated pages) in MiB/s for 64 MiB - 1 GiB disks, for (a) the
first restore of a point whose digest was recorded right after its backup (the service's digest worker: the
snapshot read once, off any restore's path; its rate printed too), (b) a later restore of the same point,
both of which read the copy only against that digest, and (c) the first restore of a point with no digest
(recording turned off, or its request lost), whose verification reads the snapshot and the copy and records
the digest; against the least a verified restore must do, measured in the same run on the same snapshot:
Azurite's Copy Blob (started, polled until it succeeds) plus one sequential read-back of the copy. Azurite
copies a page blob by reference, so the copy alone is near-instant and no baseline for a restore that reads
data (docs/restore.md). Fully written disks of random bytes: every page is allocated, nothing is skipped.

    .venv/bin/python bench/bench_restore.py [--sizes 64 256 1024] [--runs 3]

Prints per size min / median / max of --runs for each restore, the digest after the backup and the
baseline, the per-run ratios (baseline seconds / restore seconds, each run's measured back to back, the
baseline first or last in alternating runs), and where a later restore's time went (median seconds: the
request, the copy until every disk is Copied, verification and completion).
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
from shared.adapters.verification import VERIFY_PIECE  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.domain.disk_digest import DigestRequest  # noqa: E402
from shared.domain.inventory import OS_DISK_LUN, Disk, Vm, VmKind  # noqa: E402
from shared.domain.recovery import DiskSnapshot, RecoveryPoint  # noqa: E402
from shared.domain.restore import RestoreTask  # noqa: E402
from shared.ports import Digested  # noqa: E402
from shared.services.point_data import record_point_digests  # noqa: E402
from shared.services.restore import request_restore, run_restore  # noqa: E402
from shared.settings import Settings  # noqa: E402

MIB = 2**20


class _Queue:
    def __init__(self):
        self.sent = []

    def send(self, task, *, not_before=None):
        self.sent.append(task)


def _disk(svc, size_mib: int, n: int) -> tuple[Vm, RecoveryPoint, RecoveryPoint]:
    """The VM, and two points of its disk: one to be digested after its backup, one never digested."""
    container = svc.blob_service.get_container_client("bench-disks")
    if not container.exists():
        container.create_container()
    blob = container.get_blob_client(f"vm{n}-os.vhd")
    blob.create_page_blob(size_mib * MIB)
    chunk = os.urandom(4 * MIB)
    for offset in range(0, size_mib * MIB, 4 * MIB):
        blob.upload_page(chunk, offset=offset, length=4 * MIB)
    vm = Vm(name=f"bench{n}", kind=VmKind.LOCAL, disks=(Disk(OS_DISK_LUN, blob.url, blob.blob_name, size_mib * MIB),))
    svc.inventory.put_vm(vm)
    points = []
    for k in range(2):
        snap = blob.create_snapshot()["snapshot"]
        points.append(RecoveryPoint(name=f"{n * 10 + k:018d}", vm_name=vm.name, created_at=datetime.now(timezone.utc),
                                    job_id=f"b{n}-{k}",
                                    disks=(DiskSnapshot(OS_DISK_LUN, blob.url, f"{blob.url}?snapshot={snap}", snap),)))
        svc.recovery_points.add_if_absent(points[-1])
    return vm, points[0], points[1]


def _digest(svc, point: RecoveryPoint) -> float:
    """Seconds the digest worker takes over the point right after its backup."""
    started = time.perf_counter()
    counts = record_point_digests(svc, DigestRequest(point.vm_name, point.name))
    assert counts[Digested.RECORDED] == len(point.disks), counts
    return time.perf_counter() - started


def _baseline(svc, point: RecoveryPoint, n: int) -> tuple[float, float]:
    """(seconds for Copy Blob alone, seconds for Copy Blob plus one sequential read-back of the copy), in
    the verification's piece size: a baseline read in 4 MiB pieces would pay the MD5 Azurite computes of
    every ranged read of at most 4 MiB, which the verification does not."""
    target = svc.blob_service.get_blob_client("bench-raw", f"copy{n}.vhd")
    started = time.perf_counter()
    svc.snapshots.start_copy(point.disks[0].snapshot, "bench-raw", f"copy{n}.vhd", owner="raw")
    while (props := target.get_blob_properties()).copy.status == "pending":
        time.sleep(0.01)
    copied = time.perf_counter() - started
    for offset in range(0, props.size, VERIFY_PIECE):
        target.download_blob(offset=offset, length=VERIFY_PIECE, max_concurrency=1).readall()
    elapsed = time.perf_counter() - started
    target.delete_blob()
    return copied, elapsed


def _restore(svc, vm: Vm, point: RecoveryPoint, tag: str) -> tuple[float, float, float]:
    """(request, copy, verification and completion) seconds of one whole restore, as the worker runs it."""
    marks = [time.perf_counter()]
    job = request_restore(svc, vm.name, point.name, f"bench-restored-{tag}")
    marks.append(time.perf_counter())
    done = run_restore(svc, RestoreTask(job.job_id, vm.name), after_copy=lambda _job: marks.append(time.perf_counter()))
    marks.append(time.perf_counter())
    assert done is not None and done.status.value == "Completed", done
    svc.blob_service.delete_container(f"bench-restored-{tag}")
    return marks[1] - marks[0], marks[2] - marks[1], marks[3] - marks[2]


def _spread(values: list[float]) -> str:
    v = sorted(values)
    return f"{v[0]:>5.0f} / {statistics.median(v):>5.0f} / {v[-1]:>5.0f}"


def _ratios(values: list[float]) -> str:
    v = sorted(values)
    return f"{v[0]:.2f} / {statistics.median(v):.2f} / {v[-1]:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024], help="disk sizes in MiB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    azurite = Azurite().start()      # ports of its own choosing, chosen again if taken first
    try:
        settings = Settings.from_env({"BackupStorage": azurite.connection_string, "TABLE_PREFIX": "bench",
                                      "ServiceBusConnection": "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=x;"
                                                              "SharedAccessKey=y;"})
        svc = Services(settings, restore_queue=_Queue())
        n = 0
        print(f"{'size':>8}  {'digest after backup':>19}  {'(a) first MiB/s':>17}  {'(b) later MiB/s':>17}  "
              f"{'(c) no digest MiB/s':>19}  {'copy+read-back':>17}  {'ratio (a)':>18}  {'ratio (b)':>18}  "
              f"{'ratio (c)':>18}  {'Copy Blob alone':>15}  {'(b) request/copy/verify s':>25}")
        for size in args.sizes:
            rates: dict[str, list[float]] = {k: [] for k in ("digest", "a", "b", "c", "base", "copy")}
            ratios: dict[str, list[float]] = {k: [] for k in ("a", "b", "c")}
            phases = []
            for run in range(args.runs):
                n += 1
                vm, point, bare = _disk(svc, size, n)
                rates["digest"].append(size / _digest(svc, point))          # the digest worker, after the backup
                # The baseline goes first or last in alternate runs, so a change of load favours neither side.
                if run % 2 == 0:
                    copied, based = _baseline(svc, point, n)
                taken = {"a": _restore(svc, vm, point, f"{n}a"),            # reads the copy only
                         "b": _restore(svc, vm, point, f"{n}b"),            # reads the copy only
                         "c": _restore(svc, vm, bare, f"{n}c")}             # reads both, records the digest
                if run % 2:
                    copied, based = _baseline(svc, point, n)
                for key, spent in taken.items():
                    rates[key].append(size / sum(spent))
                    ratios[key].append(based / sum(spent))
                rates["base"].append(size / based)
                rates["copy"].append(size / copied)
                phases.append(taken["b"])
                svc.blob_service.get_container_client("bench-disks").delete_blob(f"vm{n}-os.vhd",
                                                                                  delete_snapshots="include")
            split = " / ".join(f"{statistics.median(p[i] for p in phases):.2f}" for i in range(3))
            print(f"{size:>5} MiB  {_spread(rates['digest']):>19}  {_spread(rates['a']):>17}  {_spread(rates['b']):>17}  "
                  f"{_spread(rates['c']):>19}  {_spread(rates['base']):>17}  {_ratios(ratios['a']):>18}  "
                  f"{_ratios(ratios['b']):>18}  {_ratios(ratios['c']):>18}  "
                  f"{statistics.median(rates['copy']):>9.0f} MiB/s  {split:>25}", flush=True)
    finally:
        azurite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
