"""``./dev run``: the whole backup loop on this machine.

Starts Azurite (Blob, Table), the local Service Bus and the local Compute endpoint, registers two
demo VMs and protects them with DefaultPolicy, then runs the Function App under the local host:
the timer emits one snapshot task per VM. For ``demo-vm`` (page blobs) the worker dispatches the
extension command to the bundled handler, which snapshots the disks and writes its status blob, and
the blob trigger turns that into a job record. For ``demo-vm-md`` (managed disks) the worker starts
a restore point at the local Compute endpoint, which runs the bundled extension on the VM and
snapshots its disks, and the restore-point timer turns the restore point into a job record.
A small webhook receiver (devhost/webhook.py) takes the app's alerts and prints each one, and the
host serves the dashboard on 127.0.0.1 (its address printed, and in .local/stack.settings.json).
Everything it started is stopped when it ends, however it ends.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from devhost.azurite import BLOB_EVENTS_SETTING, Azurite
from devhost.processes import stop_processes_under
from shared.errors import ConfigurationError, VmsnapError
from shared.settings import status_blob_source

if TYPE_CHECKING:
    from shared.domain.jobs import Job

log = logging.getLogger("devhost.run")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCHEDULER, WORKER, INGEST = "schedule_backups", "dispatch_snapshot", "ingest_status"
RESTORE_POINTS = "track_restore_points"
DIGESTS = "record_digests"
DEMO_PLAN = "demo-drills"
DEFAULT_SCRATCH = "vmsnap-drills"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Ctrl-C and SIGTERM stop everything. SIGINT is set explicitly: a shell without job control (a
    # script, `nohup ... &`) starts background commands with SIGINT ignored, and Python keeps it so.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupt)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a stack that does not stop is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    stack = _Stack(args)
    try:
        stack.start()
        return stack.run_once() if args.once else stack.run_forever()
    except (ConfigurationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except VmsnapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping", file=sys.stderr)
        _stop_promptly(stack)
        return 130       # not reached
    finally:
        stack.stop()


def _stop_promptly(stack: "_Stack") -> None:
    """Ctrl-C: stop the stack and leave at once, as the Functions host ends its worker process. An
    invocation still running (a backup being handed over) is abandoned; its message comes back."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)          # a second Ctrl-C must not cut the stop short
    try:
        stack.stop()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # Threads of invocations still in flight would keep the interpreter alive until they end.
        os._exit(130)


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="./dev run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", action="store_true",
                        help="run exactly one backup cycle, print the job table and exit (0 if it completed)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds --once waits for the cycle")
    parser.add_argument("--blob-port", type=int, default=10000)
    parser.add_argument("--table-port", type=int, default=10002)
    parser.add_argument("--servicebus-port", type=int, default=5672)
    parser.add_argument("--compute-port", type=int, default=0,
                        help="port of the local Compute endpoint (HTTPS; default: a free port)")
    parser.add_argument("--webhook-port", type=int, default=0,
                        help="port of the local alert receiver (ALERT_WEBHOOK_URL; default: a free port)")
    parser.add_argument("--http-port", type=int, default=0,
                        help="port of the HTTP functions: the dashboard and its API (default: a free port)")
    parser.add_argument("--persist", action="store_true",
                        help="keep Azurite's data in .local/azurite between runs (default: in memory)")
    parser.add_argument("--verbose", "-v", action="store_true", help="show the functions' logs")
    return parser.parse_args(argv)


def _restore_progress(job) -> str:
    """One line of a running restore's progress, as ``./dev run`` prints it."""
    from shared.domain.restore import progress_percentage

    percent = progress_percentage(job.disks)
    copied = sum(d.bytes_done or 0 for d in job.disks) // 2**20
    total = sum(d.bytes_total or 0 for d in job.disks) // 2**20
    states = " ".join(f"{'OS' if d.lun == -1 else d.lun}:{d.status}" for d in job.disks)
    return (f"{job.operation:<11} {job.vm_name:<12} {job.job_id}  {job.phase.value:<8} "
            f"{'' if percent is None else f'{percent:5.1f} %'} {copied}/{total} MiB  {states}")


def _print_now(line: str) -> None:
    print(line, flush=True)


# Set by Ctrl-C or SIGTERM as well as raised: where the handler's KeyboardInterrupt surfaces inside a
# finalizer (a query's shard generators closed as its page is returned, a __del__), Python prints it as
# "Exception ignored" and drops it, and the stack would run on; ``_pause`` raises it again.
_interrupted = threading.Event()


