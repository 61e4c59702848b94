"""What a failed restore's disks say: none is left "Copying" on a job that no longer runs."""
from __future__ import annotations

from datetime import datetime, timezone

from shared.domain.jobs import DiskResult, Job, JobError, JobPhase
from shared.domain.restore import RESTORE, DiskState, RestoreSpec, mark_restore_failed

NOW = datetime(2026, 12, 6, 20, 19, tzinfo=timezone.utc)


def _job(*states: DiskState) -> Job:
    return Job(job_id="01a24d03-0f91-877b-9f00-c7e1eb921121", vm_name="demo-vm-md", slot=NOW, start_time=NOW,
               trigger="OnDemand", operation=RESTORE, phase=JobPhase.QUEUED,
               restore=RestoreSpec(rp_name="702419724037885717", target="restored-md", target_kind="resourceGroup"),
               disks=[DiskResult(lun=lun, blob_url=f"disk{lun}", status=state.value)
                      for lun, state in zip((-1, 0, 1, 2, 3), states)])


def test_a_disk_whose_copy_the_failure_cut_short_is_failed_and_the_others_keep_their_state():
    """A disk create refused (its resource group missing) left the OS disk "Copying 0/8 MiB" on the failed
    job; it reads Failed now. Pending (never started), Removed (rolled back) and verified disks are as they were."""
    job = _job(DiskState.COPYING, DiskState.PENDING, DiskState.COPIED, DiskState.REMOVED, DiskState.VERIFIED)

    failed = mark_restore_failed(job, JobError(error_code="RestoreCopyFailed", error_string="x"), job.disks, NOW)

    assert [d.status for d in failed.disks] == ["Failed", "Pending", "Failed", "Removed", "Completed"]
