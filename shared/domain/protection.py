"""A protected item: one VM attached to one policy, with the scheduler's watermark and its guard
against two backups in progress. Pure data and rules; the Table adapter stores it."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum

from shared.clock import utc
from shared.domain.command import EXTENSION_WINDOW
from shared.domain.jobs import TIMEOUT_MARGIN

# A job blocks the next backup until its timeout deadline (jobs.timeout_deadline: the extension's
# 140-minute window plus a margin, counted from dispatch). A job that started longer ago than this
# can no longer block (allowing an hour of dispatch delay), so the scheduler does not even read it.
STALE_AFTER = EXTENSION_WINDOW + TIMEOUT_MARGIN + timedelta(hours=1)
MAX_SKIPPED = 10
SOFT_DELETE_RETENTION = timedelta(days=14)


class ProtectionState(str, Enum):
    PROTECTED = "Protected"
    STOPPED = "ProtectionStopped"          # disabled, recovery points kept
    SOFT_DELETED = "SoftDeleted"           # disabled with --delete-backup-data; purged after 14 days


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
    version: str | None = field(default=None, compare=False)   # the store's ETag

    @property
    def is_active(self) -> bool:
        return self.state is ProtectionState.PROTECTED

    @property
    def purge_after(self) -> datetime | None:
        return self.deleted_at + SOFT_DELETE_RETENTION if self.deleted_at else None

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
        return (self.skipped + slots)[-MAX_SKIPPED:]

    def started(self, job_id: str, at: datetime) -> "ProtectedItem":
        return replace(self, in_progress_job_id=job_id, in_progress_since=utc(at), last_job_id=job_id)

    def may_be_busy(self, now: datetime) -> bool:
        """Whether the in-progress job may still block a new one (only then is it worth reading)."""
        if not self.in_progress_job_id:
            return False
        return self.in_progress_since is None or utc(now) - self.in_progress_since < STALE_AFTER
