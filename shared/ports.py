# Over 400 lines on purpose: every port in one file is the point: adapters, fakes and contract suites read it.
"""Ports: the small interfaces services depend on. Adapters implement them; tests use fakes.

Each port is owned by the work that implements its adapter; add methods here, never SDK types.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import cached_property
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, runtime_checkable

from shared.clock import utc
from shared.domain.alerts import Alert, AlertKind, AlertStatus
from shared.domain.claims import BackupClaim
from shared.domain.command import ExtensionCommand
from shared.domain.disk_digest import DigestRequest
from shared.domain.inventory import Disk, Vm
from shared.domain.jobs import Consistency, Job, JobError, JobStatus
from shared.domain.policy import Policy
from shared.domain.progress import PlanRequest, ShardProgress
from shared.domain.retention_progress import RetentionProgress, RetentionRequest
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import RecoveryPoint
from shared.domain.restore import RestoreTask
from shared.domain.restore_testing import FileSystemCheck, RestoreTestPlan
from shared.domain.restore_point import ArmFailure, ManagedDiskState, RestorePointState, VmDisks
from shared.domain.rollup import MonthRollup, RollupState
from shared.domain.shards import shard_of
from shared.domain.task import SnapshotTask
from shared.errors import PermanentError


class TaskQueue(Protocol):
    """The snapshot-tasks queue (Service Bus in Azure and locally)."""

    def send(self, tasks: Sequence[SnapshotTask]) -> int:
        """Send tasks in as few operations as the queue allows; returns how many operations it took.

        ``message_id`` is the task's ``message_id`` (duplicate detection); a task whose
        ``not_before`` lies ahead is scheduled for that time.
        """


class RestoreQueue(Protocol):
    """The restore-tasks queue: one message per restore job (and per continuation of a long one)."""

    def send(self, task: RestoreTask, *, not_before: datetime | None = None) -> None:
        """Send one task, message_id = the task's (duplicate detection); scheduled for ``not_before``."""


class DigestQueue(Protocol):
    """The digest-requests queue: one message per new recovery point of blob snapshots."""

    def send(self, requests: Sequence[DigestRequest]) -> int:
        """Send in as few operations as the queue allows, message_id = the request's; returns operations."""


class ShardQueue(Protocol):
    """The planner queue: one message per shard when a tick fans out (shared/domain/progress.py)."""

    def send(self, requests: Sequence[PlanRequest]) -> int:
        """Send in as few operations as the queue allows, message_id = the request's; returns operations."""


class RetentionQueue(Protocol):
    """The retention queue: a run's part requests and their continuations (shared/domain/retention_progress.py)."""

    def send(self, requests: Sequence[RetentionRequest]) -> int:
        """Send in as few operations as the queue allows, message_id = the request's; returns operations."""


class Inventory(Protocol):
    """Where VMs and their disks are looked up (local inventory table, or the Compute API)."""

    def get_vm(self, name: str) -> Vm:
        """The VM, or NotFoundError with a message naming it."""

    def list_vms(self) -> Iterable[Vm]:
        """Every VM the inventory knows, in no particular order."""


@dataclass(frozen=True)
class JobQuery:
    vm_name: str | None = None
    status: JobStatus | None = None
    operation: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    page_size: int = 50
    continuation: str | None = None
    shard: str | None = None            # only the jobs of VMs in this shard (shared/domain/shards.py)
    # Only the jobs of VMs whose lower-cased name comes after ``vms_after`` and up to ``vms_through``:
    # a page of a shard's VMs, as the item store lists them (retention reads a shard a page at a time).
    vms_after: str | None = None
    vms_through: str | None = None

    @cached_property
    def _window(self) -> tuple[datetime | None, datetime | None]:
        """``since`` and ``until`` in UTC, worked out once: ``matches`` is asked about row after row."""
        return (utc(self.since) if self.since is not None else None,
                utc(self.until) if self.until is not None else None)

    def matches(self, job: Job) -> bool:
        """Whether ``job`` belongs in the answer: times bound the slot, the VM name ignores case."""
        # The cheap tests first, the shard (a hash of the name) last.
        since, until = self._window
        if (since is not None and job.slot < since) or (until is not None and job.slot >= until):
            return False
        key = job.vm_name.lower()
        return ((self.vm_name is None or key == self.vm_name.lower())
                and (self.vms_after is None or key > self.vms_after.lower())
                and (self.vms_through is None or key <= self.vms_through.lower())
                and (self.status is None or job.status == JobStatus(self.status))
                and (self.operation is None or job.operation == self.operation)
                and (self.shard is None or shard_of(job.vm_name) == self.shard))


