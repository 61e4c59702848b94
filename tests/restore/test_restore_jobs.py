"""Restore as a service job on Azurite: queued at once, performed by the worker from per-disk state, resumed
after a killed host without copying a verified disk again, left alone by the sweep while it progresses,
rolled back when it fails, and OriginalLocation only on a stopped VM with a safety copy of each disk."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from shared.domain.jobs import JobStatus
from shared.domain.recovery import PointState
from shared.domain.remediation import (RESTORE_SOURCE_MISSING, RESTORE_STALLED, RESTORE_TARGET_EXISTS, TIMED_OUT)
from shared.domain.restore import RestoreMode, RestoreTask
from shared.errors import ConflictError, ValidationError
from shared.services.restore import request_restore, run_restore
from shared.services.sweeping import sweep_stale_jobs
from tests.polling import eventually
from tests.restore.conftest import blob_bytes

pytestmark = pytest.mark.long

ROOT = Path(__file__).resolve().parents[2]


def _target_blobs(svc, container: str) -> list[str]:
    client = svc.blob_service.get_container_client(container)
    return sorted(b.name for b in client.list_blobs()) if client.exists() else []


def test_a_restore_returns_at_once_and_the_worker_restores_every_disk_verified(svc, backed_up, unique_name):
    """request_restore creates an InProgress job and queues it, copying nothing; the worker copies both
    disks, verifies them and Completes with each disk's bytes copied."""
    backed = backed_up()
    target = unique_name("restored")
    job = request_restore(svc, backed.vm.name, backed.point.name, target)
    assert job.status is JobStatus.IN_PROGRESS and _target_blobs(svc, target) == []
    assert [t.job_id for t, _ in svc.restore_queue.sent] == [job.job_id]

    (done,) = svc.restore_queue.drain(svc)
    assert done.status is JobStatus.COMPLETED, done.errors
    assert [(d.status, d.bytes_done == d.bytes_total) for d in done.disks] == [("Completed", True)] * 2
    for disk in done.disks:
        assert blob_bytes(svc, disk.blob_url) == backed.data[disk.lun]
    assert any("allocated pages" in note for note in done.notes)


def test_a_host_killed_mid_restore_resumes_without_copying_a_verified_disk_again(svc, backed_up, unique_name,
                                                                                  storage_connection_string):
    """A worker process killed (SIGKILL) after the OS disk was verified: the redelivered task completes the
    job, starts no copy again, re-verifies only the unverified disk, and the OS disk's blob is untouched."""
    backed = backed_up()
    target = unique_name("restored")
    job = request_restore(svc, backed.vm.name, backed.point.name, target)
    worker = subprocess.Popen([sys.executable, "-m", "tests.restore.killable_worker", storage_connection_string,
                               svc.settings.table_prefix, job.job_id, backed.vm.name], cwd=ROOT)
    try:
        assert eventually(lambda: [d.status for d in svc.jobs.get(job.job_id).disks] == ["Completed", "Copied"],
                          timeout=120), svc.jobs.get(job.job_id).disks
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    os_blob = svc.blob_service.get_blob_client(target, f"{backed.vm.name}-os.vhd")
    etag = os_blob.get_blob_properties().etag

    calls: list[tuple[str, str]] = []
    real = svc.snapshots

    class Counting:
        def __getattr__(self, name):
            attr = getattr(real, name)
            if name in ("start_copy", "verify"):
                return lambda *a, **k: calls.append((name, str(a[1] if name == "verify" else a[2]))) or attr(*a, **k)
            return attr

    svc.__dict__["disk_copier"] = Counting()
    done = run_restore(svc, RestoreTask(job.job_id, backed.vm.name))
    assert done.status is JobStatus.COMPLETED, done.errors
    assert [name for name, _ in calls] == ["verify"] and "-os.vhd" not in calls[0][1]
    assert os_blob.get_blob_properties().etag == etag
    assert all(blob_bytes(svc, d.blob_url) == backed.data[d.lun] for d in done.disks)


