"""Restore as a service job, pure: the versioned restore task (the message between the front end and the
restore worker), what a Restore or RestoreTest job records about its request, each disk's progress and
the transitions of the job (progress is a heartbeat; a completion is never lost to the sweep)."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Sequence

from shared.clock import utc
from shared.domain import remediation
from shared.domain.job_transitions import mark_failed
from shared.domain.jobs import DiskResult, Job, JobError, JobPhase, JobStatus
from shared.domain.message_body import schema_object
from shared.domain.task import validate_job_id
from shared.errors import ValidationError

RESTORE_TASK_SCHEMA = "vmsnap.restore-task/1"
RESTORE = "Restore"
RESTORE_TEST = "RestoreTest"
RESTORE_OPERATIONS = frozenset({RESTORE, RESTORE_TEST})
# A restore whose worker wrote no progress for this long has stopped (a copy polled every few seconds
# writes a heartbeat at least every HEARTBEAT): the sweep fails it then, and only then.
NO_PROGRESS_WINDOW = timedelta(minutes=30)
HEARTBEAT = timedelta(seconds=30)
# The metadata (blobs) and tag (managed disks) naming the job that created a restored disk: a resumed
# job replaces only its own partial copies, and a failed or finished drill removes only what it made.
OWNER_KEY = "vmsnaprestorejob"


class RestoreMode(str, Enum):
    """az backup restore's ``--restore-mode`` values that apply to disks."""

    ALTERNATE = "AlternateLocation"     # new blobs in a target container / new disks in a resource group
    ORIGINAL = "OriginalLocation"       # replace the VM's own disks (the VM stopped, a safety copy kept)


class DiskState(str, Enum):
    """Where one disk of a restore is; a resumed worker continues from here."""

    PENDING = "Pending"
    COPYING = "Copying"         # server-side copy started (blob copy / disk create)
    COPIED = "Copied"           # copy finished, not verified yet
    VERIFIED = "Completed"      # copied and equal to its point: never copied again
    FAILED = "Failed"
    REMOVED = "Removed"         # created by this job, then deleted (a failed restore, a drill's keep window)


@dataclass(frozen=True)
class RestoreSpec:
    """What a Restore or RestoreTest job was asked to do, kept on the job so any worker can resume it."""

    rp_name: str
    target: str                         # container, or resource group
    target_kind: str                    # "container" | "resourceGroup"
    mode: RestoreMode = RestoreMode.ALTERNATE
    lun: int | None = None
    plan_name: str | None = None        # RestoreTest: the plan that asked for the drill
    probe_file: str | None = None       # RestoreTest: a file the restored OS disk must hold
    keep_until: datetime | None = None  # RestoreTest: when what it restored is deleted
    cleaned_at: datetime | None = None  # RestoreTest: when that happened
    time_to_restore_seconds: float | None = None

    def as_record(self) -> dict[str, Any]:
        return {"rpName": self.rp_name, "target": self.target, "targetKind": self.target_kind,
                "mode": self.mode.value, "lun": self.lun, "planName": self.plan_name,
                "probeFile": self.probe_file, "keepUntil": _iso(self.keep_until),
                "cleanedAt": _iso(self.cleaned_at), "timeToRestoreSeconds": self.time_to_restore_seconds}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> "RestoreSpec":
        return cls(rp_name=str(data["rpName"]), target=str(data["target"]), target_kind=str(data["targetKind"]),
                   mode=RestoreMode(data.get("mode") or RestoreMode.ALTERNATE.value), lun=data.get("lun"),
                   plan_name=data.get("planName"), probe_file=data.get("probeFile"),
                   keep_until=_time(data.get("keepUntil")), cleaned_at=_time(data.get("cleanedAt")),
                   time_to_restore_seconds=data.get("timeToRestoreSeconds"))