@dataclass(frozen=True)
class JobOutcome:
    """What a report needs of a job, read without the rest of its record (shared/services/compliance.py)."""

    job_id: str
    vm_name: str
    slot: datetime
    status: JobStatus
    error: JobError | None = None      # the first error, when the job has one


@dataclass
class JobPage:
    jobs: list[Job] = field(default_factory=list)
    continuation: str | None = None


class JobStore(Protocol):
    def create_if_absent(self, job: Job) -> bool:
        """Insert the job unless one with its id exists; True if this call created it."""

    def create_many_if_absent(self, jobs: Sequence[Job]) -> list[bool]:
        """Batched insert-if-absent (Table transactions of up to 100 per partition)."""

    def get(self, job_id: str) -> Job | None:
        """The job, or None when no job has that id."""

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        """The jobs of these ids that exist, by id (a batch of a tick's jobs costs a request or two)."""

    def update(self, job_id: str, change: Callable[[Job], Job | None]) -> Job:
        """Read, apply ``change`` (None = no change), write back guarded by the ETag; retry on races.

        NotFoundError when no job has that id.
        """

    def query(self, query: JobQuery) -> JobPage:
        """One page of jobs, newest slot first; ``since``/``until`` bound the slot, ``vm_name`` is
        compared case-insensitively; ``continuation`` of the returned page fetches the next one."""

    def outcomes(self, query: JobQuery) -> Iterable[JobOutcome]:
        """Every job ``query`` matches (its page size and continuation ignored), in no particular order,
        as outcomes only: a report over months of jobs reads a few fields of each, not whole records."""


class Dispatcher(Protocol):
    """Hands an extension command to a VM and returns once it is accepted (never waits for the snapshot)."""

    def dispatch(self, vm: Vm, command: ExtensionCommand) -> None:
        """TransientError: try again later; DispatchRefused: the VM's control plane said no for good."""


@runtime_checkable
class ExtensionStatusReader(Protocol):
    """A second channel for the extension's result, besides its status blob: what the VM agent last
    reported to the control plane (the Compute API instance view). A dispatcher may offer it."""

    def extension_status(self, vm: Vm) -> bytes | None:
        """The status document the handler last reported (JSON, as in its status blob), or None.

        NotFoundError-free: a VM or extension that is gone gives None. TransientError when the
        control plane cannot be reached, PermanentError when it refuses for good.
        """


class DispatchRefused(PermanentError):
    """The VM's control plane refused the extension command for good; recorded on the job as is."""

    def __init__(self, message: str, *, error_code: str, recommendation: str = ""):
        super().__init__(message)
        self.error_code = error_code
        self.recommendation = recommendation


