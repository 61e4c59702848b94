"""Chaos run of the whole loop on the local stack: many local VMs, host processes killed and restarted,
duplicate task sends, status blobs rewritten, a table outage; then an honest count of what happened.

Azurite, the local Service Bus and a TCP proxy in front of Azurite's table port run in this process;
``--hosts`` local Functions hosts run the Function App in subprocesses (one app, shared receipts and
timer status, so their scheduling ticks overlap). The run stops by itself after ``--minutes`` of
chaos and at most ``--settle`` seconds of calm, and leaves no process behind.

Counted from Azurite and the queue, not from what the product reports about itself, and asserted
(exit 1 when a check fails): jobs planned / completed / failed with a reason / cancelled / lost
(InProgress after a final sweep, or a VM without a job; each listed with why), every disk of every
completed job snapshotted by the job's taskId, snapshots without a taskId, dead letters no job record
explains. Reported: jobs with more than one snapshotted attempt, scheduled messages still pending.

Run: .venv/bin/python bench/chaos.py [--minutes 4] [--vms 60] [--hosts 2] [--seed 1] [--busy N]
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
from bench.cpu_hog import CpuHog  # noqa: E402
from devhost.azurite import ACCOUNT, ACCOUNT_KEY, Azurite  # noqa: E402
from devhost.demo import DISK_CONTAINER, create_demo_vm  # noqa: E402
from devhost.processes import interrupt_on_sigterm, stop_processes_under  # noqa: E402
from devhost.servicebus import LocalServiceBus, QueueOptions  # noqa: E402
from shared.domain.bloburl import base_of  # noqa: E402

QUEUE = "chaos-tasks"
STATUS_CONTAINER = "chaos-status"
HOST_ID = "chaos"           # one app: its instances share blob receipts and timer status, as in Azure


# --- the host subprocess -------------------------------------------------------------------------


def serve_host() -> int:
    """One local Functions host running the app until SIGTERM (or SIGKILL, which is the point)."""
    logging.basicConfig(level=os.environ.get("CHAOS_HOST_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)     # the SDKs' request lines drown the product's
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
            assert host.proc is not None
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
    peak_load: float = 0.0          # the machine's 1-minute load average, highest seen

    def sample_load(self) -> None:
        self.peak_load = max(self.peak_load, os.getloadavg()[0])


def _storage_env(azurite: Azurite, table_port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{azurite.blob_port}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{table_port}/{ACCOUNT};")


def _send_duplicate(svc, sender, rng: random.Random, chaos: _Chaos) -> None:
    """Send a job's current task again under a new message id, so duplicate detection lets it through."""
    from azure.servicebus import ServiceBusMessage

    from shared.domain.planning import task_for

    jobs = all_jobs(svc)
    if not jobs:
        return
    job = rng.choice(jobs)
    task = task_for(job, svc.clock.now())
    sender.send_messages(ServiceBusMessage(task.to_json(), message_id=f"dup-{uuid.uuid4()}"))
    chaos.duplicate_sends += 1


