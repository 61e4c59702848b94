"""Bursts of on-demand tasks for one VM on the local stack (the Function App under the local host, the local
Service Bus, Azurite, the bundled handler): at most three successful on-demand backups a UTC day, and never
two backups of the VM at once, judged from the job records, the handler's own run logs and the snapshots."""
from __future__ import annotations

import re
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from devhost.demo import create_demo_vm, disk_snapshots
from shared.domain import remediation
from shared.domain.jobs import Job, JobStatus, job_id_for
from shared.domain.task import SnapshotTask, Trigger
from tests.polling import eventually

BURST = 6
BURSTS = 4      # three to reach the limit, one to find it
# A run-log line of the bundled handler: "<UTC date> <time.micro>  <Level>  <message> ".
RUN_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6})  ")


def _burst(svc, vm_name: str) -> list[SnapshotTask]:
    """Six on-demand tasks for the VM, as someone puts them on the queue by hand, sent in one batch."""
    now = datetime.now(timezone.utc)
    tasks = [SnapshotTask(job_id=job_id_for(vm_name, now + timedelta(milliseconds=n), Trigger.ON_DEMAND.value),
                          attempt=1, vm_name=vm_name, slot=now + timedelta(milliseconds=n), trigger=Trigger.ON_DEMAND,
                          retain_until=now + timedelta(days=30)) for n in range(BURST)]
    svc.task_queue.send(tasks)
    return tasks


def _run_until_final(svc, host, job_ids: list[str], timeout: float = 120.0) -> list[Job]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        host.drain_queue("dispatch_snapshot", max_wait=0.2)
        host.scan_blobs("ingest_status")
        jobs = [svc.jobs.get(job_id) for job_id in job_ids]
        if all(j is not None and j.is_terminal for j in jobs):
            return jobs
        time.sleep(0.2)
    pytest.fail(f"burst not finished in {timeout} s: {[(j.job_id, j.status.value) for j in jobs if j]}")


def _handler_run(svc, job: Job) -> tuple[datetime, datetime]:
    """When the VM's handler ran this job's command: the first and last lines of the run log it uploaded."""
    def uploaded() -> str:
        text = svc.status_blobs.read(job.log_blob).decode()
        return text if "Tail of shell script log" in text else ""

    assert eventually(uploaded, timeout=30), f"job {job.job_id}: the handler uploaded no run log"
    run = uploaded().split("Tail of shell script log", 1)[0]
    stamps = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
              for m in map(RUN_LOG_LINE.match, run.splitlines()) if m]
    assert any(job.task_id in line for line in run.splitlines()), "the run log is another task's"
    return stamps[0], stamps[-1]


def _snapshot_time(snapshot_uri: str) -> datetime:
    stamp = snapshot_uri.split("snapshot=", 1)[1]
    return datetime.strptime(stamp[:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc)


def test_bursts_of_on_demand_tasks_give_three_backups_a_day_never_two_at_once(loop):
    """Six on-demand tasks for one VM in one burst: one backup runs, the others fail naming it. Burst again
    after each backup: three succeed in a UTC day and the fourth burst is refused by the limit. No two
    backups' dispatch..end intervals overlap, nor the handler's runs, and each snapshot lies in its own."""
    svc, host = loop
    vm = create_demo_vm(svc, "burst-vm")

    jobs: list[Job] = []
    for _ in range(BURSTS):
        burst = _run_until_final(svc, host, [t.job_id for t in _burst(svc, vm.name)])
        jobs += burst
        ran = [j for j in burst if j.dispatched_at is not None]
        assert len(ran) <= 1, f"{len(ran)} backups of one burst reached the VM"
        refused = [j for j in burst if j.dispatched_at is None]
        assert {j.errors[0].error_code for j in refused} <= {remediation.OPERATION_IN_PROGRESS,
                                                            remediation.ON_DEMAND_LIMIT}

    completed = [j for j in jobs if j.status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS)]
    per_day = Counter(j.dispatched_at.date() for j in completed)
    assert max(per_day.values()) <= 3, per_day
    if len({j.dispatched_at.date() for j in jobs if j.dispatched_at}) == 1:     # not across midnight UTC
        assert len(completed) == 3
        assert {j.errors[0].error_code for j in jobs[-BURST:]} == {remediation.ON_DEMAND_LIMIT}

    dispatched = sorted((j for j in jobs if j.dispatched_at is not None), key=lambda j: j.dispatched_at)
    runs = [_handler_run(svc, j) for j in dispatched]
    for job, (started, ended) in zip(dispatched, runs):
        # The end of a job is its final status's timestamp, which the handler writes to the second.
        assert job.dispatched_at <= started <= ended < job.end_time + timedelta(seconds=1), job.job_id
        for disk in job.disks:
            assert started <= _snapshot_time(disk.snapshot_uri) <= ended, (job.job_id, disk.snapshot_uri)
    for before, after in zip(dispatched, dispatched[1:]):
        assert before.end_time <= after.dispatched_at, f"{before.job_id} and {after.job_id} overlap"
    for (_, ended), (started, _) in zip(runs, runs[1:]):
        assert ended < started
    # The disks themselves: one snapshot each per backup that ran, none from a backup that was refused.
    assert {len(snapshots) for snapshots in disk_snapshots(svc, vm).values()} == {len(dispatched)}