class RestorePoints(Protocol):
    """VM restore points through the Compute API (shared/adapters/restore_points.py): the backup method
    of managed-disk VMs. Ids are ARM resource ids; nothing here waits for a restore point to finish."""

    def ensure_collection(self, vm_resource_id: str, location: str) -> str:
        """The VM's restore point collection, created if missing; returns its id."""

    def begin_create(self, vm_resource_id: str, name: str, *, consistency: Consistency,
                     exclude_disk_ids: Sequence[str] = ()) -> RestorePointState:
        """Start creating a restore point and return; one that exists already (also one another
        delivery created meanwhile: ARM's 409) is returned as is. A restore point this call started
        carries its create operation (``operation``)."""

    def get(self, vm_resource_id: str, name: str) -> RestorePointState | None:
        """The restore point with its instance view, or None."""

    def operation_failure(self, operation: str) -> ArmFailure | None:
        """The error of a failed long-running operation (a create's ``operation``); None while it runs,
        once it succeeded, or when it is no longer known."""

    def vm_power_state(self, vm_resource_id: str) -> str | None:
        """The VM's ``PowerState/<state>`` from its instance view, or None when unknown."""

    def delete(self, restore_point_id: str) -> bool:
        """Delete a VM restore point with its disk restore points (retention); waits until it is gone.
        False when it was gone already (deleted by another run, or by hand)."""

    def restore_disk(self, disk_restore_point_id: str, disk_id: str, *, location: str,
                     tags: dict[str, str] | None = None) -> str:
        """A new managed disk ``disk_id`` from a disk restore point (restore), with ``tags``; waits; returns
        its id."""

    def delete_disk(self, disk_id: str) -> bool:
        """Delete a managed disk and wait until it is gone; False when there was none."""

    def grant_read(self, disk_id: str, seconds: int) -> str:
        """A short read grant on a disk (``beginGetAccess``): a URL its bytes can be read from."""

    def revoke_read(self, disk_id: str) -> None:
        """End the disk's read grant (``endGetAccess``)."""

    def get_disk(self, disk_id: str) -> ManagedDiskState | None:
        """A managed disk (size, location, state), or None when there is none."""

    def vm_disks(self, vm_resource_id: str) -> VmDisks | None:
        """The VM's managed disk at each LUN, its provisioning state and power state (one read with the
        instance view), or None when there is no such VM."""

    def swap_disks(self, vm_resource_id: str, disks: Mapping[int, str]) -> None:
        """Put managed disk ``disks[lun]`` at each LUN of the VM, its other disks kept (``PATCH`` of its
        storage profile), and wait until the VM's update ends; a refused or failed update raises
        RestorePointRefused."""

    def snapshot_disk(self, disk_id: str, snapshot_id: str, *, location: str, tags: dict[str, str]) -> str:
        """A snapshot ``snapshot_id`` of a managed disk (``createOption: Copy``) with ``tags``; waits; returns
        its id."""

    def get_snapshot(self, snapshot_id: str) -> ManagedDiskState | None:
        """A disk snapshot (size, state, owner tag), or None when there is none."""

    def delete_snapshot(self, snapshot_id: str) -> bool:
        """Delete a disk snapshot and wait until it is gone; False when there was none."""


class RestorePointRefused(PermanentError):
    """ARM refused a restore point call for good; ``arm_code``/``arm_message`` pick the remediation."""

    def __init__(self, message: str, *, arm_code: str, arm_message: str, status: int | None):
        super().__init__(message)
        self.arm_code = arm_code
        self.arm_message = arm_message
        self.status = status


class PolicyStore(Protocol):
    """Backup policies (Table: shared/adapters/table_protection.py). ``DefaultPolicy`` always exists."""

    def get(self, name: str) -> Policy:
        """The policy, or NotFoundError naming it."""

    def create(self, policy: Policy) -> Policy:
        """ConflictError if the name is taken."""

    def replace(self, policy: Policy) -> Policy:
        """NotFoundError if no policy has that name."""

    def list(self) -> list[Policy]:
        """Every policy, ordered by name (case-insensitively)."""


class ProtectedItemStore(Protocol):
    """Protected items, read a page at a time and written in ETag-guarded batches."""

    def get(self, vm_name: str) -> ProtectedItem | None:
        """The item of that VM (name compared case-insensitively), or None."""

    def add(self, item: ProtectedItem) -> ProtectedItem:
        """ConflictError if the VM is already an item."""

    def update(self, vm_name: str, change: Callable[[ProtectedItem], ProtectedItem | None]) -> ProtectedItem:
        """Read, apply ``change`` (None = no change), write back guarded by the ETag; retry on races."""

    def save_many(self, items: Sequence[ProtectedItem]) -> tuple[list[ProtectedItem], list[str], int]:
        """Write items read earlier unless changed meanwhile: (saved, names not written, transactions)."""

    def pages(self, page_size: int = 100, shard: str | None = None,
              after: str | None = None) -> Iterable[list[ProtectedItem]]:
        """Every item, at most ``page_size`` per page; with ``shard``, that shard's items in name order
        (lower-cased), those after the name ``after`` if given (to resume a listing that failed)."""

    def count_by_policy(self, policy_name: str) -> int:
        """How many PROTECTED items use the policy of exactly that name (``policy list`` shows it)."""