def _rewrite_status(status, rng: random.Random, chaos: _Chaos) -> None:
    """Upload a status blob again with the same bytes: a new ETag, so the trigger fires again.

    Only over the version read: the extension may write its report in between, and putting the
    older bytes back would erase a report, which nothing in Azure does (only the extension writes)."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

    try:
        names = [b.name for b in status.list_blobs() if b.name.endswith(".Status.txt")]
    except ResourceNotFoundError:      # no extension has reported yet
        return
    if not names:
        return
    name = rng.choice(names)
    blob = status.get_blob_client(name)
    read = blob.download_blob()
    try:
        blob.upload_blob(read.readall(), overwrite=True, etag=read.properties.etag,
                         match_condition=MatchConditions.IfNotModified)
    except ResourceModifiedError:       # the extension wrote meanwhile: its report stays
        return
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


def run_chaos(args: argparse.Namespace) -> tuple[_Count, dict]:
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
    with CpuHog(args.busy), Azurite() as azurite, LocalServiceBus(queues={QUEUE: options}) as bus:
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
                    chaos.sample_load()
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
            settle_start = time.monotonic()
            settle_end = settle_start + args.settle
            while time.monotonic() < settle_end:
                jobs = all_jobs(svc)
                if jobs and all(j.status.is_terminal for j in jobs) and bus.queue_depth(QUEUE) == 0:
                    break
                hosts.restart_due()
                chaos.sample_load()
                time.sleep(2)
            calm = time.monotonic() - settle_start
            hosts.stop()
            hosts_summary = {"kills": hosts.kills, "starts": hosts.starts, "calm": calm, "settle": args.settle}
            hosts = None
            stop_processes_under(vm_root)
            from shared.services.sweeping import sweep_stale_jobs

            sweep = sweep_stale_jobs(svc)
            count = _count(svc, blob_service, bus, sb_connection=bus.connection_string, vms=vms)
            figures = {**hosts_summary, "sweep_timed_out": len(sweep.timed_out),
                       "sweep_reingested": len(sweep.reingested), "chaos": chaos, "busy": args.busy}
            blob_service.close()
            return count, figures
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


@dataclass
class _Count:
    """What the run left behind, read from Azurite and the queue; ``violations`` is what fails the run."""

    figures: dict = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)               # one line per lost job: id and why
    disks_without_snapshot: list[str] = field(default_factory=list)
    unstamped: list[str] = field(default_factory=list)          # snapshot URLs with no taskId
    multi_attempt: list[str] = field(default_factory=list)      # jobs with snapshots of 2+ attempts
    scheduled: list[str] = field(default_factory=list)          # scheduled messages still on the queue
    unexplained_dead_letters: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} job(s) lost")
        if self.disks_without_snapshot:
            found.append(f"{len(self.disks_without_snapshot)} disk(s) of completed jobs without their snapshot")
        if self.unstamped:
            found.append(f"{len(self.unstamped)} snapshot(s) without a taskId")
        if self.unexplained_dead_letters:
            found.append(f"{len(self.unexplained_dead_letters)} dead letter(s) no job record explains")
        if self.figures.get("failed_without_reason"):
            found.append(f"{self.figures['failed_without_reason']} job(s) failed without a reason")
        return found


def _snapshots(blob_service) -> tuple[dict[tuple[str, str], list[str]], dict[str, set[str]], list[str]]:
    """Every blob snapshot in the disk container: by (taskId, disk blob name), the taskIds of each
    jobId, and the snapshots no extension stamped (their URLs)."""
    by_task_disk: dict[tuple[str, str], list[str]] = {}
    tasks_of_job: dict[str, set[str]] = {}
    unstamped: list[str] = []
    container = blob_service.get_container_client(DISK_CONTAINER)
    for item in container.list_blobs(include=["snapshots", "metadata"]):
        if not item.snapshot:
            continue
        meta = item.metadata or {}
        task_id = meta.get("taskId")
        if task_id is None:
            unstamped.append(f"{container.url}/{item.name}?snapshot={item.snapshot}")
            continue
        by_task_disk.setdefault((task_id, item.name), []).append(item.snapshot)
        tasks_of_job.setdefault(meta.get("jobId") or task_id.rsplit("_", 1)[0], set()).add(task_id)
    return by_task_disk, tasks_of_job, unstamped


def _disk_name(blob_url: str) -> str:
    """The blob name of a disk in the disk container, from its URL."""
    return base_of(blob_url).split(f"/{DISK_CONTAINER}/", 1)[-1]


def _missing_disk_snapshots(svc, job, by_task_disk) -> tuple[int, list[str]]:
    """(disks checked, problems): each disk of a completed job's VM (the inventory's, not the job's
    own list) must have a snapshot stamped with the job's taskId, and the job must record it."""
    vm = svc.inventory.get_vm(job.vm_name)
    recorded = {_disk_name(d.blob_url): d.snapshot_uri for d in job.disks}
    missing = []
    for disk in vm.disks:
        name = _disk_name(disk.blob_url)
        taken = by_task_disk.get((job.expected_task_id, name), [])
        if not taken:
            missing.append(f"job {job.job_id} task {job.expected_task_id}: disk {name} has no snapshot of it")
        elif not any((recorded.get(name) or "").endswith(f"snapshot={stamp}") for stamp in taken):
            missing.append(f"job {job.job_id} task {job.expected_task_id}: disk {name} records "
                           f"{recorded.get(name)}, not one of its snapshots {taken}")
    return len(vm.disks), missing


