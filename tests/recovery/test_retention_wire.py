"""What a retention run reads from Table Storage, counted on the wire (HTTP answers, below the product's
code) on Azurite: every job row of the window, every point and every item once."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from azure.data.tables import TableServiceClient

from bench._http import CountingTransport
from shared.adapters.table_recovery import point_entity
from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.jobs import DiskResult, Job, JobPhase, JobStatus
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import point_from_job
from shared.domain.shards import shard_of
from shared.services.retention import run_retention
from tests.recovery.fakes import FakeSnapshots, FakeStatusArchive

pytestmark = pytest.mark.long


class Snapshots(FakeSnapshots):
    """Every snapshot a point names is there, until deleted (the blob side is not what is counted here)."""

    def snapshot_exists(self, snapshot_url: str) -> bool:
        return snapshot_url not in self.delete_calls

    def delete_snapshot(self, snapshot_url: str) -> bool:
        self.delete_calls[snapshot_url] += 1
        return True


FIRST = datetime(2026, 3, 1, 22, 30, tzinfo=timezone.utc)       # DefaultPolicy: daily at 22:30 UTC, 30 days
VMS, DAYS = 100, 35


def test_a_run_reads_each_job_point_and_item_row_once(make_settings):
    """100 VMs x 35 days of jobs (3,500 rows, more than a page of 1,000) in every shard: the run
    transfers each job row, point row and item row once, not a page per shard for every page."""
    settings = make_settings()
    transport = CountingTransport()
    tables = TableServiceClient.from_connection_string(settings.storage.connection_string, transport=transport)
    svc = Services(settings, clock=FixedClock(FIRST + timedelta(days=DAYS - 1, hours=1)), table_service=tables,
                   snapshots=Snapshots(), status_archive=FakeStatusArchive())
    names = [f"wire{n:03d}" for n in range(VMS)]
    assert len({shard_of(name) for name in names}) == 16
    svc.protected_items.add_many([ProtectedItem(vm_name=name, policy_name="DefaultPolicy", protected_since=FIRST,
                                                policy_assigned_at=FIRST) for name in names])
    tables.create_table_if_not_exists(settings.table("points"))
    points = tables.get_table_client(settings.table("points"))
    jobs = []
    for name in names:
        mine = []
        for day in range(DAYS):
            slot = FIRST + timedelta(days=day)
            job = Job.new_backup(vm_name=name, slot=slot, now=slot, policy_name="DefaultPolicy")
            job.status, job.phase, job.end_time = JobStatus.COMPLETED, JobPhase.DONE, slot + timedelta(minutes=5)
            url = f"http://127.0.0.1/devstoreaccount1/vhds/{name}-os.vhd"
            job.disks = [DiskResult(-1, url, "Completed", f"{url}?snapshot={slot.isoformat()}")]
            mine.append(job)
        points.submit_transaction([("create", point_entity(point_from_job(job))) for job in mine])
        jobs += mine
    svc.jobs.create_many_if_absent(jobs)
    transport.rows.clear()

    result = run_retention(svc)

    assert len(result.points_deleted) == VMS * (DAYS - 30) == len(svc.snapshots.delete_calls)
    read = {table.removeprefix(settings.table_prefix): rows for table, rows in transport.rows.items()}
    assert {table: read.pop(table, 0) for table in ("jobs", "points", "items")} == {
        "jobs": VMS * DAYS, "points": VMS * DAYS, "items": VMS}
    assert sum(read.values()) <= 2, read        # the policies
