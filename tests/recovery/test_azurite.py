"""The real adapters on Azurite: the recovery point table, blob snapshots, concurrent retention runs,
status blob retention and the snapshot limit guard."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from shared.adapters.snapshots import BlobSnapshots
from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.inventory import Disk, Vm, VmKind
from shared.domain.jobs import AttemptOutcome, AttemptRecord, DiskResult, Job, JobStatus
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import DiskSnapshot, PointState, RecoveryPoint, Rule, recovery_point_name
from shared.errors import ValidationError
from shared.services.recovery import disk_guard_error
from shared.services.retention import plan_retention, run_retention

T0 = datetime(2026, 1, 1, 22, 30, tzinfo=timezone.utc)
DAYS = 10


class CountingSnapshots(BlobSnapshots):
    """The real adapter, noting each delete's outcome (shared by the two concurrent runs)."""

    calls: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def delete_snapshot(self, snapshot_url: str) -> bool:
        deleted = super().delete_snapshot(snapshot_url)
        with self.lock:
            self.calls.append((snapshot_url, deleted))
        return deleted


@pytest.fixture
def world(make_settings, unique_name):
    """A protected VM with two page-blob disks and one recovery point (two real snapshots) a day for 10 days."""
    settings = make_settings()
    svc = Services(settings, clock=FixedClock(T0))
    container = svc.blob_service.get_container_client(unique_name("vhds"))
    container.create_container()
    vm_name = unique_name("rpvm")
    blobs = []
    for lun in (-1, 0):
        blob = container.get_blob_client(f"{vm_name}-lun{lun}.vhd")
        blob.create_page_blob(1024)
        blobs.append((lun, blob))
    svc.protected_items.add(ProtectedItem(vm_name=vm_name, policy_name="DefaultPolicy", protected_since=T0,
                                          policy_assigned_at=T0))
    for day in range(DAYS):
        job_id = f"job-{vm_name}-{day}"
        disks = []
        for lun, blob in blobs:
            blob.upload_page(f"day {day}".encode().ljust(512, b"\0"), offset=0, length=512)
            snap = blob.create_snapshot(metadata={"jobId": job_id})
            disks.append(DiskSnapshot(lun=lun, source=blob.url, snapshot=f"{blob.url}?snapshot={snap['snapshot']}",
                                      snapshot_time=snap["snapshot"]))
        assert svc.recovery_points.add_if_absent(RecoveryPoint(
            name=recovery_point_name(job_id), vm_name=vm_name, created_at=T0 + timedelta(days=day), job_id=job_id,
            policy_name="DefaultPolicy", disks=tuple(disks)))
    return svc, vm_name, [b for _, b in blobs]


def test_points_of_a_vm_come_newest_first_and_filter_by_time(world):
    """recoverypoint list shows the newest point first, and a date range selects exactly its days."""
    svc, vm, _ = world
    points = svc.recovery_points.list_for_vm(vm)
    assert [p.created_at for p in points] == [T0 + timedelta(days=d) for d in reversed(range(DAYS))]
    window = svc.recovery_points.list_for_vm(vm, since=T0 + timedelta(days=2), until=T0 + timedelta(days=5))
    assert [p.created_at for p in window] == [T0 + timedelta(days=d) for d in (4, 3, 2)]
    assert svc.recovery_points.get(vm, points[0].name) == points[0]
    assert not svc.recovery_points.add_if_absent(points[0]), "recording the same job twice made two points"
    assert all("sig=" not in d.snapshot for p in points for d in p.disks)


def test_an_update_from_a_stale_read_is_not_written(world):
    """Two writers of one point: the second, working from an older read, loses instead of overwriting."""
    svc, vm, _ = world
    point = svc.recovery_points.list_for_vm(vm)[-1]
    (first,), lost = svc.recovery_points.save_many([point.claimed(Rule.DAILY, T0)])
    assert not lost and first.state is PointState.DELETING
    saved, lost = svc.recovery_points.save_many([point.claimed(Rule.WEEKLY, T0)])
    assert saved == [] and lost == [point.name]
    assert svc.recovery_points.get(vm, point.name).deleted_by == "Daily"


