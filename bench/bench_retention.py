"""Benchmark of one retention run over N protected VMs x P recovery points each, on Azurite.

Starts its own Azurite, seeds the points straight into the recovery point table (one transaction per
VM) and the protected items, then runs ``run_retention`` with the real Table stores. Snapshot deletes
go to a counting stand-in (the points' snapshots are not real blobs): the figures are the table side.
Prints points examined per second, Table requests (HTTP, a transaction counts once) per deleted
point, and checks that exactly the expected points were deleted.

    .venv/bin/python bench/bench_retention.py [--vms 10000] [--points 30] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.core.exceptions import ResourceExistsError, ServiceResponseError  # noqa: E402
from azure.data.tables import TableServiceClient  # noqa: E402

from bench._http import CountingTransport  # noqa: E402
from devhost.azurite import Azurite  # noqa: E402
from shared.adapters.table_protection import TablePolicyStore, TableProtectedItemStore  # noqa: E402
from shared.adapters.table_recovery import point_entity  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.clock import FixedClock  # noqa: E402
from shared.domain.protection import ProtectedItem  # noqa: E402
from shared.domain.recovery import DiskSnapshot, RecoveryPoint, recovery_point_name  # noqa: E402
from shared.services.retention import run_retention  # noqa: E402
from shared.settings import Settings  # noqa: E402

FIRST = datetime(2025, 6, 1, 22, 30, tzinfo=timezone.utc)     # DefaultPolicy: daily 22:30 UTC, 30 days
EXPIRED_DAYS = 10                                             # the run deletes the 10 oldest points of each VM


class CountingSnapshots:
    """Stands in for blob snapshots: every delete succeeds once."""

    def __init__(self) -> None:
        self.deleted = 0
        self._lock = threading.Lock()

    def delete_snapshot(self, url: str) -> bool:
        with self._lock:
            self.deleted += 1
        return True

    def list_snapshots(self, url: str) -> list:
        return []

    def count_snapshots(self, url: str) -> int:
        return 0


class NoStatusBlobs:
    def list_blobs(self):
        return []

    def delete_blob(self, name: str) -> bool:
        return False


def seed(table_service: TableServiceClient, prefix: str, vms: int, points: int) -> None:
    TablePolicyStore(table_service, f"{prefix}policies").get("DefaultPolicy")
    items = TableProtectedItemStore(table_service, f"{prefix}items")
    items.add_many([ProtectedItem(vm_name=f"vm{i:06d}", policy_name="DefaultPolicy", protected_since=FIRST,
                                  policy_assigned_at=FIRST, initial_backup_pending=False) for i in range(vms)])
    table_service.create_table_if_not_exists(f"{prefix}points")
    table = table_service.get_table_client(f"{prefix}points")

    def one_vm(i: int) -> None:
        vm = f"vm{i:06d}"
        ops = []
        for day in range(points):
            job_id = f"{vm}-job-{day}"
            base = f"http://127.0.0.1/devstoreaccount1/vhds/{vm}-os.vhd"
            point = RecoveryPoint(name=recovery_point_name(job_id), vm_name=vm,
                                  created_at=FIRST + timedelta(days=day), job_id=job_id, policy_name="DefaultPolicy",
                                  disks=(DiskSnapshot(-1, base, f"{base}?snapshot=2025-06-{day:02d}"),))
            ops.append(("create", point_entity(point)))
        for attempt in range(5):     # Azurite under load sometimes drops a kept-alive connection
            try:
                table.submit_transaction(ops)
                return
            except ServiceResponseError:
                time.sleep(0.5 * (attempt + 1))
            except ResourceExistsError:
                return
        table.submit_transaction(ops)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one_vm, range(vms)))


def run_once(azurite: Azurite, vms: int, points: int, n: int) -> tuple[float, float, int, int]:
    prefix = f"br{os.getpid() % 1000}r{n}"
    seeding = TableServiceClient.from_connection_string(azurite.connection_string)
    started = time.perf_counter()
    seed(seeding, prefix, vms, points)
    print(f"  run {n}: seeded {vms:,} VMs x {points} points in {time.perf_counter() - started:.0f} s", flush=True)
    transport = CountingTransport()
    tables = TableServiceClient.from_connection_string(azurite.connection_string, transport=transport)
    settings = Settings.from_env({"BackupStorage": azurite.connection_string,
                                  "ServiceBusConnection": "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=x;"
                                                          "SharedAccessKey=y;UseDevelopmentEmulator=true;",
                                  "TABLE_PREFIX": prefix})
    now = FIRST + timedelta(days=29 + EXPIRED_DAYS, hours=1)
    snapshots = CountingSnapshots()
    svc = Services(settings, clock=FixedClock(now), table_service=tables, snapshots=snapshots,
                   status_archive=NoStatusBlobs())
    started = time.perf_counter()
    result = run_retention(svc)
    seconds = time.perf_counter() - started
    deleted = len(result.points_deleted)
    assert result.plan.examined == vms * points, result.plan.examined
    assert deleted == vms * EXPIRED_DAYS and snapshots.deleted == deleted, (deleted, snapshots.deleted)
    return seconds, result.plan.examined / seconds, transport.requests, deleted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10000)
    parser.add_argument("--points", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rates, per_point, times = [], [], []
    with Azurite() as azurite:
        for n in range(1, args.runs + 1):
            seconds, rate, requests, deleted = run_once(azurite, args.vms, args.points, n)
            rates.append(rate)
            per_point.append(requests / deleted)
            times.append(seconds)
            print(f"  run {n}: {seconds:.1f} s, {rate:,.0f} points examined/s, {requests:,} table requests, "
                  f"{deleted:,} points deleted, {requests / deleted:.3f} requests per deleted point", flush=True)
    print(f"retention over {args.vms:,} VMs x {args.points} points ({args.runs} runs, min/median/max):")
    for label, values, fmt in (("seconds", times, "{:.1f}"), ("points examined/s", rates, "{:,.0f}"),
                               ("table requests per deleted point", per_point, "{:.3f}")):
        print(f"  {label:34} " + " / ".join(fmt.format(v) for v in (min(values), statistics.median(values),
                                                                      max(values))))


if __name__ == "__main__":
    main()
