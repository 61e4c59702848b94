"""Benchmark status ingestion: blobs parsed per second (the pure parser), and blobs ingested per second
end to end (blob read from Azurite, parse, ETag-guarded job update in Table storage), for running,
completed and failed reports, replays, and retryable failures whose retry task goes to Service Bus.

Run: .venv/bin/python bench/bench_ingest.py [--jobs 500] [--retries 20] [--create 10000]. Starts and
stops its own Azurite and local Service Bus.

``--through-host`` measures instead what the deployed path does: the local Functions host's blob
trigger (Azurite's BlobCreated events, download, the ``ingest_status`` function in one of
``--worker-processes`` worker processes, receipt) over ``--new`` fresh status blobs in a container
that already holds 1,000, 5,000 and 10,000 handled ones (``--sizes``). It prints blobs/s, the idle
pass (nothing new written) and the complete listing the host still makes at start and every
``FULL_SCAN_SECONDS``. The local Service Bus (digest requests) runs in a process of its own there, so its CPU is
counted apart, as Azurite's is: in Azure neither runs on the host's cores. Two references come first, to set
runs of different days side by side: the pure parser's rate on one thread, and the CPU one Table entity read costs
through the SDK (client and Azurite), the kind of request a blob's ingestion is mostly made of.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from azure.storage.blob import ContainerClient  # noqa: E402

from devhost.azurite import BLOB_EVENTS_SETTING, Azurite  # noqa: E402
from devhost.processes import cpu_seconds, interrupt_on_sigterm  # noqa: E402
from devhost.workers import PROCESS_COUNT_SETTING  # noqa: E402
from devhost.servicebus import LocalServiceBus  # noqa: E402
from devhost.servicebus.server import ServiceBusProcess  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.clock import FixedClock  # noqa: E402
from shared.domain.job_transitions import MAX_ATTEMPTS, mark_dispatched  # noqa: E402
from shared.domain.jobs import DiskResult, Job, JobStatus  # noqa: E402
from shared.domain.status import ParseError, parse_status_blob  # noqa: E402
from shared.services.ingestion import IngestResult, ingest_status_blob  # noqa: E402
from shared.settings import Settings  # noqa: E402
from bench._jobs import known, status_blob_of  # noqa: E402

CORPUS = ROOT / "tests" / "jobs" / "corpus"
CORPUS_JOB = b"01954f6e-8d00-87cd-91c5-3d28beef679b"
SLOT = datetime(2025, 3, 1, 2, 0, tzinfo=timezone.utc)


def bench_parser(seconds: float = 2.0) -> tuple[float, int]:
    blobs = [p.read_bytes() for p in sorted(CORPUS.iterdir())]
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for data in blobs:
            try:
                parse_status_blob(data)
            except ParseError:
                pass
        count += len(blobs)
    return count / (time.perf_counter() - start), len(blobs)


def bench_table_read(azurite: Azurite, reads: int = 200, rounds: int = 3) -> tuple[float, float]:
    """The CPU one Table entity read costs through the SDK, as the product's clients make it (its transport,
    its retries): milliseconds of this process's CPU and of Azurite's, medians of ``rounds`` rounds. A blob's
    ingestion is mostly such requests."""
    from azure.data.tables import TableServiceClient

    from shared.adapters.clients import table_options

    service = TableServiceClient.from_connection_string(azurite.connection_string, **table_options())
    table = service.create_table_if_not_exists("benchreference")
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "Name": "reference", "Count": 1})
    client_ms, server_ms = [], []
    for _ in range(rounds):
        cpu, served = time.process_time(), azurite.cpu_seconds() or 0.0
        for _ in range(reads):
            table.get_entity("p", "r")
        client_ms.append((time.process_time() - cpu) * 1000 / reads)
        server_ms.append(((azurite.cpu_seconds() or 0.0) - served) * 1000 / reads)
    service.delete_table("benchreference")
    return statistics.median(client_ms), statistics.median(server_ms)


def dispatched_jobs(svc: Services, count: int, stem: str, attempt: int = 1) -> list[Job]:
    records = []
    for i in range(count):
        job = Job.new_backup(vm_name=f"{stem}{i:05d}", slot=SLOT, now=SLOT)
        job = known(mark_dispatched(job, attempt=attempt, task_id=f"{job.job_id}_{attempt}",
                                    status_blob=f"{job.job_id}/{attempt}.Status.txt",
                                    log_blob=f"{job.job_id}/{attempt}.Logs.txt", now=SLOT,
                                    disks=[DiskResult(-1, "https://a/v/os.vhd"), DiskResult(0, "https://a/v/d.vhd")]))
        records.append(job)
    svc.jobs.create_many_if_absent(records)
    return records


def ingest_all(svc: Services, records: list[Job], template: bytes, expect: IngestResult) -> float:
    """Write each job's status blob from ``template``, then ingest them all; blobs per second."""
    container = svc.blob_service.get_container_client(svc.settings.status_container)
    for job in records:
        data = template.replace(CORPUS_JOB + b"_1", f"{job.job_id}_{job.attempt}".encode())
        container.upload_blob(status_blob_of(job), data, overwrite=True)
    start = time.perf_counter()
    for job in records:
        downloader = container.get_blob_client(status_blob_of(job)).download_blob()
        outcome = ingest_status_blob(svc, status_blob_of(job), downloader.readall(), downloader.properties.etag)
        assert outcome.result is expect, outcome
    return len(records) / (time.perf_counter() - start)