def test_a_dry_run_plans_exactly_what_a_run_then_deletes_and_changes_nothing(world):
    """retention plan names the expired points and their rule; nothing is touched until retention run."""
    svc, vm, blobs = world
    svc.clock.current = T0 + timedelta(days=40)     # DefaultPolicy: 30 daily points, 2 instant days
    plan = plan_retention(svc)
    expected = {p.name for p in svc.recovery_points.list_for_vm(vm)[1:]}
    assert {a.point_name for a in plan.points} == expected and {a.rule.value for a in plan.points} == {"Daily"}
    assert all(p.is_available for p in svc.recovery_points.list_for_vm(vm))
    assert all(len(svc.snapshots.list_snapshots(b.url)) == DAYS for b in blobs)
    result = run_retention(svc)
    assert set(result.points_deleted) == expected


def test_two_retention_runs_at_once_delete_each_snapshot_once_and_keep_the_base_blobs(world):
    """Two concurrent runs: every expired snapshot is deleted exactly once, the latest point and the disks stay."""
    svc, vm, blobs = world
    later = T0 + timedelta(days=40)
    CountingSnapshots.calls = []
    runs = [Services(svc.settings, clock=FixedClock(later), snapshots=CountingSnapshots(svc.blob_service,
                                                                                       clock=FixedClock(later)))
            for _ in range(2)]
    barrier = threading.Barrier(2)

    def run(s):
        barrier.wait()
        return run_retention(s)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, runs))
    expired = {d.snapshot for p in svc.recovery_points.list_for_vm(vm)[1:] for d in p.disks}
    deleted = [url for url, ok in CountingSnapshots.calls if ok]
    assert sorted(deleted) == sorted(expired), "a snapshot was deleted twice or not at all"
    assert len(CountingSnapshots.calls) == len(expired), "both runs went after the same snapshot"
    assert sum(len(r.points_deleted) for r in results) == DAYS - 1
    points = svc.recovery_points.list_for_vm(vm)
    assert points[0].is_available and all(p.state is PointState.DELETED and p.deleted_by == "Daily"
                                          for p in points[1:])
    for blob in blobs:
        assert blob.exists() and len(svc.snapshots.list_snapshots(blob.url)) == 1
    assert run_retention(runs[0]).points_deleted == [], "a second run deleted more"


def test_no_digest_outlives_its_point_retention_deletes_them_with_the_snapshots(world):
    """Each point's snapshots verified once (their digests recorded); retention deletes the expired points'
    digests with their snapshots, and keeps the latest point's."""
    from shared.adapters.verification import DIGEST_CONTAINER

    svc, vm, blobs = world
    points = svc.recovery_points.list_for_vm(vm)
    for point in points:
        for disk in point.disks:
            assert svc.disk_copier.verify(disk.snapshot, disk.snapshot).digest == "recorded"
    digests = svc.blob_service.get_container_client(DIGEST_CONTAINER)

    def recorded() -> set[str]:
        prefix = blobs[0].container_name + "/"
        return {b.name.split("@", 1)[1] for b in digests.list_blobs(name_starts_with=prefix)}

    assert recorded() == {d.snapshot_time for p in points for d in p.disks}
    svc.clock.current = T0 + timedelta(days=40)

    assert len(run_retention(svc).points_deleted) == DAYS - 1

    assert recorded() == {d.snapshot_time for d in points[0].disks}


def test_deleting_a_base_blob_is_refused(world):
    """A URL without a snapshot time is never deleted: the disk itself is safe from retention."""
    svc, _, blobs = world
    with pytest.raises(ValidationError):
        svc.snapshots.delete_snapshot(blobs[0].url)
    assert blobs[0].exists()


