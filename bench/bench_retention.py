"""Benchmark of the daily retention run over N protected VMs with D days of history, on Azurite, run
as the app runs it past PLANNER_FAN_OUT_ITEMS: the timer hands a request per part to the retention
queue and worker processes (the app's instances) settle the parts, continuing themselves.

History, seeded with Table batch transactions (bench/_seed.py) from the product's own entity mapping:
per VM and day one scheduled backup job (DefaultPolicy: daily at 22:30 UTC, 30 daily points), 1 in 12
failed after three attempts and 1 in 15 completed by its second, each leaving a snapshot of an attempt
that no point holds; the recovery point of every successful job; the protected items. Two runs are
measured: the first one (no run before it: it reads the 35-day lookback of jobs and finds D-30 days of
points expired) and, after one more day of backups, the next day's (it reads the jobs from where the
first settled). Snapshots are a stand-in in each worker (a listing answers a failed attempt's snapshot,
deletes are counted), as the status container is: the figures are the table side and the run's own.

Prints per run: seconds from the timer to the last part finished; worker CPU per VM (all invocations)
and Azurite's; Table requests per VM and read amplification (rows transferred / rows the run needs:
the items, every point, the jobs of its window), both counted at the HTTP level in the workers
(bench/_http.py); the longest single invocation. Checks that exactly the expected points and attempt
snapshots were deleted.

    .venv/bin/python bench/bench_retention.py --vms 1000 10000 --days 35 [--runs 3] [--workers 2]
"""
from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import os
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.data.tables import TableServiceClient  # noqa: E402

from bench._http import CountingTransport  # noqa: E402
from bench._seed import TableSeeder  # noqa: E402
from bench.bench_schedule import BrokerProcess  # noqa: E402
from devhost.azurite import Azurite  # noqa: E402
from devhost.processes import interrupt_on_sigterm  # noqa: E402
from devhost.servicebus import QueueOptions  # noqa: E402
from shared.adapters.servicebus import ServiceBusRetentionQueue  # noqa: E402
from shared.adapters.table_jobs import job_to_entity  # noqa: E402
from shared.adapters.table_protection import _item_entity  # noqa: E402
from shared.adapters.table_recovery import point_entity  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.clock import FixedClock  # noqa: E402
from shared.domain.jobs import (AttemptOutcome, AttemptRecord, Consistency, DiskResult, Job, JobPhase,  # noqa: E402
                                JobStatus)
from shared.domain.protection import ProtectedItem  # noqa: E402
from shared.domain.recovery import point_from_job  # noqa: E402
from shared.domain.retention_progress import PARTS, RetentionRequest  # noqa: E402
from shared.ports import BlobSnapshotInfo, StatusBlobPage  # noqa: E402
from shared.services.retention import JOB_LOOKBACK, JOB_MARGIN, retain_part, start_retention  # noqa: E402
from shared.settings import Settings  # noqa: E402

FIRST = datetime(2025, 5, 1, 22, 30, tzinfo=timezone.utc)     # DefaultPolicy: daily 22:30 UTC, 30 daily points
KEPT_DAYS = 30
RUN_AFTER_SLOT = timedelta(hours=4, minutes=30)               # RETENTION_SCHEDULE: 03:00 UTC
FAILED, SECOND_ATTEMPT = 1 / 12, 1 / 15
TABLES = ("jobs", "points", "items")


def vm_name(i: int) -> str:
    return f"vm{i:06d}"


def disks(vm: str) -> list[str]:
    return [f"http://127.0.0.1:1/devstoreaccount1/vhds/{vm}-{d}.vhd" for d in ("os", "data0")]


def slot_of(day: int) -> datetime:
    return FIRST + timedelta(days=day)


# --- the history ----------------------------------------------------------------------------------

