"""The JSON documents vmsnap prints with ``-o json`` and the dashboard's API returns as they are: one
builder per shape (jobs as az prints them, the compliance report, alerts, recovery points, protected
items), so the two front ends never serialise a record twice."""
from __future__ import annotations

from dataclasses import asdict, is_dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from shared.clock import utc
from shared.domain import remediation
from shared.domain.alerts import Alert
from shared.domain.compliance import SLOT_ALLOWANCE, ItemCompliance, ItemState, SlotTally
from shared.domain.jobs import DiskResult, Job, JobStatus
from shared.domain.protection import DiskListSetting
from shared.domain.recovery import POINT_METHOD
from shared.domain.restore import RESTORE_TEST, drill_result, is_restore, progress_percentage
from shared.domain.task import Trigger
from shared.services.compliance import ComplianceReport
from shared.services.protection import ItemStatus
from shared.services.recovery import PointView


# --- values -------------------------------------------------------------------------------------

def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def _document(fields: dict[str, Any]) -> dict[str, Any]:
    """A document's fields as JSON values (what every ``*_document`` below returns)."""
    document: dict[str, Any] = to_jsonable(fields)
    return document


def format_duration(delta: timedelta | None) -> str:
    """az's duration form in tables and documents: whole seconds, ``0:20:23``."""
    if delta is None:
        return ""
    return str(timedelta(seconds=int(delta.total_seconds())))


def format_time(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S") if dt else ""


# --- jobs (vmsnap job list|show, restore-test run) ----------------------------------------------

def job_document(job: Job, now: datetime) -> dict[str, Any]:
    """The job as az prints an AzureIaaSVMJob (``properties`` with errorDetails and extendedInfo)."""
    extended: dict[str, Any]
    tasks: list[dict[str, Any]]
    if is_restore(job):
        # As az shows a restore: one task per disk with its bytes, and the whole job's percentage.
        tasks = [{"taskId": f"Restore disk {lun_label(d)}", "status": d.status, "bytesCopied": d.bytes_done,
                  "bytesTotal": d.bytes_total, "target": d.blob_url, "source": d.snapshot_uri,
                  "safetyCopy": d.safety_copy, "replacedDisk": d.replaced, "error": d.error} for d in job.disks]
        percent = 100.0 if job.status is JobStatus.COMPLETED else progress_percentage(job.disks)
        extended = {"tasksList": tasks, "progressPercentage": percent, "propertyBag": _property_bag(job)}
    else:
        tasks = [{"taskId": "Take Snapshot", "status": _snapshot_task_status(job),
                  "startTime": job.dispatched_at, "endTime": job.end_time}]
        tasks += [{"taskId": f"Snapshot disk {lun_label(d)}", "status": d.status, "blobUri": d.blob_url,
                   "snapshotUri": d.snapshot_uri, "error": d.error,
                   **({"directDriveSnapshot": d.direct_drive.as_record()} if d.direct_drive else {})}
                  for d in job.disks]
        extended = {"tasksList": tasks, "propertyBag": _property_bag(job)}
    return _document({
        "name": job.job_id,
        "type": "vmsnap/backupJobs",
        "properties": {
            "jobType": "AzureIaaSVMJob",
            "backupManagementType": "AzureIaasVM",
            "operation": job.operation,
            "status": job.status.value,
            "entityFriendlyName": job.vm_name,
            "startTime": job.start_time,
            "endTime": job.end_time,
            "duration": format_duration(job_duration(job, now)),
            "policyName": job.policy_name,
            "trigger": job.trigger,
            "slot": job.slot,
            "retainUntil": job.retain_until,
            "phase": job.phase.value,
            "attempt": job.attempt,
            "taskId": job.task_id,
            "consistency": job.consistency.value if job.consistency else None,
            "backupMethod": job.backup_method,
            "backupSizeInBytes": job.backup_size_bytes,
            "extensionCode": job.extension_code,
            "healthCode": job.health_code,
            "errorDetails": [{"errorCode": e.error_code, "errorString": e.error_string,
                              "errorTitle": e.error_title, "recommendations": e.recommendations,
                              "retryable": e.retryable, "extensionCode": e.extension_code} for e in job.errors],
            "extendedInfo": extended,
            "statusBlob": job.status_blob,
            "logBlob": job.log_blob,
            "dispatchedAt": job.dispatched_at,
            "lastReportAt": job.last_report_at,
            "attempts": [{"attempt": a.attempt, "taskId": a.task_id, "outcome": a.outcome.value,
                          "errorCode": a.error_code, "extensionCode": a.extension_code, "detail": a.detail,
                          "dispatchedAt": a.dispatched_at, "endedAt": a.ended_at, "retryAt": a.retry_at}
                         for a in job.attempts],
            "notes": job.notes,
            **({"restore": job.restore.as_record()} if job.restore else {}),
            **({"restoreTest": restore_test_document(job)} if job.operation == RESTORE_TEST else {}),
        },
    })


def restore_test_document(job: Job) -> dict[str, Any]:
    """A RestoreTest job's verdict, its checks and its times, as ``-o json`` (and a dashboard) reads them."""
    spec = job.restore
    return {"result": drill_result(job), "checks": [c.as_record() for c in job.checks],
            "timeToRestoreSeconds": spec.time_to_restore_seconds if spec else None,
            "planName": spec.plan_name if spec else None, "keepUntil": spec.keep_until if spec else None,
            "cleanedUp": spec.cleaned_at if spec else None}


def describe_code(code: int | None) -> str:
    if code is None:
        return ""
    known = remediation.EXTENSION_CODES.get(code)
    return f"{code} ({known.extension_name})" if known and known.extension_name else str(code)


def format_size(size: int | None) -> str:
    """az's 'Backup Size' form: whole MB."""
    return "" if size is None else f"{size // (1024 * 1024)} MB"


def job_duration(job: Job, now: datetime) -> timedelta | None:
    if job.end_time is not None:
        return job.duration
    return max(utc(now) - job.start_time, timedelta(0))


def lun_label(disk: DiskResult) -> str:
    return "OS disk" if disk.lun == -1 else f"LUN {disk.lun}"


def _snapshot_task_status(job: Job) -> str:
    if job.status is JobStatus.IN_PROGRESS:
        return "InProgress"
    return "Completed" if job.status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS) else job.status.value


