"""Benchmark the whole backup loop on the local stack: backups per minute for a fleet of local VMs.

Each run starts its own Azurite and local Service Bus, registers ``--vms`` local VMs (two page-blob
disks each, as ``./dev run``'s demo VM), protects them with DefaultPolicy and runs the Function App
under the local host with the settings of ``host.json``: one scheduling tick (the timer, fired once),
then the worker (``dispatch_snapshot``, which runs the bundled handler's enable) and the blob trigger
(``ingest_status``) until every job is final. Backups per minute = completed jobs / seconds from the
tick's start to the last job turning final x 60.

Where time goes, per run: the tick; the worker (its invocations, the share spent handing the command
to the VM, and how busy its maxConcurrentCalls slots were); the extension (dispatch to final report,
what the handler's daemon takes); the blob trigger (its invocations, and final report to final job).
The loop is CPU-bound on a small machine, so it also prints the CPU each backup costs, by process:
this one (the host's worker and blob trigger, the local Service Bus, the tick, this bench's polling
of the jobs every 2 s), Azurite, the
handler's enable (the dispatcher's child) and its daemon (detached; this process adopts it as Linux
child subreaper to reap it and read its CPU time).

Run: .venv/bin/python bench/bench_loop.py [--vms 200] [--runs 3] [--log FILE]. ``--log`` writes the
functions' and the host's log (INFO, redacted as in the app) to FILE, to follow a job that did not
end. Leaves no process behind.
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._jobs import all_jobs  # noqa: E402
from devhost.azurite import Azurite  # noqa: E402
from devhost.demo import create_demo_vm  # noqa: E402
from devhost.host import HostConfig, LocalFunctionsHost  # noqa: E402
from devhost.processes import cpu_seconds, interrupt_on_sigterm, stop_processes_under  # noqa: E402
from devhost.servicebus import LocalServiceBus  # noqa: E402

if TYPE_CHECKING:
    from shared.adapters.dispatch_local import LocalDispatcher

T = TypeVar("T")

WORKER, INGEST, TICK = "dispatch_snapshot", "ingest_status", "schedule_backups"
# No timer fires by itself during a run (1 January, midnight): the bench fires the tick once.
NEVER = "0 0 0 1 1 *"
PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Calls:
    """Wall-clock spans (start, end; perf_counter) of one kind of call, from many threads, and when
    (time of day) the last call about each blob ended."""

    spans: list[tuple[float, float]] = field(default_factory=list)
    last_end_by_blob: dict[str, datetime] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, call: Callable[..., T]) -> Callable[..., T]:
        def run(*args, **kwargs):
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                ended, now = time.perf_counter(), datetime.now(timezone.utc)
                blob = kwargs.get("blob")
                with self.lock:
                    self.spans.append((started, ended))
                    if blob is not None:
                        self.last_end_by_blob[blob.name.partition("/")[2]] = now
        return run

    @property
    def durations(self) -> list[float]:
        return [end - start for start, end in self.spans]


class DaemonCpu:
    """The handler's daemons, adopted when their enable exits (this process is their child
    subreaper), reaped, and their CPU seconds added up. Daemons run in sessions of their own, which
    tells them from this process's other children (enable, Azurite)."""

    def __init__(self) -> None:
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "cannot become child subreaper")
        self.seconds = 0.0
        self.reaped = 0

    def reap(self, timeout: float = 60) -> None:
        """Wait for every adopted daemon to end (at most ``timeout`` s) and add up its CPU."""
        deadline = time.monotonic() + timeout
        while (pids := self._adopted()) and time.monotonic() < deadline:
            for pid in pids:
                ended, _, usage = os.wait4(pid, os.WNOHANG)
                if ended:
                    self.seconds += usage.ru_utime + usage.ru_stime
                    self.reaped += 1
            time.sleep(0.1)

    @staticmethod
    def _adopted() -> list[int]:
        me, session = os.getpid(), os.getsid(0)
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and int(fields[3]) != session:
                found.append(int(entry))
        return found


class TimedDispatcher:
    """The local dispatcher, its calls timed: the handover to the VM inside each worker call."""

    def __init__(self, dispatcher: LocalDispatcher, calls: Calls):
        self.dispatch = calls.timed(dispatcher.dispatch)


