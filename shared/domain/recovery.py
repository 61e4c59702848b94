"""A recovery point: what one successful backup job left behind that can be restored, shaped like
``az backup recoverypoint`` (name, time, consistency, tier, expiry). Pure data; one point per job.

A disk snapshot is referenced generically (``DiskSnapshot``): a blob snapshot of a page-blob disk
(``method = EXTENSION_COMMAND``, "BlobSnapshot" in its record) or a managed disk's disk restore point
(``method = RESTORE_POINT``, the point then also names its VM restore point, which retention deletes as a
whole).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum

from shared.clock import shifted, utc
from shared.domain.inventory import BackupMethod
from shared.domain.jobs import Consistency, DiskResult, Job, JobStatus
from shared.domain.status import DirectDriveSnapshot
from shared.domain.task import Trigger
from shared.domain.words import Words

SUCCESSFUL = frozenset({JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS})

# What an on-demand point keeps when no retain-until was given (az's default for backup-now), and the
# longest any point may be kept (az: 99 years). A retain-until beyond it is held to it.
ON_DEMAND_DEFAULT_RETENTION = timedelta(days=30)
MAX_RETENTION = timedelta(days=99 * 365)
# A point stamped further ahead than this was not made by a backup that ran: no clock is that far off.
# It is kept but never trusted as a VM's latest point (shared/domain/retention.py says why in the plan).
MAX_FUTURE = timedelta(hours=1)


# How a point's record and its JSON name its method: after the snapshots it holds (words older than
# BackupMethod, which `recoverypoint show -o json` prints).
POINT_METHOD = Words({BackupMethod.EXTENSION_COMMAND: "BlobSnapshot", BackupMethod.RESTORE_POINT: "RestorePoint"})


class PointState(str, Enum):
    AVAILABLE = "Available"
    UNAVAILABLE = "Unavailable"     # some of its data is gone (found missing): not restorable as a whole;
                                    # what is left stays until its retention ends, then goes as usual
    DELETING = "Deleting"   # claimed by one retention run: its snapshots are being deleted
    DELETED = "Deleted"     # snapshots gone; the record stays, saying which rule removed it

    @property
    def holds_data(self) -> bool:
        """Whether retention may still have snapshots of the point to keep or delete."""
        return self in (PointState.AVAILABLE, PointState.UNAVAILABLE)


class Rule(str, Enum):
    """What keeps (or removes) a point, a snapshot or a blob, as Azure Backup names its tiers and retention
    rules; printed by ``retention plan``. One enum for both: a tier that holds a point is the rule that
    keeps it, so the tiers are the first six (``TIERS``) and the rest are what a retention run adds."""

    INSTANT_RESTORE = "InstantRestore"
    DAILY = "Daily"
    WEEKLY = "Weekly"
    MONTHLY = "Monthly"
    YEARLY = "Yearly"
    ON_DEMAND = "OnDemand"
    LATEST = "LatestPoint"                  # the latest good point of a protected VM always stays
    FUTURE_TIME = "TimeInFuture"            # stamped in the future: not trusted, kept, reported every run
    PROTECTION_STOPPED = "ProtectionStopped"    # stopped with data retained: kept until resumed or deleted
    SOFT_DELETED = "SoftDeleted"            # soft-deleted: kept until its purge time
    SOFT_DELETE_PURGE = "SoftDeletePurge"   # soft-deleted longer than 14 days: every point goes
    NOT_PROTECTED = "NotProtected"          # no protected item or no policy: nothing to enforce, kept
    FAILED_ATTEMPT = "FailedAttempt"        # a snapshot of a job that failed
    SUPERSEDED_ATTEMPT = "SupersededAttempt"    # a snapshot of an earlier attempt of a successful job
    STATUS_BLOB = "StatusBlobRetention"     # a final job's status/log blobs, older than the setting


# The rules a point's tier may be (``recoverypoint list`` prints them as its tiers).
TIERS = frozenset({Rule.INSTANT_RESTORE, Rule.DAILY, Rule.WEEKLY, Rule.MONTHLY, Rule.YEARLY, Rule.ON_DEMAND})


@dataclass(frozen=True)
class DiskSnapshot:
    """One disk's snapshot in a point. ``source``: the disk (blob URL without query, or resource id);
    ``snapshot``: the snapshot (blob URL + ``?snapshot=<time>``, never a SAS; the restore point's id; or
    a Direct Drive snapshot's id, described by ``direct_drive``)."""

    lun: int
    source: str
    snapshot: str
    snapshot_time: str | None = None    # the blob snapshot's own timestamp, as Storage spells it
    direct_drive: DirectDriveSnapshot | None = None     # taken by the host path (never its token)

    @property
    def is_blob_snapshot(self) -> bool:
        return "?snapshot=" in self.snapshot


@dataclass(frozen=True)
class RecoveryPoint:
    name: str
    vm_name: str
    created_at: datetime                # the job's slot: the time the backup was for (az's recoveryPointTime)
    job_id: str
    trigger: Trigger = Trigger.SCHEDULED
    consistency: Consistency | None = None
    size_bytes: int | None = None
    policy_name: str | None = None
    retain_until: datetime | None = None    # on-demand points only
    disks: tuple[DiskSnapshot, ...] = ()
    method: BackupMethod = BackupMethod.EXTENSION_COMMAND     # the job's: what the point's snapshots are
    restore_point_id: str | None = None     # RestorePoint method: the VM restore point's resource id
    state: PointState = PointState.AVAILABLE
    state_changed_at: datetime | None = None
    deleted_by: Rule | None = None          # the rule that removed it (see shared/domain/retention.py)
    unavailable_reason: str | None = None   # Unavailable: which data was found missing, and when
    version: str | None = field(default=None, compare=False)   # the store's ETag

    @property
    def is_on_demand(self) -> bool:
        return self.trigger is Trigger.ON_DEMAND

    @property
    def artifacts(self) -> tuple[str, ...]:
        """What expiring the point deletes: its VM restore point (which takes its disk restore points
        along), or each disk's blob snapshot."""
        if self.method is BackupMethod.RESTORE_POINT:
            return (self.restore_point_id,) if self.restore_point_id else ()
        return self.blob_snapshots

    @property
    def blob_snapshots(self) -> tuple[str, ...]:
        """The URLs of the point's disk blob snapshots (none for a point of a VM restore point): what
        restoring it reads, and what its digests are recorded of."""
        if self.method is BackupMethod.RESTORE_POINT:
            return ()
        return tuple(d.snapshot for d in self.disks if d.is_blob_snapshot)

    @property
    def is_available(self) -> bool:
        return self.state is PointState.AVAILABLE

    def kept_until_at_most(self) -> datetime:
        """The latest instant any rule may keep the point: MAX_RETENTION after its time."""
        return shifted(self.created_at, MAX_RETENTION)

    def on_demand_until(self) -> datetime:
        """When an on-demand point's own retention ends: its retain-until (held to MAX_RETENTION), or
        ON_DEMAND_DEFAULT_RETENTION after its time."""
        if self.retain_until is None:
            return shifted(self.created_at, ON_DEMAND_DEFAULT_RETENTION)
        return min(utc(self.retain_until), self.kept_until_at_most())

    def is_from_the_future(self, now: datetime) -> bool:
        """Stamped beyond ``now`` plus any clock skew: no backup that ran made this time."""
        return utc(self.created_at) > shifted(now, MAX_FUTURE)

    def unavailable(self, reason: str, now: datetime) -> "RecoveryPoint":
        """The point once some of its data was found gone; only an Available point becomes Unavailable."""
        if self.state is not PointState.AVAILABLE:
            return self
        return replace(self, state=PointState.UNAVAILABLE, unavailable_reason=reason, state_changed_at=utc(now))

    def claimed(self, rule: Rule, now: datetime) -> "RecoveryPoint":
        return replace(self, state=PointState.DELETING, deleted_by=rule, state_changed_at=utc(now))

    def deleted(self, now: datetime) -> "RecoveryPoint":
        return replace(self, state=PointState.DELETED, state_changed_at=utc(now))


def recovery_point_name(job_id: str) -> str:
    """The point's name, derived from its job id: recording a job twice gives one point.

    Digits, like Azure's recovery point names; 18 of them keep collisions out of reach.
    """
    digest = hashlib.sha256(f"vmsnap-rp|{job_id}".encode()).digest()
    return str(int.from_bytes(digest[:8], "big") % 10**18).rjust(18, "0")


def point_from_job(job: Job) -> RecoveryPoint | None:
    """The recovery point of a successful backup job, or None (not successful, or no disk snapshot).

    The job's method decides the point's: a restore-point job's disks are managed disks (``blob_url``
    holds the disk's resource id) and their snapshots disk restore points of one VM restore point.
    """
    if job.operation != "Backup" or job.status not in SUCCESSFUL:
        return None
    disks = tuple(_disk_snapshot(d) for d in job.disks if d.snapshotted)
    if not disks:
        return None
    method = job.backup_method or BackupMethod.EXTENSION_COMMAND
    restore_point_id = vm_restore_point_id(disks[0].snapshot) if method is BackupMethod.RESTORE_POINT else None
    return RecoveryPoint(name=recovery_point_name(job.job_id), vm_name=job.vm_name, created_at=utc(job.slot),
                         job_id=job.job_id, trigger=job.trigger,
                         consistency=job.consistency, size_bytes=job.backup_size_bytes,
                         policy_name=job.policy_name,
                         retain_until=utc(job.retain_until) if job.retain_until else None, disks=disks,
                         method=method, restore_point_id=restore_point_id)


def vm_restore_point_id(disk_restore_point_id: str) -> str:
    """The VM restore point a disk restore point belongs to: its id without ``/diskRestorePoints/<name>``
    (ARM ids compare case-insensitively)."""
    index = disk_restore_point_id.lower().rfind("/diskrestorepoints/")
    return disk_restore_point_id[:index] if index >= 0 else disk_restore_point_id


def _disk_snapshot(disk: DiskResult) -> DiskSnapshot:
    """A snapshotted disk of the job as the point keeps it: its blob snapshot, else its Direct Drive one."""
    source = disk.blob_url.split("?", 1)[0]
    if disk.snapshot_uri:
        return DiskSnapshot(lun=disk.lun, source=source, snapshot=_no_sas(disk.snapshot_uri),
                            snapshot_time=_snapshot_time(disk.snapshot_uri), direct_drive=disk.direct_drive)
    direct = disk.direct_drive
    assert direct is not None, "a snapshotted disk has a snapshot URI or a Direct Drive snapshot"
    return DiskSnapshot(lun=disk.lun, source=source, snapshot=direct.id, direct_drive=direct)


def _no_sas(uri: str) -> str:
    """Keep only ``?snapshot=<time>``: a snapshot URI must never carry a signature into a record."""
    base, _, query = uri.partition("?")
    kept = [part for part in query.split("&") if part.startswith("snapshot=")]
    return f"{base}?{kept[0]}" if kept else base


def _snapshot_time(uri: str) -> str | None:
    _, _, query = uri.partition("?")
    for part in query.split("&"):
        if part.startswith("snapshot="):
            return part[len("snapshot="):]
    return None


def near_limit(limit: int) -> int:
    """The snapshot count from which a VM is near the limit: nine tenths of it."""
    return max(1, limit * 9 // 10)