def test_the_sweep_leaves_a_progressing_restore_alone_and_fails_a_silent_one_with_a_restore_error(
        svc, backed_up, unique_name):
    """Three hours after the requests (past any backup window): a worker that keeps making progress is left
    alone; a restore nobody works on fails with RestoreNoProgress, never the backup timeout; and when the
    silent one's worker turns up after all, its completion stands."""
    backed = backed_up()
    now = svc.clock.now()
    svc.clock.current = now - timedelta(hours=3)
    busy = request_restore(svc, backed.vm.name, backed.point.name, unique_name("busy"))
    svc.clock.advance(timedelta(seconds=1))
    silent = request_restore(svc, backed.vm.name, backed.point.name, unique_name("silent"))
    svc.clock.current = now         # the workers and the sweep run three hours after the requests
    copied, release = threading.Event(), threading.Event()

    def hold(_job) -> None:
        copied.set()
        assert release.wait(60)

    worker = threading.Thread(target=run_restore, args=(svc, RestoreTask(busy.job_id, backed.vm.name)),
                              kwargs={"after_copy": hold})
    worker.start()
    try:
        assert copied.wait(60)
        result = sweep_stale_jobs(svc)
    finally:
        release.set()
        worker.join(60)
    assert result.timed_out == [silent.job_id]
    assert svc.jobs.get(busy.job_id).status is JobStatus.COMPLETED
    failed = svc.jobs.get(silent.job_id)
    assert failed.status is JobStatus.FAILED and [e.error_code for e in failed.errors] == [RESTORE_STALLED]
    assert TIMED_OUT not in str(failed.errors) and "extension" not in failed.errors[0].error_string

    late = run_restore(svc, RestoreTask(silent.job_id, backed.vm.name))
    assert late.status is JobStatus.COMPLETED and late.errors == []
    assert any("completion stands" in note for note in late.notes)


def test_a_failed_restore_leaves_nothing_in_the_target_and_marks_the_point_unavailable(svc, backed_up,
                                                                                     unique_name):
    """The data disk's snapshot deleted behind the service's back: the OS disk copies, then the restore
    fails with the source-missing error, removes the copy it made (the target is empty), says so, and the
    point becomes Unavailable naming the missing snapshot."""
    backed = backed_up()
    lost = next(d for d in backed.point.disks if d.lun == 0)
    assert svc.snapshots.delete_snapshot(lost.snapshot)
    target = unique_name("restored")
    request_restore(svc, backed.vm.name, backed.point.name, target)
    (failed,) = svc.restore_queue.drain(svc)
    assert failed.status is JobStatus.FAILED and failed.errors[0].error_code == RESTORE_SOURCE_MISSING
    assert _target_blobs(svc, target) == []
    assert any("removed what it created" in note and "-os.vhd" in note for note in failed.notes), failed.notes
    point = svc.recovery_points.get(backed.vm.name, backed.point.name)
    assert point.state is PointState.UNAVAILABLE and lost.snapshot in point.unavailable_reason


def test_a_blob_another_job_made_is_never_touched(svc, backed_up, unique_name):
    """A target container that already holds a disk of that name (not this job's): the restore fails with
    'target exists' and the blob keeps its bytes; the copy this job made of the other disk is removed."""
    backed = backed_up()
    target = unique_name("restored")
    other = svc.blob_service.get_container_client(target)
    other.create_container()
    theirs = other.get_blob_client(f"{backed.vm.name}-0.vhd")
    theirs.upload_blob(b"someone else's", overwrite=True)
    request_restore(svc, backed.vm.name, backed.point.name, target)
    (failed,) = svc.restore_queue.drain(svc)
    assert failed.errors[0].error_code == RESTORE_TARGET_EXISTS
    assert theirs.download_blob().readall() == b"someone else's"
    assert _target_blobs(svc, target) == [f"{backed.vm.name}-0.vhd"]


def test_original_location_is_refused_while_the_vm_runs_and_needs_yes(svc, backed_up):
    """OriginalLocation on a running VM is refused with what to do, and creates no job; on a stopped VM
    it needs the operator's --yes."""
    running = backed_up(power="running")
    with pytest.raises(ConflictError, match="running.*must be stopped"):
        request_restore(svc, running.vm.name, running.point.name, mode=RestoreMode.ORIGINAL, confirmed=True)
    stopped = backed_up(power="deallocated")
    with pytest.raises(ValidationError, match="--yes"):
        request_restore(svc, stopped.vm.name, stopped.point.name, mode=RestoreMode.ORIGINAL)
    assert svc.restore_queue.sent == []


def test_original_location_replaces_the_disks_and_keeps_a_named_safety_copy(svc, backed_up):
    """On a stopped VM whose disks changed since the backup: the disks hold the point's bytes again, and
    each disk's safety snapshot (named on the job) holds what was there before."""
    backed = backed_up()
    os_disk = next(d for d in backed.vm.disks if d.lun == -1)
    client = svc.blob_service.get_blob_client(*os_disk.blob_url.rsplit("/", 2)[-2:])
    changed = b"\x01" * 512
    client.upload_page(changed, offset=0, length=512)
    request_restore(svc, backed.vm.name, backed.point.name, mode=RestoreMode.ORIGINAL, confirmed=True)
    (done,) = svc.restore_queue.drain(svc)
    assert done.status is JobStatus.COMPLETED, done.errors
    assert client.download_blob().readall() == backed.data[-1]
    safety = next(d.safety_copy for d in done.disks if d.lun == -1)
    assert safety and blob_bytes(svc, safety)[:512] == changed
