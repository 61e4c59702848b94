"""Benchmark how results are recovered: (1) how long after a table outage ends the blob trigger's own
retries record the result, and (2) how fast the sweep re-ingests status blobs the trigger never
applied (jobs per second, blob read + parse + ETag-guarded update).

Run: .venv/bin/python bench/bench_recovery.py [--outage 20] [--jobs 200] [--runs 3]. Starts and stops
its own Azurite; the outage is a TCP proxy in front of Azurite's table port.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devhost.azurite import Azurite  # noqa: E402
from devhost.processes import interrupt_on_sigterm  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.clock import FixedClock  # noqa: E402
from shared.domain.job_transitions import mark_dispatched  # noqa: E402
from shared.domain.jobs import DiskResult, Job, JobStatus  # noqa: E402
from shared.services.ingestion import ingest_with_retries  # noqa: E402
from shared.services.sweeping import sweep_stale_jobs  # noqa: E402
from shared.settings import Connection, Settings  # noqa: E402
from bench._jobs import known, status_blob_of  # noqa: E402
from tests.faults.proxy import TcpProxy  # noqa: E402

CORPUS = ROOT / "tests" / "jobs" / "corpus"
CORPUS_JOB = "01954f6e-8d00-87cd-91c5-3d28beef679b"
SLOT = datetime(2025, 3, 1, 2, 0, tzinfo=timezone.utc)
COMPLETED = (CORPUS / "02-completed-fs-two-disks.txt").read_bytes()


def settings_for(conn: str, name: str) -> Settings:
    return Settings.from_env({"BackupStorage": conn, "ServiceBusConnection": "Endpoint=sb://127.0.0.1:1;",
                              "TABLE_PREFIX": name, "STATUS_CONTAINER": f"status-{name}"})


def dispatched(vm: str) -> Job:
    job = Job.new_backup(vm_name=vm, slot=SLOT, now=SLOT)
    return known(mark_dispatched(job, attempt=1, task_id=f"{job.job_id}_1", status_blob=f"{job.job_id}/1.Status.txt",
                                 log_blob=f"{job.job_id}/1.Logs.txt", now=SLOT,
                                 disks=[DiskResult(lun=-1, blob_url="http://x/os.vhd"),
                                        DiskResult(lun=0, blob_url="http://x/d")]))


def outage_recovery(azurite: Azurite, outage: float, run: int) -> float:
    """Seconds from the end of a table outage to the job being Completed by the running trigger."""
    settings = settings_for(azurite.connection_string, f"rec{run}x{int(time.time()) % 100000}")
    direct = Services(settings)
    job = known(mark_dispatched(Job.new_backup(vm_name="vm1", slot=SLOT, now=SLOT), attempt=1,
                                task_id=f"{CORPUS_JOB}_1", status_blob=f"{CORPUS_JOB}/1.Status.txt",
                                log_blob=f"{CORPUS_JOB}/1.Logs.txt", now=SLOT))
    assert job.job_id == CORPUS_JOB and direct.jobs.create_if_absent(job)
    with TcpProxy(azurite.table_port) as proxy:
        conn = azurite.connection_string.replace(f":{azurite.table_port}/", f":{proxy.port}/")
        svc = Services(dataclasses.replace(settings, storage=Connection("BackupStorage", conn)))
        proxy.down("refuse")
        worker = threading.Thread(target=ingest_with_retries,
                                  args=(svc, f"{CORPUS_JOB}/1.Status.txt", COMPLETED, None))
        worker.start()
        time.sleep(outage)
        proxy.up()
        ended = time.perf_counter()
        worker.join()
        recovered = time.perf_counter() - ended
    assert known(direct.jobs.get(CORPUS_JOB)).status is JobStatus.COMPLETED
    return recovered


def sweep_rate(azurite: Azurite, jobs: int, run: int) -> float:
    """Jobs per second the sweep re-ingests (each has a completed status blob the trigger never saw)."""
    settings = settings_for(azurite.connection_string, f"swp{run}x{int(time.time()) % 100000}")
    svc = Services(settings, clock=FixedClock(SLOT + timedelta(hours=1)))
    records = [dispatched(f"vm-{i:05d}") for i in range(jobs)]
    svc.jobs.create_many_if_absent(records)
    container = svc.blob_service.get_container_client(settings.status_container)
    container.create_container()
    for job in records:
        container.upload_blob(status_blob_of(job),
                              COMPLETED.replace(f"{CORPUS_JOB}_1".encode(), str(job.task_id).encode()))
    start = time.perf_counter()
    result = sweep_stale_jobs(svc)
    elapsed = time.perf_counter() - start
    assert len(result.reingested) == jobs, result
    return jobs / elapsed


def spread(values: list[float]) -> str:
    return f"min {min(values):.2f}  median {statistics.median(values):.2f}  max {max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=20.0, help="seconds the table is down")
    parser.add_argument("--jobs", type=int, default=200, help="jobs whose blobs the sweep re-ingests")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with Azurite() as azurite:
        recoveries = [outage_recovery(azurite, args.outage, run) for run in range(args.runs)]
        rates = [sweep_rate(azurite, args.jobs, run) for run in range(args.runs)]
    print(f"result recorded after a {args.outage:.0f} s table outage ended, s ({args.runs} runs): {spread(recoveries)}")
    print(f"sweep re-ingestion of {args.jobs} jobs, jobs/s ({args.runs} runs): {spread(rates)}")


if __name__ == "__main__":
    interrupt_on_sigterm()
    main()
