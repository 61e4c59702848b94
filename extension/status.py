"""The status documents, shaped exactly like the real handler's (``Status.py``, ``HandlerUtil.py``).

Pure functions: a :class:`Report` in, JSON text out. The blob form carries everything; the file
form (``status/<seq>.status``) carries the blob text inside ``substatus[0].name``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

from extension.codes import ExtensionCode

OPERATION = "Enable"
# The real handler compares a string code with integers, so it only ever emits 0 here (or 3 for
# the crash-consistent fallback, which this handler never takes). Kept faithful so consumers are
# tested against what Azure really sends: they must derive consistency from the code (0 app, 1 FS).
SNAPSHOT_CONSISTENCY = 0
_STAMP = "__vmsnap_timestamp_placeholder__"


@dataclass(frozen=True)
class Report:
    status: str  # "success" or "error"; never "transitioning", even for code 4
    code: ExtensionCode
    message: str
    ext_error: ExtensionCode  # vmHealthStatusCode
    snapshot_info: Sequence[dict[str, Any]] | None = None
    telemetry: Sequence[tuple[str, str]] = ()
    partition_count: int = 0
    total_used_size: int = 0
    size_computation_failed: bool = False


@dataclass(frozen=True)
class Identity:
    """Who reports: from HandlerEnvironment and the settings, echoed in every status."""

    handler_name: str
    version: str
    task_id: Any
    command_start_ticks: Any
    unique_machine_id: str
    is_v2: bool = True


def blob_status_text(report: Report, identity: Identity, now: datetime) -> str:
    """The one-element JSON array for the status blob, with ``"\\/Date(<ms>)\\/"`` as the timestamp."""
    status = {
        "name": identity.handler_name,
        "operation": OPERATION,
        "status": report.status,
        "substatus": [],
        "code": str(int(report.code)),
        "taskId": identity.task_id,
        "formattedMessage": _formatted_message(report),
        "storageDetails": _storage_details(report),
        "commandStartTimeUTCTicks": identity.command_start_ticks,
        "telemetryData": [{"Value": value, "Key": key} for key, value in report.telemetry],
        "uniqueMachineId": identity.unique_machine_id,
        "snapshotInfo": list(report.snapshot_info) if report.snapshot_info is not None else None,
        "vmHealthInfo": {
            "vmHealthState": report.ext_error.health_state,
            "vmHealthStatusCode": int(report.ext_error),
        },
    }
    text = json.dumps([{"version": identity.version, "timestampUTC": _STAMP, "status": status}])
    # MS-AJAX date: the escaped slashes must appear literally in the serialized text.
    return text.replace(f'"{_STAMP}"', '"\\/Date(%d)\\/"' % _epoch_ms(now), 1)


def file_status_text(report: Report, identity: Identity, blob_text: str, now: datetime) -> str:
    """The ``status/<seq>.status`` form: the real result travels in ``substatus[0].name``."""
    terminal = report.code != ExtensionCode.ExtensionTempTerminalState
    status = {
        "name": identity.handler_name,
        "operation": OPERATION,
        # V2 VMs always say success at terminal states so CRP never marks the extension failed.
        "status": "success" if terminal and identity.is_v2 else report.status,
        "substatus": [
            {"code": "0", "name": blob_text, "status": "success", "formattedMessage": None}
        ],
        "code": str(int(report.code)),
        "taskId": identity.task_id,
        "formattedMessage": _formatted_message(report),
        "storageDetails": _storage_details(report),
        "commandStartTimeUTCTicks": identity.command_start_ticks,
        "telemetryData": None,
        "uniqueMachineId": identity.unique_machine_id,
        "snapshotInfo": None,
        "vmHealthInfo": None,
    }
    stamp = now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps([{"version": identity.version, "timestampUTC": stamp, "status": status}])


def _formatted_message(report: Report) -> dict[str, Any]:
    inner = {
        "messageStr": report.message,
        "snapshotConsistency": SNAPSHOT_CONSISTENCY,
        "jobMessage": "",
        "isSizeComputationFailed": report.size_computation_failed,
    }
    return {"lang": "en-US", "message": json.dumps(inner)}


def _storage_details(report: Report) -> dict[str, Any]:
    return {
        "partitionCount": report.partition_count,
        "totalUsedSizeInBytes": report.total_used_size,
        "isStoragespacePresent": False,
        "isSizeComputationFailed": report.size_computation_failed,
    }


def _epoch_ms(now: datetime) -> int:
    delta = now - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
