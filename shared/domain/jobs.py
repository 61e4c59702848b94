"""The backup job record, shaped like an Azure Backup job (AzureIaaSVMJob) so users recognise it: its
status, phase, ids (which carry the slot and shard), per-disk results, errors and attempts. What a status
report means is job_reports.py; how a job changes, job_transitions.py."""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import TYPE_CHECKING

from shared.clock import utc
from shared.domain.inventory import BackupMethod
from shared.domain.remediation import Remediation
from shared.domain.shards import shard_of
from shared.domain.status import DirectDriveSnapshot
from shared.domain.task import Trigger

if TYPE_CHECKING:
    from shared.domain.restore import Check, RestoreSpec

# Namespace for deterministic job ids: the same (item, slot) always yields the same job id.
JOB_ID_NAMESPACE = uuid.UUID("5b0f0c1e-8e2a-4c59-9a7e-0d6b2f6c4a11")


class JobStatus(str, Enum):
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    COMPLETED_WITH_WARNINGS = "CompletedWithWarnings"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_terminal(self) -> bool:
        return self is not JobStatus.IN_PROGRESS


class JobPhase(str, Enum):
    """Where an InProgress job is; terminal jobs keep the last phase they reached."""

    QUEUED = "Queued"          # record created, task on the queue
    DISPATCHED = "Dispatched"  # extension command handed to the VM
    RUNNING = "Running"        # the extension reported code 4
    DONE = "Done"


class Consistency(str, Enum):
    """What a backup's snapshots hold consistently. A VM restore point is asked for as APPLICATION or CRASH
    (a policy's ``restorePointConsistency``); the extension reports any of the three."""

    APPLICATION = "ApplicationConsistent"
    FILE_SYSTEM = "FileSystemConsistent"
    CRASH = "CrashConsistent"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS48 = (1 << 48) - 1


def job_id_for(vm_name: str, slot: datetime, trigger: str = Trigger.SCHEDULED.value) -> str:
    """The deterministic job id of one (item, slot): a re-fired timer finds the same job.

    A UUIDv8 (RFC 9562) whose first 48 bits are the slot's unix milliseconds, whose next 4 bits
    after the version are the VM's shard, and whose other bits hash (namespace, vm, trigger, slot):
    ids sort by slot, and the slot and shard (hence the table partition) can be read back from the
    id alone (``slot_of_job_id``, ``shard_of_job_id``).
    """
    slot = utc(slot)
    trigger = getattr(trigger, "value", trigger)      # a Trigger, or any other discriminating text
    ms = (slot - _EPOCH) // timedelta(milliseconds=1)
    digest = hashlib.sha256(f"{JOB_ID_NAMESPACE}|{vm_name.lower()}|{trigger}|{slot.isoformat()}".encode()).digest()
    rest = int.from_bytes(digest[:10], "big")       # 80 bits, of which 70 are kept
    value = (ms & _MS48) << 80
    value |= 0x8 << 76                              # version 8
    value |= int(shard_of(vm_name), 16) << 72       # 4 bits: the shard
    value |= ((rest >> 68) & 0xFF) << 64            # 8 bits
    value |= 0b10 << 62                             # RFC 4122 variant
    value |= rest & ((1 << 62) - 1)                 # 62 bits
    return str(uuid.UUID(int=value))


def slot_of_job_id(job_id: str) -> datetime | None:
    """The slot a job id made by ``job_id_for`` encodes, to the millisecond; None for any other string."""
    try:
        parsed = uuid.UUID(job_id)
    except (ValueError, TypeError, AttributeError):
        return None
    if parsed.version != 8 or len(job_id) != 36:
        return None
    return _EPOCH + timedelta(milliseconds=parsed.int >> 80)


def shard_of_job_id(job_id: str) -> str | None:
    """The shard a job id made by ``job_id_for`` carries (the hex digit after its version digit)."""
    if slot_of_job_id(job_id) is None:
        return None
    return job_id[15].lower()


@dataclass
class DiskResult:
    lun: int
    blob_url: str                       # without query string: never a SAS
    status: str = "Pending"             # Pending | Completed | Failed
    snapshot_uri: str | None = None     # base blob URL + ?snapshot=<time>; no SAS
    error: str | None = None
    direct_drive: DirectDriveSnapshot | None = None     # a Direct Drive disk's snapshot (no snapshot_uri)
    # Restores (shared/domain/restore.py): the copy's progress, and the safety copy of a replaced disk.
    bytes_total: int | None = None
    bytes_done: int | None = None
    safety_copy: str | None = None
    replaced: str | None = None         # OriginalLocation of a managed disk: the VM's disk it took out

    @property
    def snapshotted(self) -> bool:
        return self.status == "Completed" and bool(self.snapshot_uri or self.direct_drive)


