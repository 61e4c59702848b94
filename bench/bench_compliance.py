"""Benchmark of `vmsnap report compliance` over N protected items x D days of daily backups, on Azurite.

Starts its own Azurite, seeds the items, one backup job per item and day (1 in 20 failed, the rest
Completed) and the recovery point of each success straight into their tables, folds the jobs into the
report's roll-up once (`vmsnap report rebuild`, what a deployment with history does once; timed apart), then
builds the report with the real Table stores three times. Prints seconds (min/median/max), the CPU it took
here and in Azurite, and Table requests per report, and checks the report's figures against what was seeded.
The goal: 1,000 items x 90 days in at most 5 s. ``--without-rollup`` measures the report reading every job.

    .venv/bin/python bench/bench_compliance.py [--items 1000] [--days 90] [--runs 3] [--without-rollup]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.core.exceptions import ServiceResponseError  # noqa: E402
from azure.data.tables import TableServiceClient  # noqa: E402

from bench._http import CountingTransport  # noqa: E402
from devhost.azurite import Azurite  # noqa: E402
from devhost.processes import interrupt_on_sigterm  # noqa: E402
from shared.adapters.table_jobs import job_to_entity  # noqa: E402
from shared.adapters.table_protection import TablePolicyStore, TableProtectedItemStore  # noqa: E402
from shared.adapters.table_recovery import point_entity  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.clock import FixedClock  # noqa: E402
from shared.domain.jobs import DiskResult, Job, JobError, JobPhase, JobStatus  # noqa: E402
from shared.domain.protection import ProtectedItem  # noqa: E402
from shared.domain.recovery import point_from_job  # noqa: E402
from shared.services.compliance import compliance_report  # noqa: E402
from shared.services.rollup import rebuild_rollup  # noqa: E402
from shared.settings import Settings  # noqa: E402

FIRST = datetime(2025, 3, 1, 22, 30, tzinfo=timezone.utc)      # DefaultPolicy: daily 22:30 UTC
PREFIX = "bcomp"


def history(items: int, days: int) -> tuple[list[ProtectedItem], list[Job]]:
    since = FIRST - timedelta(hours=1)
    vms = [ProtectedItem(vm_name=f"vm{i:05d}", policy_name="DefaultPolicy", protected_since=since,
                         policy_assigned_at=since, initial_backup_pending=False) for i in range(items)]
    jobs = []
    for day in range(days):
        slot = FIRST + timedelta(days=day)
        for n, item in enumerate(vms):
            job = Job.new_backup(vm_name=item.vm_name, slot=slot, now=slot, policy_name="DefaultPolicy")
            base = f"http://127.0.0.1:10000/devstoreaccount1/vhds/{item.vm_name}"
            job.phase, job.end_time = JobPhase.DONE, slot + timedelta(minutes=4)
            if (n + day) % 20 == 0:
                job.status = JobStatus.FAILED
                job.errors = [JobError(error_code="ExtensionSnapshotFailedNoNetwork", error_string="no network",
                                       error_title="Snapshot failed", recommendations=["Allow outbound HTTPS"])]
            else:
                job.status, job.backup_size_bytes = JobStatus.COMPLETED, 5 * 2**30
                job.disks = [DiskResult(lun=-1, blob_url=f"{base}-os.vhd", status="Completed",
                                        snapshot_uri=f"{base}-os.vhd?snapshot={slot:%Y-%m-%dT%H:%M:%S}.0000000Z"),
                             DiskResult(lun=0, blob_url=f"{base}-d0.vhd", status="Completed",
                                        snapshot_uri=f"{base}-d0.vhd?snapshot={slot:%Y-%m-%dT%H:%M:%S}.0000000Z")]
            jobs.append(job)
    return vms, jobs


def seed(tables: TableServiceClient, vms: list[ProtectedItem], jobs: list[Job]) -> None:
    TablePolicyStore(tables, f"{PREFIX}policies").get("DefaultPolicy")
    TableProtectedItemStore(tables, f"{PREFIX}items").add_many(vms)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for job in jobs:
        entity = job_to_entity(job)
        groups[("jobs", entity["PartitionKey"])].append(entity)
        point = point_from_job(job)
        if point is not None:
            entity = point_entity(point)
            groups[("points", entity["PartitionKey"])].append(entity)
    for name in ("jobs", "points"):
        tables.create_table_if_not_exists(f"{PREFIX}{name}")
    chunks = [(name, rows[i:i + 100]) for (name, _), rows in groups.items() for i in range(0, len(rows), 100)]

    def submit(chunk) -> None:
        name, rows = chunk
        for attempt in range(5):     # Azurite under load sometimes drops a kept-alive connection
            try:
                tables.get_table_client(f"{PREFIX}{name}").submit_transaction([("upsert", r) for r in rows])
                return
            except ServiceResponseError:
                time.sleep(0.5 * (attempt + 1))
        raise RuntimeError("could not seed")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(submit, chunks))


def arguments(description: str) -> argparse.Namespace:
    """The options bench_compliance.py and bench_dashboard.py share."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--without-rollup", action="store_true", help="no rebuild: the report reads every job")
    return parser.parse_args()


