"""Ports: the small interfaces services depend on. Adapters implement them; tests use fakes.

Each port is owned by the work that implements its adapter; add methods here, never SDK types.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable, Protocol, Sequence

from shared.domain.inventory import Vm
from shared.domain.jobs import Job, JobStatus
from shared.domain.policy import Policy
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import RecoveryPoint
from shared.domain.task import SnapshotTask
from shared.errors import PermanentError


class TaskQueue(Protocol):
    """The snapshot-tasks queue (Service Bus in Azure and locally)."""

    def send(self, tasks: Sequence[SnapshotTask]) -> int:
        """Send tasks in as few operations as the queue allows; returns how many operations it took.

        ``message_id`` is the task's ``message_id`` (duplicate detection); a task whose
        ``not_before`` lies ahead is scheduled for that time.
        """


class Inventory(Protocol):
    """Where VMs and their disks are looked up (local inventory table, or the Compute API)."""

    def get_vm(self, name: str) -> Vm:
        """The VM, or NotFoundError with a message naming it."""

    def list_vms(self) -> Iterable[Vm]: ...


@dataclass(frozen=True)
class JobQuery:
    vm_name: str | None = None
    status: JobStatus | None = None
    operation: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    page_size: int = 50
    continuation: str | None = None


@dataclass
class JobPage:
    jobs: list[Job] = field(default_factory=list)
    continuation: str | None = None


class JobStore(Protocol):
    def create_if_absent(self, job: Job) -> bool:
        """Insert the job unless one with its id exists; True if this call created it."""

    def create_many_if_absent(self, jobs: Sequence[Job]) -> list[bool]:
        """Batched insert-if-absent (Table transactions of up to 100 per partition)."""

    def get(self, job_id: str) -> Job | None: ...

    def update(self, job_id: str, change: Callable[[Job], Job | None]) -> Job:
        """Read, apply ``change`` (None = no change), write back guarded by the ETag; retry on races."""

    def query(self, query: JobQuery) -> JobPage: ...


class Dispatcher(Protocol):
    """Hands an extension command to a VM and returns once it is accepted (never waits for the snapshot)."""

    def dispatch(self, vm: Vm, command: "object") -> None: ...


class DispatchRefused(PermanentError):
    """The VM's control plane refused the extension command for good; recorded on the job as is."""

    def __init__(self, message: str, *, error_code: str, recommendation: str = ""):
        super().__init__(message)
        self.error_code = error_code
        self.recommendation = recommendation


class PolicyStore(Protocol):
    """Backup policies (Table: shared/adapters/table_protection.py). ``DefaultPolicy`` always exists."""

    def get(self, name: str) -> Policy:
        """The policy, or NotFoundError naming it."""

    def create(self, policy: Policy) -> Policy:
        """ConflictError if the name is taken."""

    def replace(self, policy: Policy) -> Policy: ...

    def list(self) -> list[Policy]: ...


class ProtectedItemStore(Protocol):
    """Protected items, read a page at a time and written in ETag-guarded batches."""

    def get(self, vm_name: str) -> ProtectedItem | None: ...

    def add(self, item: ProtectedItem) -> ProtectedItem:
        """ConflictError if the VM is already an item."""

    def update(self, vm_name: str, change: Callable[[ProtectedItem], ProtectedItem | None]) -> ProtectedItem:
        """Read, apply ``change`` (None = no change), write back guarded by the ETag; retry on races."""

    def save_many(self, items: Sequence[ProtectedItem]) -> tuple[list[ProtectedItem], list[str], int]:
        """Write items read earlier unless changed meanwhile: (saved, names not written, transactions)."""

    def pages(self, page_size: int = 100) -> Iterable[list[ProtectedItem]]: ...


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

    def delete_snapshot(self, snapshot_url: str) -> bool:
        """Delete one snapshot; True if this call deleted it, False if it was already gone.

        ValidationError for a URL that names no snapshot: the base blob is never deleted.
        """


@dataclass(frozen=True)
class StatusBlobInfo:
    name: str
    last_modified: datetime


class StatusBlobArchive(Protocol):
    """The status container's per-attempt status and log blobs, for their retention."""

    def list_blobs(self) -> Iterable[StatusBlobInfo]: ...

    def delete_blob(self, name: str) -> bool:
        """True if this call deleted it, False if it was already gone."""


@dataclass(frozen=True)
class CopyProgress:
    status: str                 # pending | success | failed | aborted
    description: str = ""
    length: int | None = None


class DiskCopier(Protocol):
    """Server-side copies of disk snapshots into new page blobs (restore)."""

    def target_url(self, container: str, blob_name: str) -> str: ...

    def exists(self, container: str, blob_name: str) -> bool: ...

    def start_copy(self, snapshot_url: str, container: str, blob_name: str, *, overwrite: bool) -> None:
        """Start copying the snapshot into ``container/blob_name``; ConflictError if it exists and not
        ``overwrite``."""

    def copy_progress(self, container: str, blob_name: str) -> CopyProgress: ...

    def digest(self, url: str) -> tuple[int, str]:
        """(length, sha256 hex) of a blob or snapshot, by streaming its bytes."""