class History:
    """What was seeded, to know what a run must do: per VM and day, how its backup ended."""

    CHUNK = 1000        # VMs whose days are built and written together: a VM's points share a partition

    def __init__(self, vms: int, seed: int):
        self.vms = vms
        self.rng = random.Random(seed)
        self.outcomes: list[bytearray] = []      # per day: per VM 0 = completed, 1 = second attempt, 2 = failed

    @property
    def days(self) -> int:
        return len(self.outcomes)

    def add_days(self, seeder: TableSeeder, prefix: str, days: int) -> None:
        """``days`` more days of backups of every VM: the jobs, and the points of the successful ones."""
        first = self.days
        for _ in range(days):
            self.outcomes.append(bytearray(self.rng.choices(
                (2, 1, 0), (FAILED, SECOND_ATTEMPT, 1 - FAILED - SECOND_ATTEMPT), k=self.vms)))
        for start in range(0, self.vms, self.CHUNK):
            jobs, points = [], []
            for i in range(start, min(start + self.CHUNK, self.vms)):
                for day in range(first, self.days):
                    job = backup_job(vm_name(i), slot_of(day), self.outcomes[day][i])
                    jobs.append(job_to_entity(job))
                    point = point_from_job(job)
                    if point is not None:
                        points.append(point_entity(point))
            seeder.insert(f"{prefix}jobs", jobs)
            seeder.insert(f"{prefix}points", points)
            seeder.wait()

    def points_between(self, after: datetime, until: datetime) -> int:
        """Successful backups whose 30 days end in (after, until]."""
        return sum(sum(1 for o in outcomes if o != 2) for day, outcomes in enumerate(self.outcomes)
                   if after < slot_of(day) + timedelta(days=KEPT_DAYS) <= until)

    def attempts_from(self, since: datetime) -> int:
        """Attempt snapshots (one per retried or failed job) of the jobs since ``since``."""
        return sum(sum(1 for o in outcomes if o) for day, outcomes in enumerate(self.outcomes) if slot_of(day) >= since)

    def jobs_from(self, since: datetime) -> int:
        return self.vms * sum(1 for day in range(self.days) if slot_of(day) >= since)

    def point_rows(self) -> int:
        return sum(sum(1 for o in outcomes if o != 2) for outcomes in self.outcomes)


def backup_job(vm: str, slot: datetime, outcome: int) -> Job:
    """A backup job as ingestion leaves it (shared/domain/jobs.py), by its outcome."""
    job = Job.new_backup(vm_name=vm, slot=slot, now=slot, policy_name="DefaultPolicy")
    job.phase, job.end_time, job.attempt = JobPhase.DONE, slot + timedelta(minutes=6), 1 + outcome
    job.task_id = f"{job.job_id}_{job.attempt}"
    job.status = JobStatus.FAILED if outcome == 2 else JobStatus.COMPLETED
    job.consistency = None if outcome == 2 else Consistency.FILE_SYSTEM
    job.attempts = [AttemptRecord(n, f"{job.job_id}_{n}", AttemptOutcome.FAILED, "ExtensionSnapshotFailedNoNetwork",
                                  76, retry_at=slot + timedelta(minutes=5 * n)) for n in range(1, job.attempt)]
    urls = disks(vm)
    snapshot = f"?snapshot={slot.strftime('%Y-%m-%dT%H:%M:%S')}.{outcome:07d}Z"
    job.disks = [DiskResult(lun, url, "Failed" if outcome == 2 else "Completed",
                            snapshot_uri=None if outcome == 2 else url + snapshot)
                 for lun, url in zip((-1, 0), urls)]
    return job


def attempt_snapshot(vm: str, day: int) -> BlobSnapshotInfo:
    """The snapshot an earlier (or the failed) attempt of the VM's job of ``day`` left on its OS disk."""
    url = disks(vm)[0]
    stamp = f"{slot_of(day).strftime('%Y-%m-%dT%H:%M:%S')}.9000000Z"
    job_id = Job.new_backup(vm_name=vm, slot=slot_of(day), now=slot_of(day)).job_id
    return BlobSnapshotInfo(f"{url}?snapshot={stamp}", stamp, {"jobId": job_id})


class StandInSnapshots:
    """Blob snapshots without blobs: a disk's listing answers the attempt snapshots of the VM's retried
    and failed jobs that are still there (seeded days from ``live_from`` on), every point's snapshot
    exists, every delete succeeds once; deletes are counted."""

    def __init__(self, history: History):
        self.history = history
        self.live_from = 0
        self.deleted: Counter[str] = Counter()

    def list_snapshots(self, blob_url: str) -> list[BlobSnapshotInfo]:
        vm, _, disk = blob_url.rsplit("/", 1)[1].rpartition("-")
        if disk != "os.vhd":
            return []
        i = int(vm[2:])
        return [attempt_snapshot(vm, day) for day in range(self.live_from, self.history.days)
                if self.history.outcomes[day][i]]

    def count_snapshots(self, blob_url: str) -> int:
        return 0

    def snapshot_exists(self, snapshot_url: str) -> bool:
        return True

    def delete_snapshot(self, snapshot_url: str) -> bool:
        self.deleted[snapshot_url.rsplit(".", 1)[-1][:1]] += 1      # "9": an attempt's, else a point's
        return True


class NoStatusBlobs:
    def list_pages(self, marker: str | None = None) -> Iterator[StatusBlobPage]:
        yield StatusBlobPage([], None)

    def delete_blob(self, name: str) -> bool:
        return False


# --- the app's instances --------------------------------------------------------------------------