def _raise_interrupt(signum, frame):
    _interrupted.set()
    raise KeyboardInterrupt


def _pause(seconds: float) -> None:
    """Wait between two polls of the stack: KeyboardInterrupt once Ctrl-C or SIGTERM came, even one whose
    exception Python dropped."""
    if _interrupted.wait(seconds):
        raise KeyboardInterrupt


def load_local_settings(path: Path | None = None) -> dict[str, str]:
    """The app settings a developer would give ``func start``: local.settings.json, else the sample."""
    for candidate in ([path] if path else [PROJECT_ROOT / "local.settings.json",
                                           PROJECT_ROOT / "local.settings.sample.json"]):
        if candidate and candidate.exists():
            try:
                return {k: str(v) for k, v in json.loads(candidate.read_text())["Values"].items()}
            except (ValueError, KeyError) as exc:
                raise ConfigurationError(f"{candidate} is not a valid local settings file "
                                         f"(needs a \"Values\" object): {exc}") from exc
    raise ConfigurationError("local.settings.sample.json is missing; restore it from git")


class _Stack:
    def __init__(self, args):
        self.args = args
        self.azurite: Azurite | None = None
        self.servicebus = None
        self.compute = None
        self.host = None
        self.webhook = None
        self.vm_root: Path | None = None
        self.settings_file: Path | None = None
        self.dashboard_url: str | None = None

    def start(self) -> None:
        from devhost.servicebus import LocalServiceBus
        from devhost.webhook import WebhookReceiver

        env = load_local_settings()
        env.update({k: os.environ[k] for k in env if k in os.environ})   # as func start: the environment wins
        # In Azure a bad source costs the blob trigger alone (functions/status_ingest.py); a local run
        # without its status blob trigger would only wait for jobs that never finish. Checked as the app
        # will read it: the environment, with these settings over it.
        status_blob_source({**os.environ, **env})
        location = PROJECT_ROOT / ".local" / "azurite" if self.args.persist else None
        self.azurite = Azurite(self.args.blob_port, self.args.table_port, location).start()
        self.servicebus = LocalServiceBus(port=self.args.servicebus_port).start()
        # The host's own storage in its own account, as in Azure: its receipts never sit beside the status blobs.
        env.update(AzureWebJobsStorage=self.azurite.host_connection_string,
                   BackupStorage=self.azurite.connection_string,
                   ServiceBusConnection=self.servicebus.connection_string,
                   DISPATCHER="local")
        self.webhook = WebhookReceiver(self.args.webhook_port, printer=_print_now).start()
        env["ALERT_WEBHOOK_URL"] = self.webhook.url
        if self.args.verbose:
            env["SDK_LOG_LEVEL"] = "INFO"       # -v: the SDKs' requests too
        self.vm_root = (PROJECT_ROOT / env.get("LOCAL_VM_ROOT", ".local/vms")).resolve()
        if not self.args.persist:
            shutil.rmtree(self.vm_root, ignore_errors=True)
        env["LOCAL_VM_ROOT"] = str(self.vm_root)

        from devhost.compute import LocalCompute
        from shared.bootstrap import reset_services, services
        from shared.settings import reset_settings

        self.compute = LocalCompute(self.azurite.connection_string, self.vm_root, port=self.args.compute_port).start()
        # Restore points go to the local endpoint instead of ARM, named by a setting like every other
        # connection: the app and a vmsnap in another terminal (through the stack settings) reach the same one.
        env["ComputeConnection"] = self.compute.connection_string
        # Azurite's BlobCreated events: the status trigger's idle pass then lists nothing (docs/ingestion.md).
        env[BLOB_EVENTS_SETTING] = self.azurite.blob_events or ""
        os.environ.update(env)       # the app reads its settings from the environment, as in Azure
        reset_settings()
        reset_services(None)
        from devhost.guest import MarkingDispatcher
        from shared.bootstrap import Services

        # The demo guests write their marker before each backup (devhost/guest.py), so drills prove content.
        settings = services().settings
        reset_services(Services(settings, dispatcher=MarkingDispatcher(self.vm_root,
                                                                       services().blob_service.credential)))
        self.svc = services()
        self.compute.add_resource_group(DEFAULT_SCRATCH)
        self.compute.before_snapshot = self._guest_marks
        self.started = self.svc.clock.now() - timedelta(seconds=1)   # job time filters use the slot
        self._prepare_demo()

        import function_app
        from devhost.host import HostConfig, LocalFunctionsHost

        self.host = LocalFunctionsHost(function_app.app, os.environ,
                                       HostConfig.from_host_json(PROJECT_ROOT / "host.json"))
        # Served from the start, --once too: the dashboard is there while the stack is (and gone with it).
        self.dashboard_url = f"{self.host.serve_http(self.args.http_port)}/api/dashboard"
        print(f"local stack up: Azurite blob :{self.azurite.blob_port} table :{self.azurite.table_port}, "
              f"Service Bus :{self.servicebus.port}, Compute :{self.compute.port}, alert receiver "
              f":{self.webhook.port}; "
              f"functions: {', '.join(sorted(self.host.functions))}")
        print(f"dashboard: {self.dashboard_url} (API: {self.dashboard_url.removesuffix('/dashboard')}/v1/openapi.json)")
        self._write_vmsnap_settings(env)

    def _write_vmsnap_settings(self, env: dict[str, str]) -> None:
        """Where `vmsnap` (run in the project folder) finds this stack while it runs, whatever ports it took."""
        from shared.cli import STACK_SETTINGS

        values = {k: v for k, v in env.items() if not k.startswith(("AzureWebJobs", "FUNCTIONS_", "AZURITE_"))}
        self.settings_file = PROJECT_ROOT / STACK_SETTINGS
        self.settings_file.parent.mkdir(parents=True, exist_ok=True)
        self.settings_file.write_text(json.dumps({"IsEncrypted": False, "Pid": os.getpid(),
                                                  "DashboardUrl": self.dashboard_url, "Values": values}, indent=2))
        print(f"vmsnap settings of this stack: {STACK_SETTINGS} (vmsnap reads it in the project folder "
              f"while the stack runs; the environment and local.settings.json come after it)")

    def _guest_marks(self, vm, restore_point_name: str) -> None:
        from devhost.guest import is_guest_disk, write_marker

        os_disk = next((d for d in vm.disks if d.lun == -1), None)
        credential = self.svc.blob_service.credential
        if os_disk is not None and is_guest_disk(os_disk.blob_url, credential):
            write_marker(os_disk.blob_url, credential, restore_point_name)

    def _prepare_demo(self) -> None:
        from devhost.demo import create_demo_md_vm, create_demo_vm
        from shared.errors import ConflictError
        from shared.services.protection import enable_protection

        self.demo_vm = create_demo_vm(self.svc)
        self.demo_md_vm = create_demo_md_vm(self.svc, self.compute)
        for vm, method in ((self.demo_vm, "page blobs: extension command"),
                           (self.demo_md_vm, "managed disks: restore point")):
            try:
                item = enable_protection(self.svc, vm.name, "DefaultPolicy")
                print(f"protected {vm.name} with policy {item.policy_name} ({len(vm.disks)} disks, {method}); "
                      f"initial backup at the next tick")
            except ConflictError as exc:  # already protected (a --persist run): keep its state
                print(f"{vm.name}: {exc}")
        from shared.domain.restore_testing import RestoreTestPlan, Selection

        plan = RestoreTestPlan(name=DEMO_PLAN, selection=Selection.ITEMS, members=(self.demo_vm.name,
                                                                                  self.demo_md_vm.name),
                               keep_hours=0.05, probe_file="/var/lib/vmsnap/marker")
        try:
            self.svc.restore_tests.create(plan)
            print(f"restore test plan {plan.name}: drills of both demo VMs probe {plan.probe_file}, keep what they "
                  f"restored {plan.keep_hours * 60:.0f} min ('vmsnap restore-test run --vm demo-vm')")
        except ConflictError:
            pass

    def run_once(self) -> int:
        from shared.domain.jobs import JobStatus
        from shared.ports import JobQuery

        self.host.fire_timer(SCHEDULER)
        deadline = time.monotonic() + self.args.timeout
        jobs = []
        while time.monotonic() < deadline:
            self.host.drain_queue(WORKER, max_wait=0.3)
            self.host.scan_blobs(INGEST)
            self.host.fire_timer(RESTORE_POINTS)
            jobs = self.svc.jobs.query(JobQuery(since=self.started)).jobs
            if jobs and all(j.status.is_terminal for j in jobs):
                break
            _pause(0.3)
        self._print_jobs()
        if not jobs:
            print("no backup was due in this cycle", file=sys.stderr)
            return 0
        self._print_snapshots()
        unfinished = [j.job_id for j in jobs if not j.status.is_terminal]
        if unfinished:
            print(f"error: job(s) still in progress after {self.args.timeout:.0f} s: {', '.join(unfinished)}",
                  file=sys.stderr)
            return 1
        ok = all(j.status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS) for j in jobs)
        self._record_digests(jobs)
        if ok and any(j.vm_name == self.demo_md_vm.name for j in jobs) and not self._restore_point_complete():
            print(f"error: {self.demo_md_vm.name} has no restore point with a disk restore point per disk",
                  file=sys.stderr)
            return 1
        return 0 if ok else 1

    def run_forever(self) -> int:
        from shared.ports import JobQuery

        self.host.fire_timer(SCHEDULER)   # a first cycle right away, then on SNAPSHOT_SCHEDULE
        self.host.start()
        print("running; jobs are printed as they finish. Ctrl-C stops everything.\n"
              "In another terminal, in this folder: "
              ".venv/bin/vmsnap job list, .venv/bin/vmsnap backup-now --vm demo-vm, .venv/bin/vmsnap alert list, "
              ".venv/bin/vmsnap report compliance")
        # The restore-point timer follows RESTORE_POINT_SCHEDULE (every minute by default).
        reported: set[str] = set()
        progress: dict[str, str] = {}
        while True:
            for job in self.svc.jobs.query(JobQuery(since=self.started)).jobs:
                if job.operation in ("Restore", "RestoreTest") and not job.status.is_terminal:
                    line = _restore_progress(job)
                    if progress.get(job.job_id) != line:
                        progress[job.job_id] = line
                        print(line)
                if job.status.is_terminal and job.job_id not in reported:
                    reported.add(job.job_id)
                    duration = job.duration or timedelta(0)
                    print(f"{job.end_time:%Y-%m-%dT%H:%M:%S}  {job.status.value:<22} {job.vm_name:<12} "
                          f"{job.job_id}  {duration.total_seconds():.1f}s")
            _pause(2)

    def _print_jobs(self) -> None:
        from shared.cli import main as vmsnap

        print()
        vmsnap(["job", "list", "-o", "table"])

    def _print_snapshots(self) -> None:
        from devhost.demo import disk_snapshots

        print()
        for disk, snapshots in disk_snapshots(self.svc, self.demo_vm).items():
            print(f"{disk}: {len(snapshots)} snapshot(s) in Azurite {', '.join(snapshots)}")
        for point in self.compute.restore_points(self.demo_md_vm.name):
            print(f"{self.demo_md_vm.name}: restore point {point.name} {point.state} "
                  f"{point.consistency}, {len(point.disk_points)} disk restore point(s)")
            for dpoint in point.disk_points:
                print(f"  {dpoint.disk.name}: {dpoint.id.rsplit('/', 1)[-1]} -> {dpoint.snapshot_url}")

    def _record_digests(self, jobs: list[Job]) -> None:
        """Serve the digest requests the cycle's new points of blob snapshots sent (one per point), as the
        record_digests function does once deployed, and say how many; their first restore then reads the copy
        only (docs/restore.md#the-digest)."""
        if not self.svc.settings.digest_after_backup:
            print("\ndigest requests: none sent (DIGEST_AFTER_BACKUP=false; a point's first restore reads its "
                  "snapshots too)")
            return
        ids = {j.job_id for j in jobs}
        expected = sum(1 for vm in {j.vm_name for j in jobs} for p in self.svc.recovery_points.list_for_vm(vm)
                       if p.job_id in ids and p.blob_snapshots)
        served, deadline = 0, time.monotonic() + 60
        while served < expected and time.monotonic() < deadline:
            _pause(0)               # Ctrl-C while the requests are served stops here too, not 60 s later
            served += self.host.drain_queue(DIGESTS, max_wait=0.5)
        print(f"\ndigest requests served: {served} of {expected} (a point of blob snapshots has its snapshots read "
              f"once, so its restores verify by reading the copy only)")

    def _restore_point_complete(self) -> bool:
        points = self.compute.restore_points(self.demo_md_vm.name)
        return len(points) == 1 and points[0].state == "Succeeded" and \
            sorted(d.disk.lun for d in points[0].disk_points) == sorted(d.lun for d in self.demo_md_vm.disks)

    def stop(self) -> None:
        if self.settings_file is not None:
            self.settings_file.unlink(missing_ok=True)
        if self.host is not None:
            self.host.stop()
        if self.compute is not None:
            self.compute.stop()
        if self.webhook is not None:
            self.webhook.stop()
        if self.vm_root is not None:
            stop_processes_under(self.vm_root)
        if self.servicebus is not None:
            self.servicebus.stop()
        if self.azurite is not None:
            self.azurite.stop()


if __name__ == "__main__":
    sys.exit(main())