def _status_blobs(status, job_id: str) -> list[str]:
    """What each status blob of a job says: attempt, last write, taskId, status and code."""
    from azure.core.exceptions import ResourceNotFoundError

    from shared.domain.status import ParseError, parse_status_blob

    lines: list[str] = []
    try:
        blobs = [b for b in status.list_blobs(name_starts_with=f"{job_id}/") if b.name.endswith(".Status.txt")]
    except ResourceNotFoundError:
        return lines
    for blob in blobs:
        data = status.get_blob_client(blob.name).download_blob().readall()
        try:
            report = parse_status_blob(data) if data.strip() else None
            said = ("empty" if report is None
                    else f"task {report.task_id} {report.status} code {report.code} at {report.timestamp}")
        except ParseError as exc:
            said = f"unreadable: {exc}"
        lines.append(f"{blob.name} (written {blob.last_modified:%H:%M:%S}): {said}")
    return lines


def _lost_line(job, status, scheduled: list[str]) -> str:
    """One lost job: where it stopped, its attempts, its last notes, what its status blobs say, and
    the scheduled task it still waits for (the run ended before it came due)."""
    blobs = "; ".join(_status_blobs(status, job.job_id)) or "no status blob"
    notes = " | ".join(job.notes[-2:]) or "no notes"
    waits = f"; waits for scheduled {', '.join(scheduled)}" if scheduled else ""
    return (f"{job.job_id} (VM {job.vm_name}, {job.trigger.value}): {_attempts(job)}, dispatched "
            f"{job.dispatched_at}{waits}; notes: {notes}; blobs: {blobs}")


def _attempts(job) -> str:
    """How each attempt of a job ended, in order, e.g. ``attempt 1 Failed (76), attempt 2 Completed``."""
    ended = [(a.attempt, a.outcome.value, a.extension_code) for a in job.attempts]
    own = job.status.value if job.is_terminal else job.phase.value
    ended.append((job.attempt, own, job.extension_code if job.is_terminal else None))
    return ", ".join(f"attempt {n} {how}" + (f" ({code})" if code is not None else "")
                     for n, how, code in sorted(ended))


def _pending_scheduled(sb_connection: str) -> list[tuple[str | None, str, object]]:
    """(message id, job id, enqueue time) of each scheduled message still on the queue (peeked)."""
    from azure.servicebus import ServiceBusClient, ServiceBusMessageState

    from shared.domain.task import SnapshotTask
    from shared.errors import ValidationError

    found: list[tuple[str | None, str, object]] = []
    sequence = 0
    with ServiceBusClient.from_connection_string(sb_connection) as client, \
            client.get_queue_receiver(QUEUE) as receiver:
        while batch := receiver.peek_messages(max_message_count=100, sequence_number=sequence):
            for message in batch:
                if message.state is ServiceBusMessageState.SCHEDULED:
                    try:
                        job_id = SnapshotTask.from_json(b"".join(message.body)).job_id
                    except ValidationError:
                        job_id = "?"
                    found.append((message.message_id, job_id, message.scheduled_enqueue_time_utc))
            last = batch[-1].sequence_number
            assert last is not None        # a peeked message has its sequence number
            sequence = last + 1
    return found