def _worker(conn, settings: Settings, history: History) -> None:
    """One app instance: takes retention requests from the queue one at a time and reports each
    invocation's seconds, CPU, requests, rows and deletions (forked: the history is the parent's)."""
    from azure.servicebus import AutoLockRenewer, ServiceBusClient

    transport = CountingTransport()
    assert settings.storage.connection_string is not None and settings.service_bus is not None
    assert settings.service_bus.connection_string is not None, "the bench runs on Azurite and the local Service Bus"
    tables = TableServiceClient.from_connection_string(settings.storage.connection_string, transport=transport)
    clock = FixedClock(FIRST)
    snapshots = StandInSnapshots(history)
    svc = Services(settings, clock=clock, table_service=tables, snapshots=snapshots, status_archive=NoStatusBlobs())
    client = ServiceBusClient.from_connection_string(settings.service_bus.connection_string)
    renewer = AutoLockRenewer(max_lock_renewal_duration=900)
    with client.get_queue_receiver(settings.retention_queue) as receiver:
        conn.send("ready")
        while True:
            if conn.poll():
                command = conn.recv()
                if command[0] == "stop":
                    break
                _, history.outcomes, clock.current, snapshots.live_from = command
                conn.send("ok")
            for message in receiver.receive_messages(max_message_count=1, max_wait_time=0.2):
                renewer.register(receiver, message)
                request = RetentionRequest.from_json(str(message))
                requests, rows, deleted = transport.requests, Counter(transport.rows), Counter(snapshots.deleted)
                cpu, started = time.process_time(), time.perf_counter()
                outcome = retain_part(svc, request)
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
                receiver.complete_message(message)
                conn.send({"part": request.part, "state": outcome.state, "seconds": seconds, "cpu": cpu,
                           "requests": transport.requests - requests, "rows": transport.rows - rows,
                           "points_deleted": len(outcome.result.points_deleted),
                           "snapshots": snapshots.deleted - deleted})
    renewer.close()
    client.close()


