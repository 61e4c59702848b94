"""A protected item: one VM attached to one policy, with the scheduler's watermark and its guard
against two backups in progress. Pure data and rules; the Table adapter stores it."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Iterable

from shared.clock import utc
from shared.domain import remediation
from shared.domain.command import EXTENSION_WINDOW
from shared.domain.inventory import OS_DISK_LUN, Vm
from shared.domain.job_transitions import TIMEOUT_MARGIN
from shared.domain.jobs import Job, JobStatus
from shared.domain.task import Trigger

# A job blocks the next backup until its timeout deadline (jobs.timeout_deadline: the extension's
# 140-minute window plus a margin, counted from dispatch). A job that started longer ago than this
# can no longer block (allowing an hour of dispatch delay), so the scheduler does not even read it.
STALE_AFTER = EXTENSION_WINDOW + TIMEOUT_MARGIN + timedelta(hours=1)
MAX_SKIPPED = 10
SOFT_DELETE_RETENTION = timedelta(days=14)
# Azure's on-demand limits: three successful backups per item per UTC day, nine attempts (for retries).
ON_DEMAND_SUCCESSES_PER_DAY = 3
ON_DEMAND_ATTEMPTS_PER_DAY = 9


class ProtectionState(str, Enum):
    PROTECTED = "Protected"
    STOPPED = "ProtectionStopped"          # disabled, recovery points kept
    SOFT_DELETED = "SoftDeleted"           # disabled with --delete-backup-data; purged after 14 days


class DiskListSetting(str, Enum):
    """Which data disks a protected VM's backups take, as ``az backup protection update-for-vm`` sets it."""

    ALL = "All"
    INCLUDE = "Include"       # only the listed data disks (and the OS disk)
    EXCLUDE = "Exclude"       # every data disk but the listed ones


@dataclass(frozen=True)
class DiskSelection:
    """The item's disk inclusion or exclusion; the OS disk is always backed up, as in Azure Backup."""

    setting: DiskListSetting = DiskListSetting.ALL
    luns: tuple[int, ...] = ()

    def takes(self, lun: int) -> bool:
        if lun == OS_DISK_LUN or self.setting is DiskListSetting.ALL:
            return True
        return (lun in self.luns) == (self.setting is DiskListSetting.INCLUDE)

    def apply(self, vm: Vm) -> Vm:
        """``vm`` with only the disks this selection backs up."""
        return replace(vm, disks=tuple(d for d in vm.disks if self.takes(d.lun)))


@dataclass(frozen=True)
class SkippedSlot:
    slot: datetime
    reason: str


@dataclass
class ProtectedItem:
    vm_name: str
    policy_name: str
    protected_since: datetime
    policy_assigned_at: datetime           # slots before this follow no policy of this item
    vm_kind: str = "local"
    resource_id: str | None = None
    disk_luns: tuple[int, ...] = ()
    state: ProtectionState = ProtectionState.PROTECTED
    initial_backup_pending: bool = True
    last_slot: datetime | None = None      # watermark: the latest slot scheduled or skipped
    in_progress_job_id: str | None = None  # the job that blocks a new one while it is InProgress
    in_progress_since: datetime | None = None   # its start: older than STALE_AFTER cannot block, no read
    last_job_id: str | None = None
    skipped: list[SkippedSlot] = field(default_factory=list)
    deleted_at: datetime | None = None
    disk_selection: DiskSelection = field(default_factory=DiskSelection)
    version: str | None = field(default=None, compare=False)   # the store's ETag

    @property
    def is_active(self) -> bool:
        return self.state is ProtectionState.PROTECTED

    @property
    def purge_after(self) -> datetime | None:
        return self.deleted_at + SOFT_DELETE_RETENTION if self.deleted_at else None

    @property
    def initial_slot(self) -> datetime:
        """The slot of the pending initial backup: when protection last (re)started. Protection that is
        enabled again after a stop gets a new job id, not that of the first initial backup."""
        return max(utc(self.protected_since), utc(self.policy_assigned_at))

    def watermark(self, policy_modified_at: datetime | None) -> datetime:
        """Slots at or before this instant are settled: scheduled, skipped, or before the policy applied."""
        marks = [utc(self.policy_assigned_at)]
        if self.last_slot is not None:
            marks.append(utc(self.last_slot))
        if policy_modified_at is not None:
            marks.append(utc(policy_modified_at))
        return max(marks)

    def with_skipped(self, slots: list[SkippedSlot]) -> list[SkippedSlot]:
        """The bounded history of skipped slots after adding ``slots`` (newest last)."""
        known = {s.slot for s in self.skipped}
        return (self.skipped + [s for s in slots if s.slot not in known])[-MAX_SKIPPED:]

    def started(self, job_id: str, at: datetime) -> "ProtectedItem":
        return replace(self, in_progress_job_id=job_id, in_progress_since=utc(at), last_job_id=job_id)

    def may_be_busy(self, now: datetime) -> bool:
        """Whether the in-progress job may still block a new one (only then is it worth reading)."""
        if not self.in_progress_job_id:
            return False
        return self.in_progress_since is None or utc(now) - self.in_progress_since < STALE_AFTER


def on_demand_limit_reached(vm_name: str, accepted: Iterable[Job]) -> str | None:
    """Why one more on-demand backup of ``vm_name`` is refused, given the on-demand jobs of the VM
    accepted earlier the same UTC day; None when it is allowed. A job still running counts as the
    success it may become; a request whose task never reached the queue does not count: it never ran."""
    attempts = successes = 0
    for job in accepted:
        if job.trigger is not Trigger.ON_DEMAND or job.operation != "Backup" or _never_queued(job):
            continue
        attempts += 1
        successes += job.status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS, JobStatus.IN_PROGRESS)
    if successes >= ON_DEMAND_SUCCESSES_PER_DAY:
        return (f"{vm_name!r} already has {successes} successful (or still running) on-demand backups today "
                f"(UTC); the limit is {ON_DEMAND_SUCCESSES_PER_DAY} a day")
    if attempts >= ON_DEMAND_ATTEMPTS_PER_DAY:
        return (f"{vm_name!r} already had {attempts} on-demand backup attempts today (UTC); the limit is "
                f"{ON_DEMAND_ATTEMPTS_PER_DAY} a day")
    return None


def _never_queued(job: Job) -> bool:
    return job.status is JobStatus.FAILED and any(e.error_code == remediation.TASK_NOT_QUEUED for e in job.errors)