def _count(svc, blob_service, bus: LocalServiceBus, *, sb_connection: str, vms: list[str]) -> _Count:
    from azure.servicebus import ServiceBusClient, ServiceBusReceiveMode, ServiceBusSubQueue

    from shared.domain.jobs import JobStatus
    from shared.domain.task import SnapshotTask
    from shared.errors import VmsnapError

    count = _Count()
    jobs = all_jobs(svc)
    by_status = Counter(job.status for job in jobs)
    failed = [j for j in jobs if j.status is JobStatus.FAILED]
    status = blob_service.get_container_client(STATUS_CONTAINER)

    # Snapshots, as Azurite holds them, by the attempt (taskId) and job (jobId) stamped on them.
    by_task_disk, tasks_of_job, count.unstamped = _snapshots(blob_service)
    completed = [j for j in jobs if j.status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS)]
    disks_checked = 0
    for job in completed:
        checked, missing = _missing_disk_snapshots(svc, job, by_task_disk)
        disks_checked += checked
        count.disks_without_snapshot += missing
    by_id = {j.job_id: j for j in jobs}
    count.multi_attempt = [f"{job_id}: snapshots of {', '.join(t.rsplit('_', 1)[-1] for t in sorted(tasks))}; "
                           + (_attempts(by_id[job_id]) if job_id in by_id else "no job record")
                           for job_id, tasks in sorted(tasks_of_job.items()) if len(tasks) > 1]

    scheduled: dict[str, list[str]] = {}
    for message_id, job_id, due in _pending_scheduled(sb_connection):
        scheduled.setdefault(job_id, []).append(f"{message_id} due {due:%H:%M:%S}")
    final = {j.job_id for j in jobs if j.is_terminal}
    count.scheduled = [f"{line} (job {'final: it will dispatch nothing' if job_id in final else 'in progress'})"
                       for job_id, lines in scheduled.items() for line in lines]

    # Every protected VM should have its initial backup job; one without any job lost it.
    vms_with_jobs = {j.vm_name for j in jobs}
    count.lost = [f"VM {vm}: no job at all" for vm in vms if vm not in vms_with_jobs]
    count.lost += [_lost_line(j, status, scheduled.get(j.job_id, [])) for j in jobs
                   if j.status is JobStatus.IN_PROGRESS]

    dead_letters, reasons = 0, Counter[str]()
    with ServiceBusClient.from_connection_string(sb_connection) as client, \
            client.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER,
                                       receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as dlq:
        while batch := dlq.receive_messages(max_message_count=100, max_wait_time=2):
            for message in batch:
                dead_letters += 1
                reasons[message.dead_letter_reason or "?"] += 1
                try:
                    task = SnapshotTask.from_json(b"".join(message.body))
                    dead = svc.jobs.get(task.job_id)
                except VmsnapError:
                    dead = None
                explained = dead is not None and dead.status.is_terminal and \
                    (dead.status is not JobStatus.FAILED or bool(dead.errors))
                if not explained:
                    count.unexplained_dead_letters.append(
                        f"{message.message_id} ({message.dead_letter_reason}): job "
                        f"{'missing' if dead is None else f'{dead.job_id} {dead.status.value}'}")
    per_disk = [len(stamps) for stamps in by_task_disk.values()]
    count.figures = {
        "planned": len(jobs),
        "completed": len(completed),
        "failed_with_reason": sum(1 for j in failed if j.errors),
        "failed_without_reason": sum(1 for j in failed if not j.errors),
        "cancelled": by_status[JobStatus.CANCELLED],
        "in_progress": by_status[JobStatus.IN_PROGRESS],
        "snapshotted_jobs": len(tasks_of_job),
        "max_snapshots_per_attempt_disk": max(per_disk, default=0),
        "attempts_with_duplicate_snapshots": len({task for (task, _), stamps in by_task_disk.items()
                                                  if len(stamps) > 1}),
        "max_snapshotted_attempts_per_job": max((len(t) for t in tasks_of_job.values()), default=0),
        "disks_checked": disks_checked,
        "dead_letters": dead_letters,
        "dead_letter_reasons": dict(reasons),
        "queue_active": bus.queue_depth(QUEUE),
        "queue_scheduled": bus.scheduled_count(QUEUE),
        "cancel_reasons": Counter((j.errors[0].error_code if j.errors else (j.notes or ["no reason"])[-1])[:70]
                                  for j in jobs if j.status is JobStatus.CANCELLED),
        "fail_reasons": Counter(e.error_code for j in failed for e in j.errors[:1]),
    }
    return count


