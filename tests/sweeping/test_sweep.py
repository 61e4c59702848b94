"""The stale-job sweep: jobs that never hear back from the extension end Failed, with advice."""
from datetime import datetime, timedelta, timezone

import pytest

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.job_transitions import mark_dispatched
from shared.domain.jobs import DiskResult, Job, JobStatus
from shared.domain.remediation import TIMED_OUT

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def svc(make_settings):
    return Services(make_settings(), clock=FixedClock(T0))


def dispatched_job(svc, vm: str, at: datetime) -> Job:
    job = Job.new_backup(vm_name=vm, slot=at, now=at)
    job = mark_dispatched(job, attempt=1, task_id=f"{job.job_id}_1", status_blob=f"{job.job_id}/1.Status.txt",
                          log_blob=f"{job.job_id}/1.Logs.txt", now=at,
                          disks=[DiskResult(lun=-1, blob_url="http://127.0.0.1/vhds/os.vhd")])
    assert svc.jobs.create_if_absent(job)
    return job


def test_a_job_silent_past_the_extension_window_fails_with_advice(svc):
    """A dispatched job with no result after 140 min + margin is Failed with a timeout error and actions."""
    from shared.services.sweeping import sweep_stale_jobs

    old = dispatched_job(svc, "vm-old", T0 - timedelta(hours=3))
    fresh = dispatched_job(svc, "vm-fresh", T0 - timedelta(minutes=20))

    result = sweep_stale_jobs(svc)

    assert result.timed_out == [old.job_id]
    failed = svc.jobs.get(old.job_id)
    assert failed.status is JobStatus.FAILED and failed.end_time == T0
    assert failed.errors[0].error_code == TIMED_OUT and failed.errors[0].recommendations
    assert [d.status for d in failed.disks] == ["Failed"]
    assert svc.jobs.get(fresh.job_id).status is JobStatus.IN_PROGRESS


def test_sweeping_twice_changes_nothing_more(svc):
    """A second sweep leaves an already timed-out job exactly as it was."""
    from shared.services.sweeping import sweep_stale_jobs

    old = dispatched_job(svc, "vm-old", T0 - timedelta(hours=3))
    sweep_stale_jobs(svc)
    before = svc.jobs.get(old.job_id)
    svc.clock.advance(timedelta(hours=1))
    assert sweep_stale_jobs(svc).timed_out == []
    assert svc.jobs.get(old.job_id) == before
