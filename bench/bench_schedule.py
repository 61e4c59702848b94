"""Benchmark of one scheduling tick: N protected VMs with a slot due, on the local stack.

Starts its own Azurite and local Service Bus (each in a child process, so neither their CPU nor
the messages the broker stores count against the tick), seeds N protected items, runs one tick
(``run_scheduling_tick``, real TableJobStore and ServiceBusTaskQueue) and, in the same process, a
naive baseline that reads every item and writes one job, sends one message and writes one item per
VM. Prints VMs scheduled per second, peak Python memory (tracemalloc), and Table requests and
Service Bus operations per job, and checks that each VM got exactly one job and one message.

    .venv/bin/python bench/bench_schedule.py [--vms 1000 10000] [--no-tracemalloc]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import tracemalloc
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.data.tables import TableServiceClient, UpdateMode  # noqa: E402
from azure.servicebus import ServiceBusClient, ServiceBusMessage  # noqa: E402

from bench._http import CountingTransport  # noqa: E402
from devhost.azurite import Azurite  # noqa: E402
from devhost.servicebus import LocalServiceBus, QueueOptions  # noqa: E402
from shared.adapters.servicebus import ServiceBusTaskQueue  # noqa: E402
from shared.adapters.table_jobs import TableJobStore  # noqa: E402
from shared.adapters.table_protection import (TablePolicyStore, TableProtectedItemStore,  # noqa: E402
                                              _item_entity, _item_from)
from shared.bootstrap import Services  # noqa: E402
from shared.clock import FixedClock  # noqa: E402
from shared.domain.jobs import Job  # noqa: E402
from shared.domain.protection import ProtectedItem  # noqa: E402
from shared.domain.task import Trigger  # noqa: E402
from shared.services.scheduling import run_scheduling_tick, task_for  # noqa: E402
from shared.settings import Settings  # noqa: E402

SLOT = datetime(2025, 6, 2, 22, 30, tzinfo=timezone.utc)       # DefaultPolicy: daily 22:30 UTC
NOW = SLOT + timedelta(seconds=5)


class BrokerProcess:
    """LocalServiceBus in a child process; stats and queue depth over a pipe."""

    def __init__(self, options: QueueOptions):
        self._options = options
        self._conn, child = multiprocessing.Pipe()
        self._proc = multiprocessing.Process(target=_serve_broker, args=(child, options), daemon=True)

    def __enter__(self) -> "BrokerProcess":
        self._proc.start()
        self.connection_string = self._conn.recv()
        return self

    def __exit__(self, *exc) -> None:
        self._conn.send(("stop", None))
        self._proc.join(timeout=15)
        if self._proc.is_alive():
            self._proc.terminate()

    def _ask(self, command: str, arg=None):
        self._conn.send((command, arg))
        return self._conn.recv()

    def stats(self) -> dict:
        return self._ask("stats")

    def queue_depth(self, queue: str) -> int:
        return self._ask("depth", queue)


def _serve_broker(conn, options: QueueOptions) -> None:
    with LocalServiceBus(default_queue_options=options) as bus:
        conn.send(bus.connection_string)
        while True:
            command, arg = conn.recv()
            if command == "stop":
                return
            conn.send(bus.stats() if command == "stats" else bus.queue_depth(arg))


@dataclass
class Run:
    name: str
    vms: int
    seconds: float
    peak_mib: float | None
    table_requests: int
    sb_operations: int
    jobs: int
    messages: int

    def row(self) -> list[str]:
        per = max(self.jobs, 1)
        return [self.name, f"{self.vms:,}", f"{self.vms / self.seconds:,.0f}", f"{self.seconds:.1f}",
                f"{self.peak_mib:.1f}" if self.peak_mib is not None else "-",
                f"{self.table_requests / per:.3f}", f"{self.sb_operations / per:.3f}",
                f"{self.jobs:,}", f"{self.messages:,}"]


def seed(table_service, prefix: str, n: int) -> None:
    items = TableProtectedItemStore(table_service, f"{prefix}items")
    TablePolicyStore(table_service, f"{prefix}policies").get("DefaultPolicy")
    since = SLOT - timedelta(days=1)
    batch: list[ProtectedItem] = []
    for i in range(n):
        batch.append(ProtectedItem(vm_name=f"vm{i:06d}", policy_name="DefaultPolicy", protected_since=since,
                                   policy_assigned_at=since, disk_luns=(-1, 0), initial_backup_pending=False))
        if len(batch) == 5000:
            items.add_many(batch)
            batch = []
    if batch:
        items.add_many(batch)


def settings_for(azurite: Azurite, bus: BrokerProcess, prefix: str) -> Settings:
    return Settings.from_env({"BackupStorage": azurite.connection_string,
                              "ServiceBusConnection": bus.connection_string,
                              "TABLE_PREFIX": prefix, "SNAPSHOT_TASKS_QUEUE": f"tasks-{prefix}"})


def measure(fn, trace: bool):
    if trace:
        tracemalloc.start()
        tracemalloc.reset_peak()
    started = time.perf_counter()
    try:
        fn()
    finally:
        elapsed = time.perf_counter() - started
        peak = None
        if trace:
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    return elapsed, peak


def run_tick(azurite, bus, n: int, trace: bool) -> Run:
    prefix = f"bt{os.getpid() % 1000}n{n}"
    transport = CountingTransport()
    tables = TableServiceClient.from_connection_string(azurite.connection_string, transport=transport)
    seed(tables, prefix, n)
    settings = settings_for(azurite, bus, prefix)
    client = ServiceBusClient.from_connection_string(bus.connection_string)
    clock = FixedClock(NOW)
    svc = Services(settings, clock=clock, table_service=tables,
                   jobs=TableJobStore(tables, settings.table("jobs")),
                   task_queue=ServiceBusTaskQueue(client, settings.tasks_queue, clock=clock))
    svc.protected_items, svc.policies    # tables opened before measuring
    before_requests, before_sb = transport.requests, bus.stats()
    result = None

    def tick():
        nonlocal result
        result = run_scheduling_tick(svc)

    seconds, peak = measure(tick, trace)
    sb = _sb_delta(before_sb, bus.stats())
    client.close()
    depth = bus.queue_depth(settings.tasks_queue)
    assert result.jobs_created == n and result.tasks_sent == n, result
    assert depth == n, f"queue holds {depth} messages for {n} VMs"
    return Run("batched tick", n, seconds, peak, transport.requests - before_requests, sb, result.jobs_created,
               depth)


def run_naive(azurite, bus, n: int, trace: bool) -> Run:
    """The baseline: per VM one job insert, one message send, one item write (one sender for the run)."""
    prefix = f"bn{os.getpid() % 1000}n{n}"
    transport = CountingTransport()
    tables = TableServiceClient.from_connection_string(azurite.connection_string, transport=transport)
    seed(tables, prefix, n)
    settings = settings_for(azurite, bus, prefix)
    items = tables.get_table_client(settings.table("items"))
    jobs = TableJobStore(tables, settings.table("jobs"), workers=1)
    jobs.get("00000000-0000-0000-0000-000000000000")  # table created before measuring
    client = ServiceBusClient.from_connection_string(bus.connection_string)
    before_requests, before_sb = transport.requests, bus.stats()
    created = 0

    def naive():
        nonlocal created
        with client.get_queue_sender(settings.tasks_queue) as sender:
            for entity in items.list_entities():
                item = _item_from(entity)
                job = Job.new_backup(vm_name=item.vm_name, slot=SLOT, now=NOW, trigger=Trigger.SCHEDULED.value,
                                     policy_name=item.policy_name)
                if jobs.create_if_absent(job):
                    created += 1
                task = task_for(job, NOW)
                sender.send_messages(ServiceBusMessage(task.to_json(), message_id=task.message_id))
                item.last_slot, item.in_progress_job_id, item.last_job_id = SLOT, job.job_id, job.job_id
                items.upsert_entity(_item_entity(item), mode=UpdateMode.REPLACE)

    seconds, peak = measure(naive, trace)
    sb = _sb_delta(before_sb, bus.stats())
    client.close()
    depth = bus.queue_depth(settings.tasks_queue)
    assert created == n and depth == n, (created, depth)
    return Run("naive baseline", n, seconds, peak, transport.requests - before_requests, sb, created, depth)


def _sb_delta(before: dict, after: dict) -> int:
    """Client operations the broker saw: transfers in (a batch is one) plus management requests (schedule)."""
    return sum(after.get(k, 0) - before.get(k, 0) for k in ("transfers_in", "management_requests"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--no-tracemalloc", action="store_true", help="time without tracemalloc's overhead")
    parser.add_argument("--no-baseline", action="store_true", help="run only the batched tick")
    args = parser.parse_args(argv)
    trace = not args.no_tracemalloc
    runs: list[Run] = []
    options = QueueOptions(duplicate_detection_window=timedelta(minutes=10))
    with Azurite() as azurite, BrokerProcess(options) as bus:
        for n in args.vms:
            print(f"... {n:,} VMs: batched tick", file=sys.stderr, flush=True)
            runs.append(run_tick(azurite, bus, n, trace))
            if not args.no_baseline:
                print(f"... {n:,} VMs: naive baseline", file=sys.stderr, flush=True)
                runs.append(run_naive(azurite, bus, n, trace))
    from tabulate import tabulate

    headers = ["Run", "VMs", "VMs/s", "Seconds", "Peak MiB", "Table req/job", "SB ops/job", "Jobs", "Messages"]
    print(tabulate([r.row() for r in runs], headers=headers, tablefmt="simple", disable_numparse=True))
    for n in [] if args.no_baseline else args.vms:
        tick = next(r for r in runs if r.vms == n and r.name == "batched tick")
        naive = next(r for r in runs if r.vms == n and r.name == "naive baseline")
        print(f"{n:,} VMs: {naive.seconds / tick.seconds:.1f}x faster, "
              f"{naive.table_requests / max(tick.table_requests, 1):.1f}x fewer Table requests, "
              f"{naive.sb_operations / max(tick.sb_operations, 1):.1f}x fewer Service Bus operations than the baseline"
              + (f"; peak memory {tick.peak_mib:.1f} MiB vs {naive.peak_mib:.1f} MiB" if trace else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