def _print(count: _Count, figures: dict, minutes: float) -> None:
    chaos: _Chaos = figures["chaos"]
    f = count.figures
    planned = f["planned"] or 1
    print()
    print(f"chaos for {minutes} min: {figures['kills']} host kills ({figures['starts']} host starts), "
          f"{chaos.duplicate_sends} duplicate task sends, {chaos.status_rewrites} status blob rewrites, "
          f"{chaos.on_demand_requested} on-demand requests ({sum(chaos.on_demand_refused.values())} refused: "
          f"{dict(chaos.on_demand_refused)}), table outage {chaos.outage_seconds:.0f} s"
          + f"; {figures['busy']} CPU-spinning processes beside it, peak load average {chaos.peak_load:.1f} "
            f"on {os.cpu_count()} CPUs"
          + (f"; driver errors {dict(chaos.errors)}" if chaos.errors else "")
          + f"; calm {figures['calm']:.0f} s (at most {figures['settle']:.0f})")
    print(f"jobs planned:                     {f['planned']}")
    print(f"  completed:                      {f['completed']}")
    print(f"  failed with a reason:           {f['failed_with_reason']}  {dict(f['fail_reasons'])}")
    print(f"  failed without a reason:        {f['failed_without_reason']}")
    print(f"  cancelled:                      {f['cancelled']}  {dict(f['cancel_reasons'])}")
    print(f"  lost:                           {len(count.lost)}  (InProgress after the final sweep, or a VM "
          f"without any job; the sweep failed {figures['sweep_timed_out']} and applied "
          f"{figures['sweep_reingested']} status blob(s) the trigger had not)")
    for line in count.lost:
        print(f"    {line}")
    print(f"every disk of every completed job: {f['disks_checked'] - len(count.disks_without_snapshot)} of "
          f"{f['disks_checked']} disks have the snapshot of the job's taskId that the job records")
    for line in count.disks_without_snapshot:
        print(f"    {line}")
    print(f"jobs with 2+ snapshotted attempts: {len(count.multi_attempt)} of {f['planned']} "
          f"({len(count.multi_attempt) / planned:.0%}; at most {f['max_snapshotted_attempts_per_job']} "
          f"for one job; {f['snapshotted_jobs']} jobs have snapshots)")
    for line in count.multi_attempt:
        print(f"    {line}")
    print(f"snapshots per attempt and disk:   at most {f['max_snapshots_per_attempt_disk']} "
          f"({f['attempts_with_duplicate_snapshots']} attempts with a disk snapshotted twice)")
    print(f"snapshots without a taskId:       {len(count.unstamped)}")
    for line in count.unstamped:
        print(f"    {line}")
    print(f"dead-lettered:                    {f['dead_letters']}  {f['dead_letter_reasons']}")
    print(f"  without a record explaining it: {len(count.unexplained_dead_letters)}")
    for line in count.unexplained_dead_letters:
        print(f"    {line}")
    print(f"left on the queue:                {f['queue_active']} active, {f['queue_scheduled']} scheduled")
    for line in count.scheduled:
        print(f"    scheduled {line}")
    violations = count.violations
    print(f"verdict:                          {'; '.join(violations) if violations else 'every check holds'}")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/chaos.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4, help="length of the chaos phase")
    # Long enough for a retry scheduled at the very end of the chaos (5 minutes on) to run; the calm
    # ends as soon as every job is final and the queue holds nothing due.
    parser.add_argument("--settle", type=float, default=420, help="at most this many seconds of calm after it")
    parser.add_argument("--vms", type=int, default=60)
    parser.add_argument("--hosts", type=int, default=2, help="local host processes running the app")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-every", type=float, default=30, help="mean seconds between host kills")
    parser.add_argument("--outage-seconds", type=float, default=45, help="length of the table outage")
    parser.add_argument("--tick-seconds", type=int, default=20, help="scheduling timer period")
    parser.add_argument("--lock-seconds", type=float, default=30, help="Service Bus lock duration")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="run N CPU-spinning processes beside the run (bench/cpu_hog.py): a busy machine")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (host logs, VM roots)")
    parser.add_argument("--serve-host", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_host:
        return serve_host()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        count, figures = run_chaos(args)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    _print(count, figures, args.minutes)
    return 1 if count.violations else 0


if __name__ == "__main__":
    interrupt_on_sigterm()
    sys.exit(main())