@dataclass
class RunFigures:
    vms: int
    completed: int
    stuck: list[str]             # jobs not final when the run timed out
    failed: int
    tick: float
    to_all_dispatched: float
    to_all_final: float
    worker: list[float]
    handover: list[float]
    worker_busy: float           # share of the worker's slots in use while it had work
    extension: list[float]       # dispatched_at -> the final report's time, per job
    ingest: list[float]
    ingest_lag: list[float]      # the final report's time -> the job turning final (its ingest ending)
    cpu_bench: float
    cpu_azurite: float
    cpu_enable: float
    cpu_daemon: float
    daemons: int

    @property
    def per_minute(self) -> float:
        return self.completed / self.to_all_final * 60

    @property
    def cpu_per_backup(self) -> float:
        return (self.cpu_bench + self.cpu_azurite + self.cpu_enable + self.cpu_daemon) / self.vms


def _environment(azurite: Azurite, bus: LocalServiceBus, vm_root: Path) -> dict[str, str]:
    from shared.settings import Settings

    chosen = {"BackupStorage": azurite.connection_string, "AzureWebJobsStorage": azurite.connection_string,
              "ServiceBusConnection": bus.connection_string, "FUNCTIONS_WORKER_RUNTIME": "python",
              "DISPATCHER": "local", "LOCAL_VM_ROOT": str(vm_root), "TABLE_PREFIX": "loop",
              "SNAPSHOT_SCHEDULE": NEVER, "SWEEP_SCHEDULE": NEVER, "RESTORE_POINT_SCHEDULE": NEVER,
              "RETENTION_SCHEDULE": NEVER}
    return {**Settings.from_env(chosen).binding_values(), **chosen}


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    return cpu_seconds(pid) or 0.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(run: int, vm_count: int, timeout: float, daemons: DaemonCpu) -> RunFigures:
    import function_app
    from shared.adapters.dispatch_local import LocalDispatcher
    from shared.bootstrap import Services, reset_services
    from shared.domain.jobs import JobStatus
    from shared.services.protection import enable_protection
    from shared.settings import Settings, reset_settings

    work = Path(tempfile.mkdtemp(prefix="vmsnap-loop-"))
    vm_root = work / "vms"
    with Azurite() as azurite, LocalServiceBus() as bus:
        host = None
        try:
            env = _environment(azurite, bus, vm_root)
            os.environ.update(env)     # the functions read their settings from the environment, as in Azure
            reset_settings()
            handover = Calls()
            svc = Services(Settings.from_env(env),
                           dispatcher=TimedDispatcher(LocalDispatcher(vm_root), handover))
            reset_services(svc)
            names = [f"loop-vm{i:04d}" for i in range(vm_count)]

            def protect(name: str) -> None:
                create_demo_vm(svc, name)
                enable_protection(svc, name, "DefaultPolicy")

            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(protect, names))

            host = LocalFunctionsHost(function_app.app, env, HostConfig.from_host_json(ROOT / "host.json"),
                                      host_id=f"bench-loop-{run}")
            worker, ingest = Calls(), Calls()
            for name, calls in ((WORKER, worker), (INGEST, ingest)):
                spec = host.functions[name]
                host.functions[name] = dataclasses.replace(spec, call=calls.timed(spec.call))
            host.start()
            daemons.reap()      # none yet: nothing earlier is counted in this run
            daemon_cpu, daemon_count = daemons.seconds, daemons.reaped

            def cpu() -> tuple[float, float, float]:
                assert azurite._proc is not None
                return time.process_time(), _process_cpu(azurite._proc.pid), _children_cpu()

            cpu_start = cpu()
            started = time.perf_counter()
            host.fire_timer(TICK)
            tick = time.perf_counter() - started
            deadline = started + timeout
            jobs: list = []
            final, cpu_end = 0, cpu_start
            while time.perf_counter() < deadline:
                jobs = all_jobs(svc)
                if (now_final := sum(1 for j in jobs if j.status.is_terminal)) > final:
                    # CPU up to the last progress: a run that times out does not count its idle wait.
                    final, cpu_end = now_final, cpu()
                if len(jobs) >= vm_count and final == len(jobs):
                    break
                time.sleep(2)   # each poll reads every job: often enough, the end time comes from the spans
            # Past the timeout, the jobs still open are reported (a loop that loses a job is a finding),
            # and the figures cover the jobs that did end.
            stuck = [f"{j.vm_name} (job {j.job_id}, {j.phase.value})" for j in jobs if not j.status.is_terminal]
            if len(jobs) < vm_count:
                stuck.append(f"{vm_count - len(jobs)} VMs without a job")
            cpu_bench, cpu_azurite, cpu_enable = (end - start for start, end in zip(cpu_start, cpu_end))
            host.stop()
            host = None
            daemons.reap()

            # The last job turned final when the ingest invocation that made it so ended.
            finished = max(end for _, end in ingest.spans)
            worker_window = max(end for _, end in worker.spans) - min(start for start, _ in worker.spans)
            slots = HostConfig.from_host_json(ROOT / "host.json").max_concurrent_calls
            reported = [j for j in jobs if j.dispatched_at and j.last_report_at]
            return RunFigures(
                vms=vm_count,
                completed=sum(1 for j in jobs if j.status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS)),
                stuck=stuck,
                failed=sum(1 for j in jobs if j.status is JobStatus.FAILED),
                tick=tick,
                to_all_dispatched=max(end for _, end in worker.spans) - started,
                to_all_final=finished - started,
                worker=worker.durations,
                handover=handover.durations,
                worker_busy=sum(worker.durations) / (worker_window * slots),
                extension=[(j.last_report_at - j.dispatched_at).total_seconds() for j in reported],
                ingest=ingest.durations,
                ingest_lag=[(ingest.last_end_by_blob[j.status_blob] - j.last_report_at).total_seconds()
                            for j in reported if j.status_blob in ingest.last_end_by_blob],
                cpu_bench=cpu_bench,
                cpu_azurite=cpu_azurite,
                cpu_enable=cpu_enable,
                cpu_daemon=daemons.seconds - daemon_cpu,
                daemons=daemons.reaped - daemon_count,
            )
        finally:
            if host is not None:
                host.stop()
            stop_processes_under(vm_root)
            reset_services()
            shutil.rmtree(work, ignore_errors=True)


