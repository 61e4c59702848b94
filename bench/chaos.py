"""Chaos run of the whole loop on the local stack: many local VMs, host processes killed and restarted,
duplicate task sends, status blobs rewritten, a table outage; then an honest count of what happened.

Azurite, the local Service Bus and a TCP proxy in front of Azurite's table port run in this process;
``--hosts`` local Functions hosts run the Function App in subprocesses (one app, shared receipts and
timer status, so their scheduling ticks overlap). The run stops by itself after ``--minutes`` of
chaos and at most ``--settle`` seconds of calm, and leaves no process behind.

Counted from Azurite and the dead-letter queue, not from what the product reports about itself:
jobs planned / completed / failed with a reason / cancelled / lost (InProgress or missing after a
final sweep), snapshots per attempt (blob snapshots in Azurite, grouped by the taskId stamped on
them), completed jobs without their snapshots, and dead-lettered messages no job record explains.

Run: .venv/bin/python bench/chaos.py [--minutes 4] [--vms 60] [--hosts 2] [--seed 1]
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._jobs import all_jobs  # noqa: E402
from bench._proxy import TcpProxy  # noqa: E402
from devhost.azurite import ACCOUNT, ACCOUNT_KEY, Azurite  # noqa: E402
from devhost.demo import DISK_CONTAINER, create_demo_vm  # noqa: E402
from devhost.processes import stop_processes_under  # noqa: E402
from devhost.servicebus import LocalServiceBus, QueueOptions  # noqa: E402

QUEUE = "chaos-tasks"
STATUS_CONTAINER = "chaos-status"
HOST_ID = "chaos"           # one app: its instances share blob receipts and timer status, as in Azure


# --- the host subprocess -------------------------------------------------------------------------


def serve_host() -> int:
    """One local Functions host running the app until SIGTERM (or SIGKILL, which is the point)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import function_app
    from devhost.host import HostConfig, LocalFunctionsHost

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    host = LocalFunctionsHost(function_app.app, os.environ, HostConfig.from_host_json(ROOT / "host.json"),
                              host_id=HOST_ID, poll_interval=0.5)
    host.start()
    print("host started", flush=True)
    stop.wait()
    host.stop()
    return 0


@dataclass
class _Host:
    index: int
    log_path: Path
    proc: subprocess.Popen | None = None
    down_until: float = 0.0


class _Hosts:
    """The host processes: started, killed with SIGKILL, restarted, and finally stopped."""

    def __init__(self, count: int, env: dict[str, str], log_dir: Path):
        self._env = env
        self.hosts = [_Host(i, log_dir / f"host{i}.log") for i in range(count)]
        self.kills = self.starts = 0

    def start(self, host: _Host) -> None:
        with open(host.log_path, "ab") as out:
            host.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve-host"],
                                         env=self._env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.starts += 1

    def kill(self, host: _Host, down_for: float) -> None:
        if host.proc is not None and host.proc.poll() is None:
            host.proc.send_signal(signal.SIGKILL)
            host.proc.wait(timeout=10)
            self.kills += 1
        host.proc, host.down_until = None, time.monotonic() + down_for

    def running(self) -> list[_Host]:
        return [h for h in self.hosts if h.proc is not None and h.proc.poll() is None]

    def restart_due(self, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for host in self.hosts:
            if (host.proc is None or host.proc.poll() is not None) and host.down_until <= now:
                self.start(host)

    def stop(self) -> None:
        for host in self.running():
            host.proc.send_signal(signal.SIGTERM)
        for host in self.hosts:
            if host.proc is None:
                continue
            try:
                host.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                host.proc.kill()
                host.proc.wait(timeout=10)


# --- the chaos -----------------------------------------------------------------------------------


@dataclass
class _Chaos:
    duplicate_sends: int = 0
    status_rewrites: int = 0
    on_demand_requested: int = 0
    on_demand_refused: Counter = field(default_factory=Counter)
    outage_seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)