def _property_bag(job: Job) -> dict[str, str]:
    bag = {"VM Name": job.vm_name, "Policy Name": job.policy_name or "", "Attempt": str(job.attempt),
           "Task Id": job.task_id or "", "Consistency": job.consistency.value if job.consistency else "",
           "Extension Code": describe_code(job.extension_code), "Health Code": describe_code(job.health_code)}
    if job.backup_size_bytes is not None:
        bag["Backup Size"] = format_size(job.backup_size_bytes)
    return bag


# --- the compliance report (vmsnap report compliance) ------------------------------------------

def report_document(report: ComplianceReport) -> dict[str, Any]:
    items = report.items
    total = SlotTally.combine(item.slots for item in items)
    return _document({
        "generatedAt": report.generated_at,
        "window": {"start": report.since, "end": report.generated_at, "days": report.days},
        "allowance": format_duration(SLOT_ALLOWANCE),
        "allowanceSeconds": int(SLOT_ALLOWANCE.total_seconds()),
        "summary": dict(_states(items), items=len(items), slots=_slots(total)),
        "items": [_compliance_item(item) for item in items],
        "policies": [dict(name=p.name, items=p.items, **{_state_key(s): n for s, n in p.states.items()},
                          slots=_slots(p.slots)) for p in report.policies],
    })


def _compliance_item(item: ItemCompliance) -> dict[str, Any]:
    point = item.newest_point
    error = item.last_error
    return {
        "name": item.vm_name, "policyName": item.policy_name, "state": item.state,
        "achievedRpo": format_duration(item.achieved_rpo) if item.achieved_rpo is not None else None,
        "achievedRpoSeconds": _seconds(item.achieved_rpo),
        "targetRpo": format_duration(item.target_rpo), "targetRpoSeconds": _seconds(item.target_rpo),
        "newestPoint": None if point is None else {"name": point.name, "recoveryPointTime": point.created_at,
                                                   "jobId": point.job_id, "consistency": point.consistency},
        "slots": _slots(item.slots),
        "missedSlots": list(item.slots.missed), "pendingSlots": list(item.slots.pending),
        "lastError": None if error is None else {
            "jobId": error.job_id, "slot": error.slot,
            "errorCode": error.error.error_code if error.error else None,
            "errorTitle": error.error.error_title if error.error else None,
            "errorString": error.error.error_string if error.error else None,
            "recommendations": list(error.error.recommendations) if error.error else []},
    }


def _slots(tally: SlotTally) -> dict[str, Any]:
    return {"expected": tally.expected, "met": len(tally.met), "missed": len(tally.missed),
            "pending": len(tally.pending),
            "compliance": None if tally.compliance is None else round(tally.compliance, 4)}


def _states(items: list[ItemCompliance]) -> dict[str, int]:
    return {_state_key(s): sum(i.state is s for i in items) for s in ItemState}


