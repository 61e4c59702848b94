"""Benchmark of one scheduling tick: N protected VMs with a slot due, on the local stack.

Starts its own Azurite and local Service Bus (each in a child process, so neither their CPU nor
the messages the broker stores count against the tick) and seeds N protected items. A first tick,
with nothing due yet, counts the fleet (as the previous tick would have). Then the measured tick:
planned by one app instance (a process running ``run_scheduling_tick``), or fanned out by the timer
to K planner instances (processes receiving shard requests from the planner queue, as the app's
instances do with ``plan_shard``). Two baselines run in this process, one VM at a time: the naive one
(per VM one job insert, one message, one item write) and the fair one (the writes the design makes:
one job insert and one message per VM). Prints VMs per second, the
ratio to each baseline, Table requests and Service Bus operations per job (counted on the wire:
HTTP requests; broker transfers and management calls), and the instances' peak RSS; checks that
each VM got exactly one job and one message.

A planner keeps the lock of the shard request it plans, as the Functions host does up to host.json's
``maxAutoLockRenewalDuration``: a shard that takes longer than the queue's lock (``--lock-seconds``)
is not handed to a second planner meanwhile. ``--slow-shard S`` makes shard 0 take S seconds more
(as on a loaded machine, or a shard of a 100k fleet) to show it.

    .venv/bin/python bench/bench_schedule.py [--vms 1000 10000] [--instances 0 2 3] [--no-baseline]
                                             [--lock-seconds 60] [--slow-shard SECONDS]
"""
from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from itertools import islice
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.core.exceptions import ResourceExistsError  # noqa: E402
from azure.data.tables import TableServiceClient, UpdateMode  # noqa: E402
from azure.servicebus import ServiceBusClient, ServiceBusMessage  # noqa: E402

from bench._http import CountingTransport  # noqa: E402
from devhost.azurite import Azurite  # noqa: E402
from devhost.host import HostConfig  # noqa: E402
from devhost.locks import LockKeeper  # noqa: E402
from devhost.processes import interrupt_on_sigterm  # noqa: E402
from devhost.servicebus import LocalServiceBus, QueueOptions  # noqa: E402
from shared.adapters.servicebus import ServiceBusShardQueue, ServiceBusTaskQueue  # noqa: E402
from shared.adapters.table_jobs import job_to_entity  # noqa: E402
from shared.adapters.table_protection import (TablePolicyStore, TableProtectedItemStore,  # noqa: E402
                                              _item_entity, _item_from)
from shared.bootstrap import Services  # noqa: E402
from shared.clock import FixedClock  # noqa: E402
from shared.domain.jobs import Job  # noqa: E402
from shared.domain.planning import task_for  # noqa: E402
from shared.domain.protection import ProtectedItem  # noqa: E402
from shared.domain.task import Trigger  # noqa: E402
from shared.services.scheduling import run_scheduling_tick  # noqa: E402
from shared.settings import Settings  # noqa: E402

SLOT = datetime(2025, 6, 2, 22, 30, tzinfo=timezone.utc)       # DefaultPolicy: daily 22:30 UTC
NOW = SLOT + timedelta(seconds=5)
SLOW_SHARD = "0"
# How long the Functions host renews a message's lock (host.json), as the planners here do.
LOCK_RENEWAL = HostConfig.from_host_json(Path(__file__).resolve().parent.parent / "host.json").max_lock_renewal


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


def seed(table_service: TableServiceClient, prefix: str, n: int) -> None:
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
                              "TABLE_PREFIX": prefix, "SNAPSHOT_TASKS_QUEUE": f"tasks-{prefix}",
                              "PLANNER_QUEUE": f"plan-{prefix}"})