class ShardProgressStore(Protocol):
    """How far the scheduler settled each shard (shared/domain/progress.py)."""

    def get(self, shard: str) -> ShardProgress:
        """The shard's progress; an empty one if no run has written any."""

    def all(self) -> list[ShardProgress]:
        """Every shard's progress, in shard order."""

    def update(self, shard: str, change: Callable[[ShardProgress], ShardProgress], *,
               current: ShardProgress | None = None) -> ShardProgress:
        """Read (unless ``current`` is given), change, write back guarded by the ETag; a lost race
        reads and changes again."""


class RetentionProgressStore(Protocol):
    """How far retention got through each part of the fleet (shared/domain/retention_progress.py)."""

    def get(self, part: str) -> RetentionProgress:
        """The part's progress; an empty one if no run has written any."""

    def all(self) -> list[RetentionProgress]:
        """Every part's progress, in part order (the shards, then the status blobs)."""

    def update(self, part: str, change: Callable[[RetentionProgress], RetentionProgress], *,
               current: RetentionProgress | None = None) -> RetentionProgress:
        """Read (unless ``current`` is given), change, write back guarded by the ETag; a lost race
        reads and changes again."""


class BackupClaims(Protocol):
    """Each VM's backup claim (shared/domain/claims.py): one row per VM, written only under its ETag."""

    def get(self, vm_name: str) -> BackupClaim:
        """The VM's claim (name compared case-insensitively); an empty one, version None, if none was written."""

    def update(self, vm_name: str, change: Callable[[BackupClaim], BackupClaim | None]) -> BackupClaim:
        """Read, apply ``change`` (None = no change, nothing written), write back only if nobody wrote in
        between (insert-if-absent for a VM without a row); a lost race reads and changes again, so
        ``change`` may run several times and must decide afresh each time. Returns the claim as stored.
        What ``change`` raises propagates with nothing written; TransientError when the races never end."""


class StatusBlobs(Protocol):
    """The status container: per-attempt status and log blobs, and kept copies of rejected messages."""

    rejected_container: str

    def attempt_blob_names(self, job_id: str, attempt: int) -> tuple[str, str]:
        """The names of an attempt's status and log blobs (pure: nothing is created)."""

    def create_attempt_blobs(self, job_id: str, attempt: int) -> tuple[str, str]:
        """Create the attempt's status and log blobs, empty; ConflictError if the extension wrote there."""

    def read(self, name: str) -> bytes:
        """A blob's content; NotFoundError if there is none."""

    def url(self, name: str) -> str:
        """The blob's URL, without any SAS."""

    def store_rejected(self, message_id: str, *, reason: str, body: bytes, delivery_count: int,
                       now: datetime) -> str:
        """Keep a message that can never succeed (redacted); returns the kept blob's name."""


class LocalVms(Protocol):
    """The local stack's simulated VMs: LOCAL VMs in the inventory, their disks page blobs."""

    def put_vm(self, vm: Vm) -> Vm:
        """Add or replace a VM; ValidationError when it has no disk, a LUN twice, or a disk URL with a query."""

    def delete_vm(self, name: str) -> None:
        """Remove a VM (its blobs stay); NotFoundError when there is none of that name."""

    def list_vms(self) -> Iterable[Vm]:
        """Every local VM."""

    def create_disks(self, vm_name: str, size_bytes: int, data_disks: int) -> list[Disk]:
        """The VM's OS disk and ``data_disks`` data disks (LUN 0..n-1) as page blobs of ``size_bytes``,
        each with a first page of data; a blob that exists already is kept as it is."""


class BlobUrls(Protocol):
    """Any blob by its URL (``vmsnap status show URL``): one carrying its own SAS is read with it, any
    other with the configured storage identity."""

    def read(self, url: str, *, max_bytes: int) -> bytes:
        """The blob's content. NotFoundError: no such blob; AccessRefusedError: the SAS or the identity
        may not read it; ValidationError: larger than ``max_bytes``; TransientError: storage did not answer.
        No message carries the URL's SAS."""


class SasMinter(Protocol):
    """Mints one SAS per blob with the least permission each use needs (docs/extension-contract.md)."""

    def disk_sas_url(self, blob_url: str) -> str:
        """The disk blob's URL with a SAS that can snapshot it and do nothing else."""

    def status_sas_url(self, blob_url: str) -> str:
        """The status blob's URL with a read+write SAS on exactly that blob."""

    def log_sas_url(self, blob_url: str) -> str:
        """The log blob's URL with a read+write SAS on exactly that blob."""