def _state_key(state: ItemState) -> str:
    return state.value[:1].lower() + state.value[1:]        # healthy, atRisk, unprotected


def _seconds(delta: timedelta | None) -> int | None:
    return None if delta is None else int(delta.total_seconds())


# --- alerts (vmsnap alert list|show) ----------------------------------------------------------

def alert_document(alert: Alert) -> dict[str, Any]:
    d = alert.delivery
    return _document({
        "name": alert.name, "type": "vmsnap/alerts",
        "properties": {
            "kind": alert.kind, "severity": alert.severity, "status": alert.status,
            "monitorCondition": alert.status.condition, "itemName": alert.item, "policyName": alert.policy_name,
            "targetId": alert.target_id, "firedAt": alert.fired_at, "lastSeen": alert.last_seen,
            "count": alert.count, "summary": alert.summary, "errorCode": alert.error_code,
            "errorTitle": alert.error_title, "recommendations": list(alert.recommendations),
            "occurrences": [{"key": o.key, "time": o.time, "seenAt": o.seen_at, "jobId": o.job_id,
                             "errorCode": o.error_code} for o in alert.occurrences],
            "resolvedAt": alert.resolved_at, "resolvedBy": alert.resolved_by, "resolution": alert.resolution,
            "resolvesWhen": alert.kind.resolved_by,
            "delivery": {"state": d.state, "notified": d.notified, "owed": alert.owed, "attempts": d.attempts,
                         "lastAttemptAt": d.last_attempt_at, "nextAttemptAt": d.next_attempt_at,
                         "lastError": d.last_error},
        },
    })


# --- recovery points (vmsnap recoverypoint list|show) -----------------------------------------

def point_document(view: PointView) -> dict[str, Any]:
    p = view.point
    return _document({
        "name": p.name, "vmName": p.vm_name, "recoveryPointTime": p.created_at, "state": p.state,
        "consistency": p.consistency, "tiers": [t.value for t in view.tiers], "expiryTime": view.expires_at,
        "jobId": p.job_id, "policyName": p.policy_name, "trigger": p.trigger, "retainUntil": p.retain_until,
        "sizeBytes": p.size_bytes, "method": POINT_METHOD.word(p.method), "restorePointId": p.restore_point_id,
        "deletedBy": p.deleted_by, "unavailableReason": p.unavailable_reason,
        "disks": [{"lun": d.lun, "source": d.source, "snapshot": d.snapshot, "snapshotTime": d.snapshot_time,
                   **({"directDrive": d.direct_drive.as_record()} if d.direct_drive else {})} for d in p.disks],
    })


# --- protected items (vmsnap item list|show) --------------------------------------------------

def item_document(status: ItemStatus) -> dict[str, Any]:
    item, job = status.item, status.last_job
    return _document({
        "name": item.vm_name,
        "policyName": item.policy_name,
        "protectionState": item.state.value,
        "protectedSince": item.protected_since,
        "vmKind": item.vm_kind,
        "diskLuns": list(item.disk_luns),
        "initialBackupPending": item.initial_backup_pending,
        "lastBackupJobId": job.job_id if job else None,
        "lastBackupStatus": job.status.value if job else None,
        "lastBackupTime": job.start_time if job else None,
        "inProgressJobId": _in_progress(status),
        "lastScheduledSlot": _last_scheduled_slot(status),
        "nextScheduledBackup": status.next_slot,
        "skippedSlots": [{"slot": s.slot, "reason": s.reason} for s in item.skipped],
        "purgeAfter": item.purge_after,
        # az's extendedProperties.diskExclusionProperties; absent when every disk is backed up.
        "diskExclusionProperties": None if item.disk_selection.setting is DiskListSetting.ALL else {
            "diskLunList": list(item.disk_selection.luns),
            "isInclusionList": item.disk_selection.setting is DiskListSetting.INCLUDE},
    })


def _in_progress(status: ItemStatus) -> str | None:
    """The VM's newest job while it runs (scheduled or on demand)."""
    last = status.last_job
    return last.job_id if last is not None and not last.is_terminal else None


def _last_scheduled_slot(status: ItemStatus) -> datetime | None:
    """The newest slot the scheduler settled: its own mark on the item, or the newest scheduled job's slot
    (the tick marks the shard's progress, not each item)."""
    marks = [status.item.last_slot]
    if status.last_job is not None and status.last_job.trigger is Trigger.SCHEDULED:
        marks.append(status.last_job.slot)
    known = [m for m in marks if m is not None]
    return max(known) if known else None