def measure(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class Instances:
    """``count`` app instances, each a process with its own clients (as each Functions instance has):
    one that runs the tick itself, or several that receive shard requests from the planner queue and
    plan them (functions/scheduler.py ``plan_shard``). Each reports its results and its peak RSS."""

    def __init__(self, settings: Settings, count: int, role: str, slow_shard: float = 0.0):
        self._conns, self._procs = [], []
        for _ in range(count):
            parent, child = multiprocessing.Pipe()
            proc = multiprocessing.Process(target=_instance, args=(child, settings, role, slow_shard), daemon=True)
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)
        for conn in self._conns:
            assert conn.recv() == "ready"

    def tick(self) -> dict:
        self._conns[0].send("tick")
        return self._conns[0].recv()

    def results(self, shards: int) -> list[dict]:
        done: list[dict] = []
        while len(done) < shards:
            for conn in multiprocessing.connection.wait(self._conns):
                assert isinstance(conn, multiprocessing.connection.Connection)
                done.append(conn.recv())
        return done

    def close(self) -> None:
        for conn in self._conns:
            conn.send("stop")
        for proc in self._procs:
            proc.join(timeout=20)
            if proc.is_alive():
                proc.terminate()


def _instance(conn, settings: Settings, role: str, slow_shard: float) -> None:
    import resource

    from shared.domain.progress import PlanRequest
    from shared.services.scheduling import plan_shard

    svc = Services(settings, clock=FixedClock(NOW))
    svc.protected_items, svc.policies, svc.jobs, svc.progress
    assert isinstance(svc.task_queue, ServiceBusTaskQueue)
    svc.task_queue.open()       # a warm instance has its sender open, as after its first invocation

    def report(result) -> dict:
        return dict(asdict(result), peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    if role == "tick":
        conn.send("ready")
        while conn.recv() == "tick":
            conn.send(report(run_scheduling_tick(svc, fan_out=False)))
        return

    def plan(request: PlanRequest):
        if request.shard == SLOW_SHARD and slow_shard:
            time.sleep(slow_shard)      # stands in for a shard that outlasts its lock
        return plan_shard(svc, request.shard, request.tick)

    connection_string = settings.service_bus_connection().connection_string
    assert connection_string is not None, "the bench runs on the local Service Bus, by connection string"
    client = ServiceBusClient.from_connection_string(connection_string)
    with client.get_queue_receiver(settings.planner_queue) as receiver, ThreadPoolExecutor(1) as planner:
        locks = LockKeeper(receiver, LOCK_RENEWAL)
        conn.send("ready")
        while not conn.poll():
            for message in receiver.receive_messages(max_message_count=1, max_wait_time=0.2):
                locks.hold(message)
                # The shard is planned on another thread; this one owns the receiver and keeps the lock.
                planning = planner.submit(plan, PlanRequest.from_json(str(message)))
                while not planning.done():
                    wait([planning], timeout=locks.next_due(1.0))
                    locks.renew_due()
                locks.release(message)
                receiver.complete_message(message)
                conn.send(report(planning.result()))
    client.close()


def run_tick(azurite: Azurite, bus: BrokerProcess, n: int, instances: int, slow_shard: float = 0.0) -> Run:
    """One tick over ``n`` VMs: by one instance (``instances`` 0), or fanned out by the timer to that
    many planner instances. Seconds run from the timer's start to the last shard planned."""
    prefix = f"bt{os.getpid() % 1000}i{instances}n{n}"
    tables = TableServiceClient.from_connection_string(azurite.connection_string)
    seed(tables, prefix, n)
    settings = settings_for(azurite, bus, prefix)
    client = ServiceBusClient.from_connection_string(bus.connection_string)
    clock = FixedClock(NOW - timedelta(minutes=10))
    svc = Services(settings, clock=clock, task_queue=ServiceBusTaskQueue(client, settings.tasks_queue, clock=clock))
    # The previous tick (nothing due yet) counted the fleet: that count decides whether this one fans out.
    warm = run_scheduling_tick(svc, fan_out=False)
    assert warm.jobs_created == 0 and warm.items_seen == n, warm
    clock.current = NOW
    fleet = Instances(settings, max(instances, 1), "plan" if instances else "tick", slow_shard)
    if instances:
        assert isinstance(svc.shard_queue, ServiceBusShardQueue)
        svc.shard_queue.open()
    before_sb = bus.stats()
    results: list[dict] = []
    try:
        started = time.perf_counter()
        if instances:
            timer = run_scheduling_tick(svc, fan_out=True)
            results = [asdict(timer)] + fleet.results(timer.fanned_out)
        else:
            results = [fleet.tick()]
        seconds = time.perf_counter() - started
    finally:
        fleet.close()
    sb = _sb_delta(before_sb, bus.stats())
    client.close()
    created = sum(r["jobs_created"] for r in results)
    requests = sum(r["table_requests"] for r in results)
    peak = max(r.get("peak") or 0 for r in results)
    depth = bus.queue_depth(settings.tasks_queue)
    assert created == n, (created, results[:2])
    assert depth == n, f"queue holds {depth} messages for {n} VMs"
    name = f"sharded, {instances} planner instances" if instances else "tick, one instance"
    return Run(name, n, seconds, peak, requests, sb, created, depth)


NAIVE, FAIR = "naive baseline (per entity)", "fair baseline (per VM)"


def run_naive(azurite: Azurite, bus: BrokerProcess, n: int, *, write_item: bool = True,
              sample: int | None = None) -> Run:
    """A baseline, one VM at a time: per VM one job insert and one message send, and (the naive one,
    ``write_item``) one item write as well. The fair one makes the same writes the design makes (the
    tick no longer writes the item), so the ratio to it is what the batching and sharding buy.
    ``sample``: the loop plans the first that many VMs of the ``n`` seeded (the same fleet and table
    size; one VM at a time costs the same whichever VM it is), and the run counts those."""
    prefix = f"b{'n' if write_item else 'f'}{os.getpid() % 1000}n{n}"
    transport = CountingTransport()
    tables = TableServiceClient.from_connection_string(azurite.connection_string, transport=transport)
    seed(tables, prefix, n)
    settings = settings_for(azurite, bus, prefix)
    items = tables.get_table_client(settings.table("items"))
    jobs = tables.create_table_if_not_exists(settings.table("jobs"))     # created before measuring
    client = ServiceBusClient.from_connection_string(bus.connection_string)
    before_requests, before_sb = transport.requests, bus.stats()
    created = 0

    def naive():
        nonlocal created
        with client.get_queue_sender(settings.tasks_queue) as sender:
            for entity in islice(items.list_entities(), sample):
                item = _item_from(entity)
                job = Job.new_backup(vm_name=item.vm_name, slot=SLOT, now=NOW, trigger=Trigger.SCHEDULED.value,
                                     policy_name=item.policy_name)
                try:
                    jobs.create_entity(job_to_entity(job))
                    created += 1
                except ResourceExistsError:
                    pass
                task = task_for(job, NOW)
                sender.send_messages(ServiceBusMessage(task.to_json(), message_id=task.message_id))
                if not write_item:
                    continue
                item.last_slot, item.in_progress_job_id, item.last_job_id = SLOT, job.job_id, job.job_id
                items.update_entity(_item_entity(item), mode=UpdateMode.REPLACE)

    seconds = measure(naive)
    peak = None
    sb = _sb_delta(before_sb, bus.stats())
    client.close()
    depth = bus.queue_depth(settings.tasks_queue)
    planned = n if sample is None else min(sample, n)
    assert created == planned and depth == planned, (created, depth)
    name = NAIVE if write_item else FAIR
    return Run(name if planned == n else f"{name}, first {planned:,} of {n:,} VMs", planned, seconds, peak,
               transport.requests - before_requests, sb, created, depth)


def _baseline(run: Run) -> bool:
    return run.name.startswith((NAIVE, FAIR))


def _per_job(count: int, run: Run) -> float:
    return max(count, 1) / max(run.jobs, 1)


def _sb_delta(before: dict, after: dict) -> int:
    """Client operations the broker saw: transfers in (a batch is one) plus management requests (schedule)."""
    return sum(after.get(k, 0) - before.get(k, 0) for k in ("transfers_in", "management_requests"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--instances", type=int, nargs="+", default=[0, 2, 3],
                        help="planner instances (processes) per run; 0 = one instance's tick plans every shard")
    parser.add_argument("--no-baseline", action="store_true", help="skip both baselines (naive and fair)")
    parser.add_argument("--baseline-sample", type=int, metavar="VMS",
                        help="the baselines plan only the first VMS of each fleet (seeded whole), one at a time; "
                             "compared by VMs/s (default: every VM)")
    parser.add_argument("--lock-seconds", type=float, default=60.0,
                        help="the queues' lock duration, as infra/ sets it (60; Service Bus allows 5 and more)")
    parser.add_argument("--slow-shard", type=float, default=0.0, metavar="SECONDS",
                        help=f"planners spend this much longer on shard {SLOW_SHARD} (0: no longer)")
    args = parser.parse_args(argv)
    if args.lock_seconds < 5 or args.slow_shard < 0:
        parser.error("--lock-seconds must be at least 5 (Service Bus's shortest lock) and --slow-shard not negative")
    runs: list[Run] = []
    options = QueueOptions(lock_duration=timedelta(seconds=args.lock_seconds),
                           duplicate_detection_window=timedelta(minutes=10))
    with Azurite() as azurite, BrokerProcess(options) as bus:
        for n in args.vms:
            for instances in args.instances:
                print(f"... {n:,} VMs: tick, {instances} planner processes", file=sys.stderr, flush=True)
                runs.append(run_tick(azurite, bus, n, instances, args.slow_shard))
            if not args.no_baseline:
                print(f"... {n:,} VMs: naive baseline", file=sys.stderr, flush=True)
                runs.append(run_naive(azurite, bus, n, sample=args.baseline_sample))
                print(f"... {n:,} VMs: fair baseline", file=sys.stderr, flush=True)
                runs.append(run_naive(azurite, bus, n, write_item=False, sample=args.baseline_sample))
    from tabulate import tabulate

    headers = ["Run", "VMs", "VMs/s", "Seconds", "Peak RSS MiB", "Table req/job", "SB ops/job", "Jobs", "Messages"]
    print(tabulate([r.row() for r in runs], headers=headers, tablefmt="simple", disable_numparse=True))
    if len(args.vms) > 1:
        # Linear growth: the same time per VM at every size.
        for name in dict.fromkeys(r.name for r in runs if not _baseline(r)):
            per = [f"{r.vms:,}: {r.seconds / r.vms * 1000:.2f} s" for r in runs if r.name == name]
            print(f"{name}, seconds per 1,000 VMs by fleet size: " + ", ".join(per))
    for n in [] if args.no_baseline else args.vms:
        ticks = [r for r in runs if r.vms == n and not _baseline(r)]
        for baseline in (r for r in runs if _baseline(r) and (r.vms == n or r.name.endswith(f" of {n:,} VMs"))):
            for tick in ticks:
                # Compared per VM (VMs/s, requests and operations per job): a sampled baseline planned fewer.
                print(f"{n:,} VMs, {tick.name}: {(tick.vms / tick.seconds) / (baseline.vms / baseline.seconds):.1f}x "
                      f"the speed of the {baseline.name}, "
                      f"{_per_job(baseline.table_requests, baseline) / _per_job(tick.table_requests, tick):.0f}x "
                      f"fewer Table requests, "
                      f"{_per_job(baseline.sb_operations, baseline) / _per_job(tick.sb_operations, tick):.0f}x "
                      f"fewer Service Bus operations")
    return 0


if __name__ == "__main__":
    interrupt_on_sigterm()
    sys.exit(main())