@dataclass(frozen=True)
class Check:
    """One validation a drill made: its name, whether it passed, what it saw."""

    name: str
    passed: bool
    detail: str = ""

    def as_record(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> "Check":
        return cls(str(data["name"]), bool(data["passed"]), str(data.get("detail") or ""))


@dataclass(frozen=True)
class RestoreTask:
    """The restore-tasks queue message: which job to run. The job holds the request; ``step`` numbers the
    continuations a long restore sends itself (each a new message id, past duplicate detection)."""

    job_id: str
    vm_name: str
    step: int = 0

    @property
    def message_id(self) -> str:
        return f"{self.job_id}_restore_{self.step}"

    def next_step(self) -> "RestoreTask":
        return replace(self, step=self.step + 1)

    def to_json(self) -> str:
        return json.dumps({"schema": RESTORE_TASK_SCHEMA, "jobId": self.job_id, "vmName": self.vm_name,
                           "step": self.step})

    @classmethod
    def from_json(cls, body: bytes | str) -> "RestoreTask":
        data = schema_object(body, RESTORE_TASK_SCHEMA, "a restore task")
        vm, step = data.get("vmName"), data.get("step", 0)
        if not isinstance(vm, str) or not vm.strip():
            raise ValidationError("vmName must be a non-empty string", field="vmName")
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 10_000:
            raise ValidationError("step must be a whole number from 0", field="step")
        return cls(job_id=validate_job_id(data.get("jobId")), vm_name=vm, step=step)


def is_restore(job: Job) -> bool:
    return job.operation in RESTORE_OPERATIONS


def progress_percentage(disks: Sequence[DiskResult]) -> float | None:
    """How far the restore's copies are, from the bytes each disk copied (a verified disk counts whole);
    None while no disk knows its size."""
    total = sum(d.bytes_total or 0 for d in disks)
    if not total:
        return None
    done = sum((d.bytes_total or 0) if d.status in (DiskState.VERIFIED, DiskState.COPIED) else
               min(d.bytes_done or 0, d.bytes_total or 0) for d in disks)
    return round(100.0 * done / total, 1)


def stalled_only(job: Job) -> bool:
    """Failed by the sweep for lack of progress, and for nothing else: a worker that turns up may finish it."""
    return job.status is JobStatus.FAILED and [e.error_code for e in job.errors] == [remediation.RESTORE_STALLED]


def resumable(job: Job) -> bool:
    return not job.is_terminal or stalled_only(job)


def mark_progress(job: Job, disks: Sequence[DiskResult], now: datetime, *, heartbeat: bool = True) -> Job | None:
    """The job with its disks' latest state; with ``heartbeat`` the time of this progress, which keeps the
    sweep away. None when the job is final (but for a stalled one a worker resumes) or nothing changed."""
    if not resumable(job):
        return None
    changed = replace(job, disks=list(disks), phase=JobPhase.DONE if job.is_terminal else JobPhase.RUNNING,
                      last_report_at=utc(now) if heartbeat else job.last_report_at,
                      dispatched_at=job.dispatched_at or utc(now))
    return None if changed == job else changed


def last_progress(job: Job) -> datetime:
    """When the restore last showed life: its last progress, else when it was handed to a worker or made."""
    return job.last_report_at or job.dispatched_at or job.start_time


def mark_stalled(job: Job, now: datetime) -> Job | None:
    """Fail a restore whose worker made no progress for NO_PROGRESS_WINDOW; None while it does."""
    if job.is_terminal or not is_restore(job) or utc(now) - last_progress(job) < NO_PROGRESS_WINDOW:
        return None
    error = JobError.from_remediation(remediation.for_service_error(remediation.RESTORE_STALLED),
                                      detail=f"no progress since {last_progress(job).isoformat(timespec='seconds')}")
    return mark_failed(job, error, now)


def mark_completed(job: Job, disks: Sequence[DiskResult], now: datetime, *, size: int, note: str,
                   checks: Sequence[Check] = ()) -> Job | None:
    """The restore Completed with its verified disks. A job the sweep failed for lack of progress takes
    its completion after all (the work was done: a completion is never discarded); one cancelled or
    failed for another reason keeps its ending."""
    stalled = stalled_only(job)
    if not resumable(job):
        return None
    spec = job.restore
    if spec is not None:
        spec = replace(spec, time_to_restore_seconds=round((utc(now) - job.start_time).total_seconds(), 3))
    notes = job.notes + [note] if note not in job.notes else job.notes
    if stalled:
        notes = notes + ["completed after the sweep had failed it for lack of progress: the completion stands"]
    return replace(job, status=JobStatus.COMPLETED, phase=JobPhase.DONE, end_time=max(utc(now), job.start_time),
                   disks=list(disks), errors=[], backup_size_bytes=size, notes=notes, restore=spec,
                   checks=list(checks))


def mark_restore_failed(job: Job, error: JobError, disks: Sequence[DiskResult], now: datetime, *,
                        note: str | None = None, checks: Sequence[Check] = ()) -> Job | None:
    """The restore Failed with ``error`` and its disks as the rollback left them; a disk still copying or
    copied but unverified is Failed (its copy will not finish: the job no longer runs)."""
    failed = mark_failed(job, error, now)
    if failed is None:
        return None
    disks = [replace(d, status=DiskState.FAILED.value) if d.status in (DiskState.COPYING, DiskState.COPIED) else d
             for d in disks]
    spec = job.restore
    if spec is not None and spec.time_to_restore_seconds is None:
        spec = replace(spec, time_to_restore_seconds=round((utc(now) - job.start_time).total_seconds(), 3))
    notes = failed.notes + [note] if note and note not in failed.notes else failed.notes
    return replace(failed, disks=list(disks), notes=notes, restore=spec, checks=list(checks))


def drill_result(job: Job) -> str | None:
    """A RestoreTest job's verdict as drills name it: Passed, Failed, or None while it runs."""
    if job.operation != RESTORE_TEST or not job.is_terminal:
        return None
    return "Passed" if job.status is JobStatus.COMPLETED else "Failed"


def with_disk(disks: Sequence[DiskResult], lun: int, **changes: Any) -> list[DiskResult]:
    return [replace(d, **changes) if d.lun == lun else d for d in disks]


def _iso(moment: datetime | None) -> str | None:
    return utc(moment).isoformat() if moment else None


def _time(value: Any) -> datetime | None:
    return utc(datetime.fromisoformat(str(value))) if value else None

