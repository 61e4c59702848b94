"""The backup job record, shaped like an Azure Backup job (AzureIaaSVMJob) so users recognise it.

SEED by the lead: the fields and constructors below are the shared contract. The status-ingestion
work (issue 4) owns this module from here on and adds the transitions (apply a status report,
never go backwards) without renaming what exists.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from shared.clock import utc

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
    APPLICATION = "ApplicationConsistent"
    FILE_SYSTEM = "FileSystemConsistent"
    CRASH = "CrashConsistent"


def job_id_for(vm_name: str, slot: datetime, trigger: str = "Scheduled") -> str:
    """The deterministic job id of one (item, slot): a re-fired timer finds the same job."""
    return str(uuid.uuid5(JOB_ID_NAMESPACE, f"{vm_name.lower()}|{trigger}|{utc(slot).isoformat()}"))


@dataclass
class DiskResult:
    lun: int
    blob_url: str                       # without query string: never a SAS
    status: str = "Pending"             # Pending | Completed | Failed
    snapshot_uri: str | None = None     # base blob URL + ?snapshot=<time>; no SAS
    error: str | None = None


@dataclass
class JobError:
    error_code: str                     # service error code, e.g. ExtensionSnapshotFailedNoNetwork
    error_string: str
    error_title: str = ""
    recommendations: list[str] = field(default_factory=list)
    retryable: bool = False
    extension_code: int | None = None


@dataclass
class Job:
    job_id: str
    vm_name: str
    slot: datetime
    start_time: datetime
    trigger: str = "Scheduled"
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

    @property
    def duration(self):
        if self.end_time is None:
            return None
        return self.end_time - self.start_time

    @classmethod
    def new_backup(cls, *, vm_name: str, slot: datetime, now: datetime, trigger: str = "Scheduled",
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