@dataclass
class JobError:
    error_code: str                     # service error code, e.g. ExtensionSnapshotFailedNoNetwork
    error_string: str
    error_title: str = ""
    recommendations: list[str] = field(default_factory=list)
    retryable: bool = False
    extension_code: int | None = None

    @classmethod
    def from_remediation(cls, fix: Remediation, *, detail: str | None = None,
                         extension_code: int | None = None) -> "JobError":
        """The error as recorded on a job: the likely cause, plus what the VM said when it said anything."""
        text = fix.cause if not detail else f"{fix.cause} Reported: {detail}"
        return cls(error_code=fix.error_code, error_string=text, error_title=fix.title,
                   recommendations=list(fix.recommendations), retryable=fix.retryable,
                   extension_code=extension_code)


class AttemptOutcome(str, Enum):
    """How an attempt that did not end its job ended (the job went on with a new attempt)."""

    FAILED = "Failed"                       # the extension reported a failure a retry may cure
    NOT_DISPATCHED = "NotDispatched"        # the command could not be handed to the VM
    SUPERSEDED = "Superseded"               # a newer attempt was dispatched before this one reported
    OVERTAKEN = "Overtaken"                 # an earlier attempt's success ended the job first


@dataclass
class AttemptRecord:
    """One earlier attempt of a job: what it was, how it ended, when the next one was due."""

    attempt: int
    task_id: str
    outcome: AttemptOutcome
    error_code: str | None = None
    extension_code: int | None = None
    detail: str | None = None           # short, never a SAS
    dispatched_at: datetime | None = None
    ended_at: datetime | None = None
    retry_at: datetime | None = None    # when the next attempt's task was scheduled for


@dataclass
class Job:
    job_id: str
    vm_name: str
    slot: datetime
    start_time: datetime
    trigger: Trigger = Trigger.SCHEDULED
    operation: str = "Backup"
    status: JobStatus = JobStatus.IN_PROGRESS
    phase: JobPhase = JobPhase.QUEUED
    policy_name: str | None = None
    retain_until: datetime | None = None
    end_time: datetime | None = None
    attempt: int = 1
    task_id: str | None = None
    consistency: Consistency | None = None
    disks: list[DiskResult] = field(default_factory=list)
    backup_size_bytes: int | None = None
    extension_code: int | None = None
    health_code: int | None = None
    errors: list[JobError] = field(default_factory=list)
    status_blob: str | None = None      # blob name (no SAS) of the current attempt's status blob
    log_blob: str | None = None
    last_report_at: datetime | None = None
    notes: list[str] = field(default_factory=list)   # stale/ignored reports and other remarks
    dispatched_at: datetime | None = None              # when the current attempt was handed to the VM
    backup_method: BackupMethod | None = None    # how the current attempt backs the VM up
    attempts: list[AttemptRecord] = field(default_factory=list)   # the job's other attempts, as they ended
    # Restore-point attempts: the Location of the ARM long-running operation creating the restore point
    # (an ARM URL, no secret in it); when the restore point fails, that operation says why.
    arm_operation: str | None = None
    restore: RestoreSpec | None = None      # Restore and RestoreTest jobs: what was asked
    checks: list[Check] = field(default_factory=list)     # RestoreTest jobs: the validations made

    def __post_init__(self) -> None:
        # Callers written before these were enums (and tests) may still hand the plain value.
        self.trigger = Trigger(self.trigger)
        if self.backup_method is not None:
            self.backup_method = BackupMethod(self.backup_method)

    @property
    def duration(self) -> timedelta | None:
        if self.end_time is None:
            return None
        return self.end_time - self.start_time

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def expected_task_id(self) -> str:
        """The taskId the current attempt's extension echoes in its status."""
        return self.task_id or f"{self.job_id}_{self.attempt}"

    @classmethod
    def new_backup(cls, *, vm_name: str, slot: datetime, now: datetime, trigger: Trigger = Trigger.SCHEDULED,
                   policy_name: str | None = None, retain_until: datetime | None = None) -> "Job":
        return cls(
            job_id=job_id_for(vm_name, slot, trigger),
            vm_name=vm_name,
            slot=utc(slot),
            start_time=utc(now),
            trigger=trigger,
            policy_name=policy_name,
            retain_until=retain_until,
            task_id=None,
        )