def bench_end_to_end(svc: Services, jobs: int, retries: int) -> dict[str, float]:
    svc.blob_service.get_container_client(svc.settings.status_container).create_container()
    running = (CORPUS / "01-running-code4.txt").read_bytes()
    completed = (CORPUS / "02-completed-fs-two-disks.txt").read_bytes()
    failed = (CORPUS / "06-failed-partial-76-761.txt").read_bytes()
    figures = {}
    records = dispatched_jobs(svc, jobs, "bench-ok")
    figures["running"] = ingest_all(svc, records, running, IngestResult.APPLIED)
    figures["completed"] = ingest_all(svc, records, completed, IngestResult.APPLIED)
    figures["replay"] = ingest_all(svc, records, completed, IngestResult.TERMINAL)   # no write
    last_attempt = dispatched_jobs(svc, jobs, "bench-failed", attempt=MAX_ATTEMPTS)
    figures["failed"] = ingest_all(svc, last_attempt, failed, IngestResult.APPLIED)
    assert all(known(svc.jobs.get(job.job_id)).status is JobStatus.FAILED for job in last_attempt[:20])
    first_attempt = dispatched_jobs(svc, retries, "bench-retry")
    figures["retry"] = ingest_all(svc, first_attempt, failed, IngestResult.RETRYING)
    return figures


def bench_create(svc: Services, count: int) -> float:
    slot = SLOT + timedelta(hours=5)
    jobs = [Job.new_backup(vm_name=f"tick-vm{i:05d}", slot=slot, now=slot) for i in range(count)]
    start = time.perf_counter()
    created = svc.jobs.create_many_if_absent(jobs)
    elapsed = time.perf_counter() - start
    assert all(created)
    return elapsed


def upload_status_blobs(container: ContainerClient, names_and_data: list[tuple[str, bytes]]) -> None:
    # Four threads: the SDK client is shared with the functions, and its connection pool holds ten.
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda item: container.upload_blob(item[0], item[1], overwrite=True), names_and_data))


class HostFigures(NamedTuple):
    size: int                   # handled blobs already in the container
    rates: list[float]          # blobs/s of each pass
    idle: tuple[float, float, float]    # a pass that finds nothing new: seconds, CPU of the host, of Azurite
    listing: float              # seconds of a complete listing (start-up, every FULL_SCAN_SECONDS)
    host_ms: float              # CPU per handled blob, median over the passes: this process
    azurite_ms: float           # Azurite
    bus_ms: float               # and the local Service Bus
    busy: float                 # CPU seconds of all three per second of a pass (on 2 cores at most 2)