# --- recovery points, retention and restore (shared/services/recovery.py, retention.py, restore.py) ----
class RecoveryPointStore(Protocol):
    """Recovery points (Table: shared/adapters/table_recovery.py): per VM, newest first; never removed,
    only marked Deleted."""

    def add_if_absent(self, point: RecoveryPoint) -> bool:
        """Insert the point unless one with its name exists for its VM; True if this call created it."""

    def get(self, vm_name: str, name: str) -> RecoveryPoint | None: ...

    def list_for_vm(self, vm_name: str, *, since: datetime | None = None,
                    until: datetime | None = None) -> list[RecoveryPoint]:
        """The VM's points created in [since, until), newest first, every state."""

    def newest_available(self, vm_name: str, *, until: datetime) -> RecoveryPoint | None:
        """The VM's newest Available point created at or before ``until`` (one short read), or None."""

    def recent_available(self, since: datetime, until: datetime) -> dict[str, RecoveryPoint]:
        """Each VM's newest Available point created in [since, until], by lower-cased VM name (one pass over
        the recent rows of every VM); VMs without one are not in it."""

    def scan(self, vm_name: str | None = None) -> Iterable[list[RecoveryPoint]]:
        """Every point, one list per VM (all of that VM's points, every state): the retention scan."""

    def save_many(self, points: Sequence[RecoveryPoint]) -> tuple[list[RecoveryPoint], list[str]]:
        """Write points read earlier unless changed meanwhile (ETag): (saved, names not written)."""


@dataclass(frozen=True)
class BlobSnapshotInfo:
    """One snapshot of a disk blob: its URL (``base?snapshot=<time>``, no SAS) and its metadata."""

    url: str
    snapshot_time: str
    metadata: dict[str, str] = field(default_factory=dict)


class SnapshotStore(Protocol):
    """Blob snapshots of the disks (shared/adapters/snapshots.py). Base blobs are never deleted."""

    def list_snapshots(self, blob_url: str) -> list[BlobSnapshotInfo]:
        """The snapshots of one disk blob, oldest first (empty when the blob does not exist)."""

    def count_snapshots(self, blob_url: str) -> int | None:
        """How many snapshots one disk blob has; None when the blob itself does not exist."""

    def snapshot_exists(self, snapshot_url: str) -> bool:
        """Whether the snapshot ``base?snapshot=<time>`` still exists (one request, no data read).

        ValidationError for a URL that names no snapshot; TransientError when storage cannot answer.
        """

    def delete_snapshot(self, snapshot_url: str) -> bool:
        """Delete one snapshot and its recorded digest (shared/adapters/verification.py), the digest also when
        the snapshot was already gone; True if this call deleted the snapshot, False if it was already gone.

        ValidationError for a URL that names no snapshot: the base blob is never deleted.
        """


@dataclass(frozen=True)
class StatusBlobInfo:
    name: str
    last_modified: datetime


@dataclass(frozen=True)
class StatusBlobPage:
    blobs: list[StatusBlobInfo]
    marker: str | None          # resumes the listing after this page; None after the last one


class StatusBlobArchive(Protocol):
    """The status container's per-attempt status and log blobs, for their retention."""

    def list_pages(self, marker: str | None = None) -> Iterable[StatusBlobPage]:
        """The container's blobs in name order, a page at a time, from the start or after the page whose
        ``marker`` is given (a listing cut short resumes there); nothing when the container does not exist."""

    def delete_blob(self, name: str) -> bool:
        """True if this call deleted it, False if it was already gone."""


@dataclass(frozen=True)
class RestoredBlob:
    """A restore target blob as storage has it: whose it is (the job id in its metadata) and its copy."""

    exists: bool
    owner: str | None = None            # the restore job that created it, or None (not vmsnap's restore)
    copy_status: str | None = None      # pending | success | failed | aborted; None: not made by a copy
    bytes_done: int | None = None
    bytes_total: int | None = None
    description: str = ""


@dataclass(frozen=True)
class Verification:
    """A restored blob compared with its snapshot: equal or not, and what was read to know it."""

    equal: bool
    length: int
    compared_bytes: int                 # bytes read from each side read (only allocated page ranges)
    detail: str = ""
    # How the snapshot's digest served: "used" (the copy alone was read), "recorded" (both were read and
    # the snapshot's digest written for later verifications), "" (neither: both read, nothing recorded).
    digest: str = ""