def test_snapshots_of_a_failed_job_and_old_status_blobs_of_final_jobs_go(world):
    """A failed job's snapshot and a final job's week-old status/log blobs are deleted; a running job's stay."""
    svc, vm, blobs = world
    now = datetime.now(timezone.utc)     # blobs carry Azurite's real write times
    failed = Job.new_backup(vm_name=vm, slot=now - timedelta(days=1), now=now - timedelta(days=1))
    snap = blobs[0].create_snapshot(metadata={"jobId": failed.job_id})
    failed.status = JobStatus.FAILED
    failed.end_time = failed.start_time

    failed.disks = [DiskResult(lun=-1, blob_url=blobs[0].url, status="Completed",
                               snapshot_uri=f"{blobs[0].url}?snapshot={snap['snapshot']}"),
                    DiskResult(lun=0, blob_url=blobs[1].url, status="Failed")]
    running = Job.new_backup(vm_name=vm, slot=now, now=now)
    svc.jobs.create_if_absent(failed)
    svc.jobs.create_if_absent(running)
    status = svc.blob_service.get_container_client(svc.settings.status_container)
    status.create_container()
    for job in (failed, running):
        for name in svc.status_blobs.attempt_blob_names(job.job_id, 1):
            status.upload_blob(name, b"{}")
    svc.clock.current = now + timedelta(days=8)
    plan = plan_retention(svc)
    assert [a.snapshot for a in plan.attempt_snapshots] == [f"{blobs[0].url}?snapshot={snap['snapshot']}"]
    assert {b.name for b in plan.status_blobs} == set(svc.status_blobs.attempt_blob_names(failed.job_id, 1))
    run_retention(svc)
    assert snap["snapshot"] not in {s.snapshot_time for s in svc.snapshots.list_snapshots(blobs[0].url)}
    assert sorted(b.name for b in status.list_blobs()) == sorted(svc.status_blobs.attempt_blob_names(running.job_id, 1))


def test_an_overtaken_attempts_snapshots_go_and_the_attempt_that_ended_the_job_keeps_its_own(world):
    """Attempt 1's success ended the job after attempt 2 (overtaken) had snapshotted every disk too:
    retention deletes attempt 2's snapshots (the job's id, no point holds them), never attempt 1's."""
    svc, vm, blobs = world
    now = datetime.now(timezone.utc)
    job = Job.new_backup(vm_name=vm, slot=now - timedelta(hours=1), now=now - timedelta(hours=1))
    first, second = ([blob.create_snapshot(metadata={"jobId": job.job_id, "taskId": f"{job.job_id}_{n}"})
                      for blob in blobs] for n in (1, 2))
    job.status, job.end_time, job.task_id = JobStatus.COMPLETED, job.start_time, f"{job.job_id}_1"
    job.disks = [DiskResult(lun=lun, blob_url=blob.url, status="Completed",
                            snapshot_uri=f"{blob.url}?snapshot={snap['snapshot']}")
                 for lun, blob, snap in zip((-1, 0), blobs, first)]
    job.attempts = [AttemptRecord(attempt=2, task_id=f"{job.job_id}_2", outcome=AttemptOutcome.OVERTAKEN,
                                  dispatched_at=job.start_time, ended_at=job.start_time)]
    svc.jobs.create_if_absent(job)
    svc.clock.current = now + timedelta(hours=1)
    plan = plan_retention(svc)
    assert sorted(a.snapshot for a in plan.attempt_snapshots) == sorted(
        f"{blob.url}?snapshot={snap['snapshot']}" for blob, snap in zip(blobs, second))


def test_a_disk_at_the_snapshot_limit_refuses_the_backup_with_code_85(make_settings, world):
    """A disk with as many snapshots as the limit: the backup is refused with 85 and told to run retention."""
    svc, vm, blobs = world
    limited = Services(make_settings(SNAPSHOT_LIMIT=str(DAYS)), clock=svc.clock)
    machine = Vm(name=vm, kind=VmKind.LOCAL, disks=tuple(Disk(lun=i - 1, blob_url=b.url, name=b.blob_name,
                                                                  size_bytes=1024) for i, b in enumerate(blobs)))
    error = disk_guard_error(limited, machine)
    assert error is not None and error.error_code == "ExtensionFailedSnapshotLimitReachedError"
    assert "vmsnap retention run" in error.recommendations[0] and f"{DAYS} snapshots" in error.error_string
    roomy = Services(make_settings(SNAPSHOT_LIMIT=str(DAYS + 1)), clock=svc.clock)
    assert disk_guard_error(roomy, machine) is None


def test_the_retention_timer_enforces_retention_with_a_real_timer_request(world):
    """The enforce_retention function, fired as the host fires it, deletes the expired points."""
    from azure.functions.timer import TimerRequest

    from functions.retention import enforce
    from shared.bootstrap import reset_services

    svc, vm, _ = world
    svc.clock.current = T0 + timedelta(days=40)
    reset_services(svc)
    try:
        enforce(TimerRequest(past_due=False))
    finally:
        reset_services()
    assert [p.state for p in svc.recovery_points.list_for_vm(vm)] == [PointState.AVAILABLE] + [PointState.DELETED] * 9
