"""Benchmark status ingestion: blobs parsed per second (the pure parser), and blobs ingested per second
end to end (blob read from Azurite, parse, ETag-guarded job update in Table storage).

Run: .venv/bin/python bench/bench_ingest.py [--jobs 500] [--create 10000]. Starts and stops its own Azurite.
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devhost.azurite import Azurite  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.clock import FixedClock  # noqa: E402
from shared.domain.jobs import DiskResult, Job, JobStatus, mark_dispatched  # noqa: E402
from shared.domain.status import ParseError, parse_status_blob  # noqa: E402
from shared.services.ingestion import IngestResult, ingest_status_blob  # noqa: E402
from shared.settings import Settings  # noqa: E402

CORPUS = ROOT / "tests" / "jobs" / "corpus"
CORPUS_JOB = b"01954f6e-8d00-8bcd-91c5-3d28beef679b"
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


def bench_end_to_end(svc: Services, jobs: int) -> dict[str, float]:
    container = svc.blob_service.get_container_client(svc.settings.status_container)
    container.create_container()
    running_tpl = (CORPUS / "01-running-code4.txt").read_bytes()
    final_tpl = (CORPUS / "06-failed-partial-76-761.txt").read_bytes()
    records = []
    for i in range(jobs):
        job = Job.new_backup(vm_name=f"bench-vm{i:05d}", slot=SLOT, now=SLOT)
        job = mark_dispatched(job, attempt=1, task_id=f"{job.job_id}_1", status_blob=f"{job.job_id}/1.Status.txt",
                              log_blob=f"{job.job_id}/1.Logs.txt", now=SLOT,
                              disks=[DiskResult(-1, "https://a/v/os.vhd"), DiskResult(0, "https://a/v/d.vhd")])
        records.append(job)
    svc.jobs.create_many_if_absent(records)
    names = [job.status_blob for job in records]

    def write_all(template: bytes) -> None:
        for job in records:
            container.upload_blob(job.status_blob, template.replace(CORPUS_JOB, job.job_id.encode()), overwrite=True)

    figures = {}
    for label, template in (("running", running_tpl), ("final", final_tpl)):
        write_all(template)
        start = time.perf_counter()
        for name in names:
            downloader = container.get_blob_client(name).download_blob()
            outcome = ingest_status_blob(svc, name, downloader.readall(), downloader.properties.etag)
            assert outcome.result is IngestResult.APPLIED, outcome
        figures[label] = jobs / (time.perf_counter() - start)
    start = time.perf_counter()
    for name in names:       # the trigger firing again for the same blob: a read, no write
        downloader = container.get_blob_client(name).download_blob()
        ingest_status_blob(svc, name, downloader.readall(), downloader.properties.etag)
    figures["replay"] = jobs / (time.perf_counter() - start)
    assert all(svc.jobs.get(job.job_id).status is JobStatus.FAILED for job in records[:20])
    return figures


def bench_create(svc: Services, count: int) -> float:
    slot = SLOT + timedelta(hours=5)
    jobs = [Job.new_backup(vm_name=f"tick-vm{i:05d}", slot=slot, now=slot) for i in range(count)]
    start = time.perf_counter()
    created = svc.jobs.create_many_if_absent(jobs)
    elapsed = time.perf_counter() - start
    assert all(created)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs (status blobs) for the end-to-end run")
    parser.add_argument("--create", type=int, default=10000, help="jobs created in one create_many call")
    args = parser.parse_args()

    rate, variants = bench_parser()
    print(f"parser: {rate:,.0f} status blobs/s (pure parse_status_blob over {variants} corpus variants)")
    with Azurite() as azurite:
        settings = Settings.from_env({"BackupStorage": azurite.connection_string, "TABLE_PREFIX": "bench",
                                      "STATUS_CONTAINER": "bench-status",
                                      "ServiceBusConnection": "Endpoint=sb://127.0.0.1:1;"})
        svc = Services(settings, clock=FixedClock(SLOT + timedelta(minutes=5)))
        figures = bench_end_to_end(svc, args.jobs)
        print(f"end to end over {args.jobs} jobs (blob download + parse + ETag-guarded table update):")
        print(f"  in-progress write:  {figures['running']:,.0f} blobs/s")
        print(f"  final write:        {figures['final']:,.0f} blobs/s")
        print(f"  replay (no change): {figures['replay']:,.0f} blobs/s")
        elapsed = bench_create(svc, args.create)
        print(f"create_many_if_absent: {args.create:,} jobs of one tick in {elapsed:.2f} s "
              f"({args.create / elapsed:,.0f} jobs/s, job rows + VM index rows)")


if __name__ == "__main__":
    main()
