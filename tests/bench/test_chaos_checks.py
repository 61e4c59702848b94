"""What bench/chaos.py asserts, read from storage as it reads it: each disk of a completed job has the
snapshot of the job's own taskId (not merely some disk, or another attempt), unstamped snapshots are
found, and the CPU hog beside it leaves no process behind."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bench.chaos import _missing_disk_snapshots, _snapshots
from bench.cpu_hog import CpuHog
from devhost.demo import DISK_CONTAINER, create_demo_vm
from shared.bootstrap import Services
from shared.domain.jobs import DiskResult, Job, JobStatus

pytestmark = pytest.mark.integration       # Azurite, and processes for the hog


def test_each_disk_of_a_completed_job_needs_the_snapshot_of_its_own_task(make_settings, unique_name):
    """The OS disk has attempt 1's snapshot, the data disk only attempt 2's and an unstamped one: the
    data disk is reported, both attempts count as snapshotted, and the unstamped snapshot is listed."""
    svc = Services(make_settings())
    vm = create_demo_vm(svc, unique_name("chk"))
    now = datetime.now(timezone.utc)
    job = Job.new_backup(vm_name=vm.name, slot=now, now=now)
    os_disk, data_disk = (svc.blob_service.get_blob_client(DISK_CONTAINER, d.name) for d in vm.disks)
    taken = os_disk.create_snapshot(metadata={"jobId": job.job_id, "taskId": f"{job.job_id}_1"})
    other = data_disk.create_snapshot(metadata={"jobId": job.job_id, "taskId": f"{job.job_id}_2"})
    data_disk.create_snapshot()
    job = replace(job, status=JobStatus.COMPLETED, task_id=f"{job.job_id}_1", disks=[
        DiskResult(lun=-1, blob_url=os_disk.url, status="Completed",
                   snapshot_uri=f"{os_disk.url}?snapshot={taken['snapshot']}"),
        DiskResult(lun=0, blob_url=data_disk.url, status="Completed",
                   snapshot_uri=f"{data_disk.url}?snapshot={other['snapshot']}")])

    by_task_disk, tasks_of_job, unstamped = _snapshots(svc.blob_service)
    checked, missing = _missing_disk_snapshots(svc, job, by_task_disk)

    assert checked == 2 and len(missing) == 1 and data_disk.blob_name in missing[0], missing
    assert tasks_of_job[job.job_id] == {f"{job.job_id}_1", f"{job.job_id}_2"}
    assert [url for url in unstamped if data_disk.blob_name in url]


def test_the_cpu_hog_spins_its_processes_and_stops_every_one():
    """Two spinning processes while the block runs; none left once it ends."""
    with CpuHog(2) as hog:
        pids = hog.pids
        assert len(pids) == 2 and all(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