class Digested(Enum):
    """What recording a snapshot's digest found."""

    RECORDED = "recorded"       # the snapshot was read and its digest written
    PRESENT = "present"         # a usable digest was there already (or another writer was first)
    GONE = "gone"               # the snapshot no longer exists: nothing to record
    REFUSED = "refused"         # this service cannot read it (another account, access refused): not retried


class DiskCopier(Protocol):
    """Server-side copies of disk snapshots into page blobs (restore), tagged with the job that made them."""

    def target_url(self, container: str, blob_name: str) -> str: ...

    def inspect(self, container: str, blob_name: str) -> RestoredBlob:
        """The target as it is now (``exists=False`` when there is none)."""

    def start_copy(self, snapshot_url: str, container: str, blob_name: str, *, owner: str,
                   replace: bool = False) -> None:
        """Start copying the snapshot into ``container/blob_name`` (the container made if missing), its
        metadata naming ``owner``. ConflictError if the blob exists and not ``replace``; NotFoundError
        when the snapshot is gone."""

    def delete_owned(self, container: str, blob_name: str, owner: str) -> bool:
        """Delete the blob if ``owner`` made it (its metadata says so); False otherwise or when gone."""

    def safety_snapshot(self, container: str, blob_name: str, owner: str) -> str:
        """A snapshot of the blob before a restore replaces it; returns its URL (no SAS)."""

    def restore_from(self, snapshot_url: str) -> None:
        """Put a safety snapshot back over its base blob (rolling back a failed in-place restore)."""

    def verify(self, snapshot_url: str, target_url: str) -> Verification:
        """Compare a restored blob with its snapshot: parallel ranged reads of the allocated pages only, of
        the copy alone when the snapshot's recorded digest is usable; the first verification of a snapshot
        records that digest. A wrong or unusable digest falls back to reading both, never fails the check."""

    def record_digest(self, snapshot_url: str) -> Digested:
        """Record the snapshot's digest unless a usable one is there: the snapshot's allocated pages read once,
        in parallel, right after its backup, so even the first verification reads the copy only."""

    def read_range(self, url: str, offset: int, length: int) -> bytes:
        """Bytes of a blob or snapshot (``?snapshot=``), or of a URL carrying its own SAS (a read grant);
        shorter at its end."""

    def list_owned(self, container: str, owner: str) -> list[str]:
        """Names of the container's blobs ``owner`` made (empty when the container does not exist)."""

    def delete_container_if_empty(self, container: str) -> bool:
        """Delete the container when it holds no blob; False when it holds some or does not exist."""


# --- restore drills (shared/services/restore_testing.py) ----------------------------------------------
class RestoreTestPlanStore(Protocol):
    """Restore test plans (Table: shared/adapters/table_protection.py), stored like policies."""

    def get(self, name: str) -> RestoreTestPlan:
        """The plan, or NotFoundError naming it."""

    def create(self, plan: RestoreTestPlan) -> RestoreTestPlan:
        """ConflictError if the name is taken."""

    def replace(self, plan: RestoreTestPlan) -> RestoreTestPlan:
        """Write a plan read earlier unless changed meanwhile (its version): ConflictError then."""

    def delete(self, name: str) -> None:
        """NotFoundError if no plan has that name."""

    def list(self) -> list[RestoreTestPlan]:
        """Every plan, ordered by name (case-insensitively)."""


class FileSystemReader(Protocol):
    """Reads a file system image without mounting it (shared/adapters/filesystems.py)."""

    def inspect(self, image: bytes, *, offset: int, probe: str | None) -> FileSystemCheck:
        """What the file system at ``offset`` of ``image`` is, and the probe file's content if named."""


# --- alerts (shared/services/alerting.py) -------------------------------------------------------------
@dataclass(frozen=True)
class FeedEntry:
    """A job that turned final, or whose attempt failed, at ``at`` (the writer's clock)."""

    job_id: str
    vm_name: str
    status: str                 # the job's status as written (InProgress for a failed attempt being retried)
    at: datetime