def _spread(values: list[float]) -> str:
    if not values:
        return "none"
    return f"min {min(values):.3f}  median {statistics.median(values):.3f}  max {max(values):.3f}"


def _print_run(run: int, f: RunFigures) -> None:
    print(f"run {run + 1}: {f.completed} of {f.vms} backups completed ({f.failed} failed) in {f.to_all_final:.1f} s: "
          f"{f.per_minute:.0f} backups/min", flush=True)
    if f.stuck:
        print(f"  NOT FINAL after the timeout: {len(f.stuck)}: {', '.join(f.stuck)}")
    print(f"  tick {f.tick:.1f} s; last dispatch ended at {f.to_all_dispatched:.1f} s")
    print(f"  CPU ms per backup: {f.cpu_per_backup * 1000:.0f} (host, Service Bus, tick, polling {f.cpu_bench / f.vms * 1000:.0f}; "
          f"Azurite {f.cpu_azurite / f.vms * 1000:.0f}; enable {f.cpu_enable / f.vms * 1000:.0f}; "
          f"daemon {f.cpu_daemon / max(f.daemons, 1) * 1000:.0f}, {f.daemons} daemons)")
    print(f"  worker: {len(f.worker)} calls, s each {_spread(f.worker)}; slots busy {f.worker_busy:.0%}")
    print(f"    of which handing the command to the VM (seal, lay out, enable) {_spread(f.handover)}")
    print(f"  extension, dispatch to final report:  {_spread(f.extension)}")
    print(f"  blob trigger: {len(f.ingest)} calls, s each {_spread(f.ingest)}")
    print(f"    final report to final job:  {_spread(f.ingest_lag)}", flush=True)


def _log_to(path: Path) -> None:
    # The app's redaction is a log-record factory (shared.logs), so this file gets redacted records too.
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(levelname)s %(name)s: %(message)s"))
    for name in ("shared", "functions", "devhost"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=200, help="local VMs protected (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs (default %(default)s)")
    parser.add_argument("--log", type=Path, metavar="FILE", help="write the app's and the host's INFO log here")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds a run may take; jobs still open then are reported (default %(default)s)")
    args = parser.parse_args()
    if args.log:
        _log_to(args.log)
    figures = []
    daemons = DaemonCpu()
    for run in range(args.runs):
        figures.append(one_run(run, args.vms, args.timeout, daemons))
        _print_run(run, figures[-1])
    print(f"backups per minute, {args.vms} VMs, one tick, {args.runs} runs: {_spread([f.per_minute for f in figures])}")
    print(f"seconds to the last final job: {_spread([f.to_all_final for f in figures])}")
    print(f"CPU seconds per backup, all processes: {_spread([f.cpu_per_backup for f in figures])} "
          f"({os.cpu_count()} cores here)")


if __name__ == "__main__":
    interrupt_on_sigterm()
    main()