def bench_through_host(azurite: Azurite, bus: ServiceBusProcess, sizes: list[int], new: int, passes: int,
                       parallelism: int | None = None, worker_processes: int = 2,
                       report: Callable[[HostFigures], None] = lambda figures: None, *,
                       digests: bool = True) -> list[HostFigures]:
    """For each container size: ``passes`` host passes over ``new`` fresh blobs each, an idle pass
    and a complete listing. The container grows from one size to the next. CPU per blob is what
    decides the rate on a machine of one's own; blobs/s also follows whatever else the machine runs.
    The host's CPU counts its worker processes (children of this one, once they have ended: the
    rates are per pass, CPU per blob is over the run)."""
    import function_app
    from devhost.host import HostConfig, LocalFunctionsHost
    from shared.bootstrap import reset_services
    from shared.settings import reset_settings

    # Every setting the app's bindings name (the sample has them all), on this run's services; the
    # timers are never started here, and their schedules are set to once a year all the same.
    env = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    env = {name: ("0 0 0 1 1 *" if name.endswith("_SCHEDULE") else value) for name, value in env.items()}
    env.update({"BackupStorage": azurite.connection_string, "AzureWebJobsStorage": azurite.host_connection_string,
                "ServiceBusConnection": bus.connection_string, "TABLE_PREFIX": "hostbench",
                "STATUS_CONTAINER": "host-status", "SNAPSHOT_TASKS_QUEUE": "host-tasks", "DISPATCHER": "local",
                "LOCAL_VM_ROOT": "/nonexistent", BLOB_EVENTS_SETTING: azurite.blob_events or "",
                PROCESS_COUNT_SETTING: str(worker_processes),
                # Each completed blob's new point asks for its digests, as deployed (the sample's default);
                # the corpus names snapshots of another account, so the digest worker refuses them unread.
                "DIGEST_AFTER_BACKUP": "true" if digests else "false"})
    os.environ.update(env)          # the functions read their settings from the environment, as in Azure
    reset_settings()
    svc = Services(Settings.from_env(env), clock=FixedClock(SLOT + timedelta(minutes=5)))
    reset_services(svc)
    container = svc.blob_service.get_container_client(env["STATUS_CONTAINER"])
    container.create_container()
    completed = (CORPUS / "02-completed-fs-two-disks.txt").read_bytes()
    config = HostConfig.from_host_json(ROOT / "host.json")
    config.max_degree_of_parallelism = parallelism or config.max_degree_of_parallelism
    host = LocalFunctionsHost(function_app.app, os.environ, config, host_id="bench")
    figures = []
    present = 0

    def host_cpu_now() -> float:
        """CPU of this process and of the host's worker processes so far."""
        workers = host._workers.pids if host._workers is not None else []
        return time.process_time() + sum(cpu_seconds(pid) or 0.0 for pid in workers)

    try:
        for size in sizes:
            # Handled blobs: their receipts exist, as after the host has run for a while.
            filler = [(f"handled/{i:06d}/1.Status.txt", completed) for i in range(present, size)]
            upload_status_blobs(container, filler)
            present = size
            host.acknowledge_blobs("ingest_status")
            rates, host_cpu, azurite_cpu, bus_cpu, busy = [], [], [], [], []
            for run in range(passes):
                records = dispatched_jobs(svc, new, f"h{size}r{run}v")
                upload_status_blobs(container, [
                    (status_blob_of(job), completed.replace(CORPUS_JOB + b"_1", f"{job.job_id}_1".encode()))
                    for job in records])
                start, cpu, served = time.perf_counter(), host_cpu_now(), azurite.cpu_seconds() or 0.0
                brokered = bus.cpu_seconds() or 0.0
                invoked = host.scan_blobs("ingest_status")
                elapsed = time.perf_counter() - start
                cpu, served = host_cpu_now() - cpu, (azurite.cpu_seconds() or 0.0) - served
                brokered = (bus.cpu_seconds() or 0.0) - brokered
                assert invoked == new, f"{invoked} invocations for {new} new blobs"
                assert known(svc.jobs.get(records[-1].job_id)).status is JobStatus.COMPLETED
                rates.append(new / elapsed)
                host_cpu.append(cpu * 1000 / new)
                azurite_cpu.append(served * 1000 / new)
                bus_cpu.append(brokered * 1000 / new)
                busy.append((cpu + served + brokered) / elapsed)
                present += new
            start, cpu, served = time.perf_counter(), host_cpu_now(), azurite.cpu_seconds() or 0.0
            assert host.scan_blobs("ingest_status") == 0
            idle = (time.perf_counter() - start, host_cpu_now() - cpu, (azurite.cpu_seconds() or 0.0) - served)
            start = time.perf_counter()
            assert host.acknowledge_blobs("ingest_status") == 0      # the complete listing, nothing new
            listing = time.perf_counter() - start
            figures.append(HostFigures(size, rates, idle, listing, statistics.median(host_cpu),
                                       statistics.median(azurite_cpu), statistics.median(bus_cpu),
                                       statistics.median(busy)))
            report(figures[-1])
    finally:
        host.stop()
        reset_services()
        reset_settings()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs (status blobs) for the end-to-end run")
    parser.add_argument("--retries", type=int, default=20, help="jobs whose failure is retried (one send each)")
    parser.add_argument("--create", type=int, default=10000, help="jobs created in one create_many call")
    parser.add_argument("--through-host", action="store_true",
                        help="measure the local host's blob trigger over a container already holding --sizes blobs")
    parser.add_argument("--sizes", default="1000,5000,10000", help="blobs already in the container (--through-host)")
    parser.add_argument("--new", type=int, default=500, help="fresh blobs per pass (--through-host)")
    parser.add_argument("--passes", type=int, default=3, help="passes per size (--through-host)")
    parser.add_argument("--parallelism", type=int,
                        help="blob functions at once (--through-host; default: host.json's, else 8 per core)")
    parser.add_argument("--worker-processes", type=int, default=2,
                        help="FUNCTIONS_WORKER_PROCESS_COUNT of the host (--through-host)")
    parser.add_argument("--no-digests", action="store_true",
                        help="DIGEST_AFTER_BACKUP=false: no digest request per new point (--through-host)")
    args = parser.parse_args()

    if args.through_host:
        sizes = [int(n) for n in args.sizes.split(",")]
        def report(f: HostFigures) -> None:
            print(f"  {f.size:>6,} blobs already there: {min(f.rates):6.1f} / {statistics.median(f.rates):6.1f} / "
                  f"{max(f.rates):6.1f} blobs/s (min/median/max; in order: "
                  f"{', '.join(f'{rate:.1f}' for rate in f.rates)}); idle pass {f.idle[0]:.3f} s "
                  f"(CPU: host {f.idle[1]:.3f} s, Azurite {f.idle[2]:.3f} s); complete listing {f.listing:.2f} s\n"
                  f"          CPU per blob: host and workers {f.host_ms:.1f} ms, Azurite {f.azurite_ms:.1f} ms, "
                  f"Service Bus {f.bus_ms:.1f} ms (together {f.busy:.2f} s of CPU per second of a pass)",
                  flush=True)

        # The same pure-Python work on every run: what the machine gives one thread today, to set runs of other
        # days side by side (this machine's speed has varied threefold from one day to the next).
        print(f"machine reference: parse_status_blob at {bench_parser()[0]:,.0f} blobs/s on one thread", flush=True)
        from devhost.host import HostConfig

        at_once = args.parallelism or HostConfig.from_host_json(ROOT / "host.json").max_degree_of_parallelism
        print(f"through the local host (blob trigger ingest_status, "
              f"{at_once} blob functions at once, {args.worker_processes} worker "
              f"processes), {args.new} new blobs per pass, {args.passes} passes, digest requests "
              f"{'off' if args.no_digests else 'on'}:", flush=True)
        with Azurite() as azurite, ServiceBusProcess() as bus:
            client_ms, server_ms = bench_table_read(azurite)
            print(f"request reference: one Table entity read through the SDK costs {client_ms:.2f} ms of the "
                  f"client's CPU and {server_ms:.2f} ms of Azurite's (medians of 3 x 200)", flush=True)
            bench_through_host(azurite, bus, sizes, args.new, args.passes, args.parallelism,
                               args.worker_processes, report, digests=not args.no_digests)
        return

    rate, variants = bench_parser()
    print(f"parser: {rate:,.0f} status blobs/s (pure parse_status_blob over {variants} corpus variants)")
    with Azurite() as azurite, LocalServiceBus() as broker:
        settings = Settings.from_env({"BackupStorage": azurite.connection_string, "TABLE_PREFIX": "bench",
                                      "STATUS_CONTAINER": "bench-status",
                                      "ServiceBusConnection": broker.connection_string})
        svc = Services(settings, clock=FixedClock(SLOT + timedelta(minutes=5)))
        figures = bench_end_to_end(svc, args.jobs, args.retries)
        print(f"end to end over {args.jobs} jobs (blob download + parse + ETag-guarded table update):")
        print(f"  in-progress write:      {figures['running']:,.0f} blobs/s")
        print(f"  final write, completed: {figures['completed']:,.0f} blobs/s")
        print(f"  final write, failed:    {figures['failed']:,.0f} blobs/s (last attempt: no retry)")
        print(f"  replay (no change):     {figures['replay']:,.0f} blobs/s")
        print(f"  retryable failure over {args.retries} jobs (+ job read, retry task scheduled on the local "
              f"Service Bus): {figures['retry']:,.1f} blobs/s")
        elapsed = bench_create(svc, args.create)
        print(f"create_many_if_absent: {args.create:,} jobs of one tick in {elapsed:.2f} s "
              f"({args.create / elapsed:,.0f} jobs/s, job rows)")


if __name__ == "__main__":
    interrupt_on_sigterm()
    main()