class JobFeed(Protocol):
    """Where jobs turn final, in the order they did (shared/services/outcomes.py writes it, for every path a
    job takes to its end; the alert evaluator reads what is new since its last run)."""

    def add(self, entry: FeedEntry) -> None:
        """Record the entry; the same (job, status) again changes nothing. TransientError if storage fails."""

    def between(self, after: datetime, until: datetime) -> list[FeedEntry]:
        """The entries with ``after < at <= until``, oldest first."""

    def prune(self, before: datetime, *, limit: int) -> int:
        """Delete the entries of the minutes before ``before`` (whole minutes: ``before`` is on one), at
        most about ``limit`` of them; returns how many went (``limit`` or more: call again)."""


class RollupStore(Protocol):
    """The compliance report's roll-up (shared/domain/rollup.py; Table: shared/adapters/table_rollup.py): a
    row per item and month that is only ever merged into, under its ETag, and the state saying what it covers."""

    def merge_many(self, rows: Sequence[MonthRollup]) -> int:
        """Fold each row into the stored row of its item and month (created if absent): a union, written only
        if nobody wrote in between (a lost race reads and merges again). Returns how many rows changed."""

    def months(self, since: datetime, until: datetime, vm_name: str | None = None) -> list[MonthRollup]:
        """The rows of the months ``[since, until]`` overlaps, of every item or of one (case-insensitive)."""

    def state(self) -> RollupState:
        """What the roll-up covers; an empty state when nothing was ever folded."""

    def update_state(self, change: Callable[[RollupState], RollupState | None]) -> RollupState:
        """Read the state, apply ``change`` (None = no change), write it back under its ETag; a lost race
        reads and changes again. Returns the state as stored."""

    def prune(self, before: datetime, *, limit: int) -> int:
        """Delete the rows of the months before ``before`` (a month's first instant), whole months, at most
        about ``limit`` rows; returns how many went (``limit`` or more: call again)."""


class AlertStore(Protocol):
    """Alerts (Table: shared/adapters/table_alerts.py): the current alert of each (item, kind), Active or
    the last Resolved one, written only under its ETag; the resolved alerts it replaced; what a webhook
    is owed; the evaluator's marks and the items it watches for an RPO breach."""

    def get(self, item: str, kind: AlertKind) -> Alert | None:
        """The current alert of ``item`` (case-insensitive) and ``kind``, or None."""

    def update(self, item: str, kind: AlertKind, change: Callable[[Alert | None], Alert | None]) -> Alert | None:
        """Read the current alert, apply ``change`` (None = no change, nothing written), write it back only if
        nobody wrote in between (insert-if-absent when there is none); a lost race reads and changes again, so
        ``change`` may run several times. A change that returns another alert (a new name) keeps the one it
        replaces among the resolved. Returns the alert as stored (the current one when nothing changed)."""

    def find(self, name: str) -> Alert | None:
        """The alert of that name, current or replaced; None for an unknown or malformed name."""

    def owed(self) -> list[Alert]:
        """The current alerts a webhook is owed a notification of (``Alert.owed``)."""

    def parked(self) -> list[Alert]:
        """The current alerts recorded while no webhook was set that one set later should get (``Alert.parked``)."""

    def marks(self) -> dict[str, datetime]:
        """The evaluator's marks: how far it has read each source."""

    def advance_marks(self, marks: dict[str, datetime]) -> None:
        """Move marks forward (a mark never goes back: racing evaluators keep the later one)."""

    def watch(self, item: str, breach_at: datetime) -> None:
        """Remember to check ``item``'s RPO at ``breach_at`` (replaces an earlier watch of it)."""

    def due_watches(self, now: datetime) -> list[tuple[str, datetime]]:
        """(item, breach_at) of the watches due by ``now``."""

    def unwatch(self, item: str) -> None:
        """Forget the item's watch (none: nothing happens)."""

    # Last: in the class body, ``list`` names this method from here on (PolicyStore does the same).
    def list(self, status: AlertStatus | None = None, item: str | None = None) -> list[Alert]:
        """Alerts (current and replaced), newest fired first; filtered by status and item (case-insensitive)."""


class AlertNotifier(Protocol):
    """Where alert notifications go (shared/adapters/webhook.py: an HTTP webhook)."""

    def send(self, document: dict[str, Any]) -> None:
        """Deliver one notification. TransientError when the receiver did not take it (no answer, 5xx,
        408, 429), PermanentError when it refused it (any other 4xx); either is tried again later."""