def _storage_env(azurite: Azurite, table_port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{azurite.blob_port}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{table_port}/{ACCOUNT};")


def _send_duplicate(svc, sender, rng: random.Random, chaos: _Chaos) -> None:
    """Send a job's current task again under a new message id, so duplicate detection lets it through."""
    from azure.servicebus import ServiceBusMessage

    from shared.services.scheduling import task_for

    jobs = all_jobs(svc)
    if not jobs:
        return
    job = rng.choice(jobs)
    task = task_for(job, svc.clock.now())
    sender.send_messages(ServiceBusMessage(task.to_json(), message_id=f"dup-{uuid.uuid4()}"))
    chaos.duplicate_sends += 1


def _rewrite_status(status, rng: random.Random, chaos: _Chaos) -> None:
    """Upload a status blob again with the same bytes: a new ETag, so the trigger fires again."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        names = [b.name for b in status.list_blobs() if b.name.endswith(".Status.txt")]
    except ResourceNotFoundError:      # no extension has reported yet
        return
    if not names:
        return
    name = rng.choice(names)
    blob = status.get_blob_client(name)
    blob.upload_blob(blob.download_blob().readall(), overwrite=True)
    chaos.status_rewrites += 1


def _request_on_demand(svc, vms: list[str], rng: random.Random, chaos: _Chaos) -> None:
    from shared.errors import VmsnapError
    from shared.services.protection import backup_now

    vm = rng.choice(vms)
    chaos.on_demand_requested += 1
    try:
        backup_now(svc, vm, retain_until=None)
    except VmsnapError as exc:   # in progress, daily limit: refused before any job exists
        chaos.on_demand_refused[type(exc).__name__] += 1


def run_chaos(args) -> dict:
    from azure.servicebus import ServiceBusClient
    from azure.storage.blob import BlobServiceClient

    from shared.bootstrap import Services
    from shared.services.protection import enable_protection
    from shared.settings import Settings

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="vmsnap-chaos-"))
    vm_root = work / "vms"
    chaos = _Chaos()
    options = QueueOptions(lock_duration=timedelta(seconds=args.lock_seconds), max_delivery_count=10)
    with Azurite() as azurite, LocalServiceBus(queues={QUEUE: options}) as bus:
        proxy = TcpProxy(azurite.table_port).start()
        hosts = None
        try:
            through_proxy = _storage_env(azurite, proxy.port)
            chosen = {"BackupStorage": through_proxy, "AzureWebJobsStorage": through_proxy,
                      "ServiceBusConnection": bus.connection_string, "SNAPSHOT_TASKS_QUEUE": QUEUE,
                      "STATUS_CONTAINER": STATUS_CONTAINER, "TABLE_PREFIX": "chaos", "DISPATCHER": "local",
                      "LOCAL_VM_ROOT": str(vm_root), "SNAPSHOT_SCHEDULE": f"*/{args.tick_seconds} * * * * *",
                      "SWEEP_SCHEDULE": "0 * * * * *", "PYTHONPATH": str(ROOT)}
            # Every other setting the bindings name, at its default.
            env = {**os.environ, **Settings.from_env(chosen).binding_values(), **chosen}
            # This process counts straight from Azurite, around the proxy and its outage.
            direct = {**env, "BackupStorage": azurite.connection_string}
            svc = Services(Settings.from_env(direct))
            vms = [f"chaos-vm{i:03d}" for i in range(args.vms)]
            for vm in vms:
                create_demo_vm(svc, vm)
                enable_protection(svc, vm, "DefaultPolicy")
            print(f"{len(vms)} local VMs protected; {args.hosts} host processes; chaos for {args.minutes} min "
                  f"(seed {args.seed})", flush=True)

            hosts = _Hosts(args.hosts, env, work)
            hosts.restart_due()
            blob_service = BlobServiceClient.from_connection_string(azurite.connection_string)
            status = blob_service.get_container_client(STATUS_CONTAINER)
            started = time.monotonic()
            chaos_end = started + args.minutes * 60
            outage_start = started + args.minutes * 60 * 0.4
            outage_end = outage_start + args.outage_seconds
            next_kill = started + rng.uniform(0.5, 1.5) * args.kill_every
            with ServiceBusClient.from_connection_string(bus.connection_string) as sb, \
                    sb.get_queue_sender(QUEUE) as sender:
                while time.monotonic() < chaos_end:
                    now = time.monotonic()
                    if outage_start <= now < outage_end and proxy.on:
                        print(f"[{now - started:5.0f} s] table storage outage for {args.outage_seconds:.0f} s",
                              flush=True)
                        proxy.switch(False)
                    elif now >= outage_end and not proxy.on:
                        proxy.switch(True)
                        chaos.outage_seconds = now - outage_start
                        print(f"[{now - started:5.0f} s] table storage back", flush=True)
                    if now >= next_kill and hosts.running():
                        victim = rng.choice(hosts.running())
                        hosts.kill(victim, down_for=rng.uniform(2, 10))
                        print(f"[{now - started:5.0f} s] killed host {victim.index}", flush=True)
                        next_kill = now + rng.uniform(0.5, 1.5) * args.kill_every
                    hosts.restart_due()
                    action = rng.random()
                    try:
                        if action < 0.25:
                            _send_duplicate(svc, sender, rng, chaos)
                        elif action < 0.5:
                            _rewrite_status(status, rng, chaos)
                        elif action < 0.55:
                            _request_on_demand(svc, vms, rng, chaos)
                    except Exception as exc:      # the chaos driver itself must go on; counted below
                        chaos.errors[type(exc).__name__] += 1
                    time.sleep(rng.uniform(0.5, 1.5))
            proxy.switch(True)
            print(f"[{time.monotonic() - started:5.0f} s] chaos over; settling (at most {args.settle} s)", flush=True)
            hosts.restart_due(now=float("inf"))
            settle_end = time.monotonic() + args.settle
            while time.monotonic() < settle_end:
                jobs = all_jobs(svc)
                if jobs and all(j.status.is_terminal for j in jobs) and bus.queue_depth(QUEUE) == 0:
                    break
                hosts.restart_due()
                time.sleep(2)
            hosts.stop()
            hosts_summary = {"kills": hosts.kills, "starts": hosts.starts}
            hosts = None
            stop_processes_under(vm_root)
            from shared.services.sweeping import sweep_stale_jobs

            sweep = sweep_stale_jobs(svc)
            figures = _count(svc, blob_service, bus, sb_connection=bus.connection_string, vms=vms)
            figures.update(hosts_summary)
            figures["sweep_timed_out"] = len(sweep.timed_out)
            figures["chaos"] = chaos
            blob_service.close()
            return figures
        finally:
            if hosts is not None:
                hosts.stop()
            stop_processes_under(vm_root)
            proxy.stop()
            if args.keep:
                print(f"work directory kept: {work} (host logs: host*.log)")
            else:
                shutil.rmtree(work, ignore_errors=True)


# --- the count -----------------------------------------------------------------------------------


def _count(svc, blob_service, bus: LocalServiceBus, *, sb_connection: str, vms: list[str]) -> dict:
    from azure.servicebus import ServiceBusClient, ServiceBusReceiveMode, ServiceBusSubQueue

    from shared.domain.jobs import JobStatus
    from shared.domain.task import SnapshotTask
    from shared.errors import VmsnapError

    jobs = all_jobs(svc)
    by_status = Counter(job.status for job in jobs)
    failed = [j for j in jobs if j.status is JobStatus.FAILED]

    # Snapshots, as Azurite holds them, by the attempt (taskId) and disk stamped on them.
    per_attempt_disk: Counter = Counter()
    unstamped = 0
    for item in blob_service.get_container_client(DISK_CONTAINER).list_blobs(include=["snapshots", "metadata"]):
        if not item.snapshot:
            continue
        task_id = (item.metadata or {}).get("taskId")
        if task_id is None:
            unstamped += 1
        else:
            per_attempt_disk[(task_id, item.name)] += 1
    snapshotted_tasks = {task_id for task_id, _ in per_attempt_disk}
    completed = [j for j in jobs if j.status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS)]
    completed_without_snapshots = [j.job_id for j in completed if j.task_id not in snapshotted_tasks]
    attempts_per_job = Counter(task_id.rsplit("_", 1)[0] for task_id in snapshotted_tasks)

    # Every protected VM should have its initial backup job; one without any job lost it.
    vms_with_jobs = {j.vm_name for j in jobs}
    missing = [vm for vm in vms if vm not in vms_with_jobs]

    dead_letters, unexplained, reasons = 0, [], Counter()
    with ServiceBusClient.from_connection_string(sb_connection) as client, \
            client.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER,
                                       receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as dlq:
        while batch := dlq.receive_messages(max_message_count=100, max_wait_time=2):
            for message in batch:
                dead_letters += 1
                reasons[message.dead_letter_reason or "?"] += 1
                try:
                    task = SnapshotTask.from_json(b"".join(message.body))
                    job = svc.jobs.get(task.job_id)
                except VmsnapError:
                    job = None
                explained = job is not None and job.status.is_terminal and \
                    (job.status is not JobStatus.FAILED or bool(job.errors))
                if not explained:
                    unexplained.append(message.message_id)
    return {
        "planned": len(jobs),
        "completed": len(completed),
        "failed_with_reason": sum(1 for j in failed if j.errors),
        "failed_without_reason": sum(1 for j in failed if not j.errors),
        "cancelled": by_status[JobStatus.CANCELLED],
        "in_progress": by_status[JobStatus.IN_PROGRESS],
        "missing_vms": len(missing),
        "max_snapshots_per_attempt_disk": max(per_attempt_disk.values(), default=0),
        "attempts_with_duplicate_snapshots": len({t for (t, _), n in per_attempt_disk.items() if n > 1}),
        "max_snapshotted_attempts_per_job": max(attempts_per_job.values(), default=0),
        "snapshots_without_task": unstamped,
        "completed_without_snapshots": len(completed_without_snapshots),
        "dead_letters": dead_letters,
        "dead_letter_reasons": dict(reasons),
        "unexplained_dead_letters": len(unexplained),
        "queue_left": bus.queue_depth(QUEUE),
        "cancel_reasons": Counter((j.errors[0].error_code if j.errors else (j.notes or ["no reason"])[-1])[:70]
                                  for j in jobs if j.status is JobStatus.CANCELLED),
        "fail_reasons": Counter(e.error_code for j in failed for e in j.errors[:1]),
    }


def _print(figures: dict, minutes: float) -> None:
    chaos: _Chaos = figures["chaos"]
    lost = figures["in_progress"] + figures["missing_vms"]
    print()
    print(f"chaos for {minutes} min: {figures['kills']} host kills ({figures['starts']} host starts), "
          f"{chaos.duplicate_sends} duplicate task sends, {chaos.status_rewrites} status blob rewrites, "
          f"{chaos.on_demand_requested} on-demand requests ({sum(chaos.on_demand_refused.values())} refused: "
          f"{dict(chaos.on_demand_refused)}), table outage {chaos.outage_seconds:.0f} s"
          + (f"; driver errors {dict(chaos.errors)}" if chaos.errors else ""))
    print(f"jobs planned:                     {figures['planned']}")
    print(f"  completed:                      {figures['completed']}")
    print(f"  failed with a reason:           {figures['failed_with_reason']}  {dict(figures['fail_reasons'])}")
    print(f"  failed without a reason:        {figures['failed_without_reason']}")
    print(f"  cancelled:                      {figures['cancelled']}  {dict(figures['cancel_reasons'])}")
    print(f"  lost:                           {lost}  (InProgress after the sweep {figures['in_progress']}, "
          f"VMs without any job {figures['missing_vms']}; sweep failed {figures['sweep_timed_out']})")
    print(f"snapshots per attempt (max):      {figures['max_snapshots_per_attempt_disk']} per disk "
          f"({figures['attempts_with_duplicate_snapshots']} attempts with a disk snapshotted twice; "
          f"at most {figures['max_snapshotted_attempts_per_job']} snapshotted attempts for one job)")
    print(f"completed without its snapshots:  {figures['completed_without_snapshots']}")
    print(f"dead-lettered:                    {figures['dead_letters']}  {figures['dead_letter_reasons']}")
    print(f"  without a record explaining it: {figures['unexplained_dead_letters']}")
    print(f"left on the queue:                {figures['queue_left']}")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/chaos.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4, help="length of the chaos phase")
    parser.add_argument("--settle", type=float, default=180, help="at most this many seconds of calm after it")
    parser.add_argument("--vms", type=int, default=60)
    parser.add_argument("--hosts", type=int, default=2, help="local host processes running the app")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-every", type=float, default=30, help="mean seconds between host kills")
    parser.add_argument("--outage-seconds", type=float, default=45, help="length of the table outage")
    parser.add_argument("--tick-seconds", type=int, default=20, help="scheduling timer period")
    parser.add_argument("--lock-seconds", type=float, default=30, help="Service Bus lock duration")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (host logs, VM roots)")
    parser.add_argument("--serve-host", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_host:
        return serve_host()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        figures = run_chaos(args)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    _print(figures, args.minutes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