class Workers:
    def __init__(self, settings: Settings, history: History, count: int):
        self.conns, self.procs = [], []
        for _ in range(count):
            parent, child = multiprocessing.Pipe()
            proc = multiprocessing.Process(target=_worker, args=(child, settings, history), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for conn in self.conns:
            assert conn.recv() == "ready"

    def day(self, history: History, now: datetime, live_from: int) -> None:
        for conn in self.conns:
            conn.send(("day", history.outcomes, now, live_from))
        for conn in self.conns:
            assert conn.recv() == "ok"

    def until_finished(self) -> list[dict]:
        reports: list[dict] = []
        finished: set[str] = set()
        while finished != set(PARTS):
            for conn in multiprocessing.connection.wait(self.conns):
                assert isinstance(conn, multiprocessing.connection.Connection)
                report = conn.recv()
                reports.append(report)
                if report["state"] == "finished":
                    finished.add(report["part"])
        return reports

    def close(self) -> None:
        for conn in self.conns:
            conn.send(("stop",))
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()


# --- a run ----------------------------------------------------------------------------------------

@dataclass
class Figures:
    name: str
    vms: int
    seconds: float
    cpu_ms_per_vm: float
    azurite_ms_per_vm: float
    requests_per_vm: float
    amplification: float            # rows transferred / rows needed, jobs + points + items
    rows: dict = field(default_factory=dict)
    longest: float = 0.0
    invocations: int = 0


def measure(name: str, svc: Services, workers: Workers, azurite: Azurite, history: History, now: datetime,
            since: datetime, expired_after: datetime, live_from: int) -> Figures:
    workers.day(history, now, live_from)
    assert isinstance(svc.clock, FixedClock)
    svc.clock.current = now
    served = azurite.cpu_seconds() or 0.0
    started = time.perf_counter()
    start = start_retention(svc, fan_out=True)
    reports = workers.until_finished()
    seconds = time.perf_counter() - started
    served = (azurite.cpu_seconds() or 0.0) - served
    assert len(start.sent) == len(PARTS)
    rows: Counter[str] = Counter()
    for report in reports:
        rows.update({table.removeprefix(svc.settings.table_prefix): n for table, n in report["rows"].items()})
    deleted = sum(r["points_deleted"] for r in reports)
    snapshots: Counter[str] = sum((r["snapshots"] for r in reports), Counter())
    expected = history.points_between(expired_after, now)
    attempts = history.attempts_from(max(since, slot_of(live_from)))      # those before were deleted already
    assert deleted == expected and snapshots["9"] == attempts, (deleted, expected, snapshots, attempts)
    needed = {"jobs": history.jobs_from(since), "points": history.point_rows(), "items": history.vms}
    vms = history.vms
    return Figures(name, vms, seconds, sum(r["cpu"] for r in reports) * 1000 / vms, served * 1000 / vms,
                   sum(r["requests"] for r in reports) / vms,
                   sum(rows[t] for t in TABLES) / sum(needed.values()),
                   {t: f"{rows[t]:,}/{needed[t]:,}" for t in TABLES} | {
                       t: rows[t] for t in rows if t not in TABLES},
                   max(r["seconds"] for r in reports), len(reports))


def run_once(azurite: Azurite, bus: BrokerProcess, vms: int, days: int, workers: int, n: int) -> list[Figures]:
    prefix = f"br{os.getpid() % 1000}v{vms}r{n}"
    settings = Settings.from_env({"BackupStorage": azurite.connection_string,
                                  "ServiceBusConnection": bus.connection_string, "TABLE_PREFIX": prefix,
                                  "RETENTION_QUEUE": f"ret-{prefix}"})
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    history = History(vms, seed=n)
    seeder = TableSeeder(service)
    started = time.perf_counter()
    svc = Services(settings, clock=FixedClock(FIRST), table_service=service)
    svc.policies.get("DefaultPolicy")
    seeder.insert(f"{prefix}items", [_item_entity(ProtectedItem(
        vm_name=vm_name(i), policy_name="DefaultPolicy", protected_since=FIRST, policy_assigned_at=FIRST,
        initial_backup_pending=False)) for i in range(vms)])
    history.add_days(seeder, prefix, days)
    seeded = seeder.wait()
    print(f"  run {n}: seeded {vms:,} VMs x {days} days ({seeded:,} rows) in {time.perf_counter() - started:.0f} s",
          flush=True)
    assert isinstance(svc.retention_queue, ServiceBusRetentionQueue)
    svc.retention_queue.open()
    pool = Workers(settings, history, workers)
    try:
        now = slot_of(days - 1) + RUN_AFTER_SLOT
        first = measure("first run", svc, pool, azurite, history, now, now - JOB_LOOKBACK, FIRST - timedelta(days=1), 0)
        history.add_days(seeder, prefix, 1)
        seeder.close()
        later = now + timedelta(days=1)
        since = max(later - JOB_LOOKBACK, now - settings.catch_up - JOB_MARGIN)
        live_from = next(day for day in range(history.days) if slot_of(day) > now)
        next_day = measure("next day", svc, pool, azurite, history, later, since, now, live_from)
    finally:
        pool.close()
        svc.retention_queue.close()
    for table in ("jobs", "points", "items", "policies", "progress"):
        service.delete_table(f"{prefix}{table}")        # Azurite keeps tables in memory
    return [first, next_day]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="app instances (processes) settling the parts")
    args = parser.parse_args(argv)
    if args.days <= KEPT_DAYS:
        parser.error(f"--days must be more than DefaultPolicy's {KEPT_DAYS} daily points, so points expire")
    figures: list[Figures] = []
    options = QueueOptions(duplicate_detection_window=timedelta(minutes=10))
    with Azurite() as azurite, BrokerProcess(options) as bus:
        for vms in args.vms:
            for n in range(1, args.runs + 1):
                for f in run_once(azurite, bus, vms, args.days, args.workers, n):
                    figures.append(f)
                    print(f"  run {n}, {vms:,} VMs, {f.name}: {f.seconds:.1f} s, CPU {f.cpu_ms_per_vm:.2f} ms/VM "
                          f"(Azurite {f.azurite_ms_per_vm:.2f}), {f.requests_per_vm:.3f} Table requests/VM, "
                          f"amplification {f.amplification:.3f} (rows transferred/needed {f.rows}), longest "
                          f"invocation {f.longest:.1f} s of {f.invocations}", flush=True)
    print(f"retention, {args.days} days of history, {args.workers} worker processes, {args.runs} runs "
          f"(min / median / max):")
    for vms in args.vms:
        for name in ("first run", "next day"):
            mine = [f for f in figures if f.vms == vms and f.name == name]
            print(f"  {vms:,} VMs, {name}:")
            for label, values, fmt in (
                    ("seconds", [f.seconds for f in mine], "{:.1f}"),
                    ("worker CPU ms per VM", [f.cpu_ms_per_vm for f in mine], "{:.2f}"),
                    ("Azurite CPU ms per VM", [f.azurite_ms_per_vm for f in mine], "{:.2f}"),
                    ("Table requests per VM", [f.requests_per_vm for f in mine], "{:.3f}"),
                    ("read amplification", [f.amplification for f in mine], "{:.3f}"),
                    ("longest invocation, s", [f.longest for f in mine], "{:.1f}")):
                print(f"    {label:24} " + " / ".join(fmt.format(v) for v in (
                    min(values), statistics.median(values), max(values))))
    return 0


if __name__ == "__main__":
    interrupt_on_sigterm()
    sys.exit(main())