def seeded(azurite: Azurite, items: int, days: int) -> tuple[Settings, datetime, list[Job]]:
    """Seed ``items`` x ``days`` of history on ``azurite`` and say so; the settings reading it, the time
    the last slot's job is done, and the jobs seeded."""
    vms, jobs = history(items, days)
    failed = sum(j.status is JobStatus.FAILED for j in jobs)
    started = time.perf_counter()
    seed(TableServiceClient.from_connection_string(azurite.connection_string), vms, jobs)
    print(f"seeded {items:,} items x {days} days: {len(jobs):,} jobs ({failed:,} failed), "
          f"{len(jobs) - failed:,} points in {time.perf_counter() - started:.0f} s", flush=True)
    settings = Settings.from_env({"BackupStorage": azurite.connection_string,
                                  "ServiceBusConnection": "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=x;"
                                                          "SharedAccessKey=y;UseDevelopmentEmulator=true;",
                                  "TABLE_PREFIX": PREFIX})
    return settings, FIRST + timedelta(days=days - 1, hours=12), jobs


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    times, requests, cpus = [], [], []
    with Azurite() as azurite:
        settings, now, jobs = seeded(azurite, args.items, args.days)
        failed = sum(j.status is JobStatus.FAILED for j in jobs)
        if not args.without_rollup:
            transport = CountingTransport()
            tables = TableServiceClient.from_connection_string(azurite.connection_string, transport=transport)
            started = time.perf_counter()
            done = rebuild_rollup(Services(settings, clock=FixedClock(now), table_service=tables), days=args.days)
            print(f"rebuilt the roll-up once: {done.jobs_read:,} jobs read, {done.rows_changed:,} rows written in "
                  f"{time.perf_counter() - started:.1f} s, {transport.requests:,} table requests", flush=True)
        for n in range(1, args.runs + 1):
            transport = CountingTransport()
            tables = TableServiceClient.from_connection_string(azurite.connection_string, transport=transport)
            svc = Services(settings, clock=FixedClock(now), table_service=tables)
            started, cpu, served = time.perf_counter(), time.process_time(), azurite.cpu_seconds() or 0.0
            report = compliance_report(svc, days=args.days)
            seconds = time.perf_counter() - started
            cpu, served = time.process_time() - cpu, (azurite.cpu_seconds() or 0.0) - served
            met = sum(len(i.slots.met) for i in report.items)
            missed = sum(len(i.slots.missed) for i in report.items)
            assert len(report.items) == args.items and met + missed == len(jobs), (met, missed, len(jobs))
            assert missed == failed, (missed, failed)
            times.append(seconds)
            requests.append(transport.requests)
            cpus.append(cpu + served)
            print(f"  run {n}: {seconds:.2f} s (CPU: {cpu:.2f} s here, {served:.2f} s Azurite), "
                  f"{transport.requests:,} table requests, {met:,} slots met, {missed:,} missed", flush=True)
    print(f"compliance report over {args.items:,} items x {args.days} days ({args.runs} runs, min/median/max): "
          f"{min(times):.2f} / {statistics.median(times):.2f} / {max(times):.2f} s; CPU (here + Azurite) "
          f"{min(cpus):.2f} / {statistics.median(cpus):.2f} / {max(cpus):.2f} s; "
          f"{statistics.median(requests):,.0f} table requests")


if __name__ == "__main__":
    interrupt_on_sigterm()
    main()
