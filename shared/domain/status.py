"""The status report: what the VMSnapshot extension wrote into its status blob, read into plain values.

``parse_status_blob`` is pure. It accepts every shape the real extension produces (blob form and the
agent's file form with the payload in ``substatus[0].name``, ``\\/Date(ms)\\/`` or ISO times, codes and
booleans as strings, page-blob padding) and refuses, with a reason, what it cannot trust.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.domain.bloburl import base_of, without_secrets
from shared.domain.ticks import from_ticks

MAX_STATUS_BYTES = 1024 * 1024      # the extension's blobs are a few KiB; its page-blob cap is 10 MiB
MAX_JSON_DEPTH = 32                 # the deepest real payload is 6 levels
MAX_DISKS = 256
MAX_TEXT = 512                      # per-disk error and message text kept on the job

IN_PROGRESS_CODE = 4
# What a job record can hold (Table Storage Edm.Int32 / Edm.Int64); a number beyond is clamped (codes)
# or dropped (the size) and noted on the job, so one odd number never costs the whole result.
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
# Reports stamped further ahead than this are not believed: no VM clock is that far off, and an end
# time in the future would stand on the job for good.
MAX_CLOCK_SKEW = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS_DATE = re.compile(r"^\\?/Date\((-?\d{1,15})(?:[+-]\d{4})?\)\\?/$")
_STATUS_CODE_NAME = re.compile(r"StatusCode\.(\w+),")
_SECRET_PARAM = re.compile(r"(?i)\b(sig|se|sv|sp|spr|st|sr|skoid|sktid|skt|ske|sks|skv|saoid|suoid|scid)=[^&\s\"'<>]*")
_XML_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<\n]{0,400})")
_XML_AUTH_DETAIL = re.compile(r"<AuthenticationErrorDetail>([^<]{0,400})")


class ParseError(ValueError):
    """A status blob that cannot be read; ``reason`` says why in words a user can act on."""

    def __init__(self, reason: str, *, kind: str = "invalid"):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind    # empty | too_large | encoding | json | too_deep | shape | time


@dataclass(frozen=True)
class DiskReport:
    """One ``snapshotInfo`` entry; entries follow the order of the disks' SAS list."""

    index: int
    successful: bool
    snapshot_uri: str | None = None
    blob_uri: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class StatusReport:
    code: int                         # the run result (docs/error-codes.md); 4 = still running
    status: str                       # "success" | "error" | other word as written (lower case)
    source: str = "blob"              # "blob" | "file" (payload found in substatus[0].name)
    timestamp: datetime | None = None
    task_id: str | None = None
    command_start: datetime | None = None
    message: str = ""
    status_code_names: tuple[str, ...] = ()
    snapshot_consistency: int | None = None
    health_state: int | None = None
    health_code: int | None = None
    backup_size_bytes: int | None = None
    size_computation_failed: bool | None = None
    disks: tuple[DiskReport, ...] | None = None
    upload_error: bool = False
    telemetry: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    notes: tuple[str, ...] = ()       # what the parser had to change to keep the report (numbers out of range)

    @property
    def in_progress(self) -> bool:
        return self.code == IN_PROGRESS_CODE

    @property
    def succeeded(self) -> bool:
        return not self.in_progress and self.status == "success"


def parse_status_blob(data: bytes) -> StatusReport:
    """Read one status blob (or agent status file); ParseError names what is wrong."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ParseError("status blob content must be bytes", kind="shape")
    data = bytes(data)
    if len(data) > MAX_STATUS_BYTES:
        raise ParseError(f"status blob is {len(data)} bytes, over the {MAX_STATUS_BYTES} byte limit",
                         kind="too_large")
    text = _decode(data)
    if not text:
        raise ParseError("status blob is empty", kind="empty")
    doc = _loads(text, "status blob")
    status = _status_object(doc)
    inner = _substatus_payload(status)
    if inner is not None:
        return _report(_status_object(inner), _timestamp(_first(inner)), source="file")
    return _report(status, _timestamp(_first(doc)), source="blob")


def check_report_time(report: StatusReport, now: datetime, *, skew: timedelta = MAX_CLOCK_SKEW) -> None:
    """ParseError (kind ``time``) when the report is stamped in the future beyond clock skew."""
    if report.timestamp is not None and report.timestamp > now + skew:
        raise ParseError(
            f"timestampUTC {report.timestamp.isoformat()} lies in the future (more than "
            f"{int(skew.total_seconds() // 60)} minutes after {now.isoformat(timespec='seconds')}); the VM's "
            f"clock is wrong or the blob was not written by the extension, so its result is not trusted",
            kind="time")


def strip_secrets(url: Any) -> str | None:
    """A URL without any query parameter but ``snapshot``/``versionid``: never keep a SAS."""
    return without_secrets(url)


def scrub_text(text: object, limit: int = MAX_TEXT) -> str | None:
    """Text from the VM made safe to keep: SAS parameters blanked, storage XML condensed, length capped."""
    if text is None:
        return None
    text = str(text)
    code = _XML_CODE.search(text)
    if code:
        message = _XML_MESSAGE.search(text)
        auth = _XML_AUTH_DETAIL.search(text)
        text = code.group(1) + (": " + message.group(1).strip() if message else "") + (
            " " + auth.group(1).strip() if auth else "")
    text = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}=REDACTED", text).replace("\0", "").strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- internals -------------------------------------------------------------------------------

def _decode(data: bytes) -> str:
    # Page blobs are padded with spaces to 512 bytes and may carry NULs past the text.
    data = data.rstrip(b"\0 \t\r\n").lstrip(b" \t\r\n")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"status blob is not UTF-8 text (byte {exc.start})", kind="encoding") from None


def _loads(text: str, what: str) -> Any:
    try:
        doc = json.loads(text)
    except RecursionError:
        raise ParseError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels", kind="too_deep") from None
    except json.JSONDecodeError as exc:
        raise ParseError(f"{what} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                         kind="json") from None
    except ValueError as exc:   # e.g. an integer longer than Python converts (4300 digits)
        raise ParseError(f"{what} is not usable JSON: {_show(str(exc))}", kind="json") from None
    if _depth(doc) > MAX_JSON_DEPTH:
        raise ParseError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels", kind="too_deep")
    return doc


def _depth(doc: Any) -> int:
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                return level
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, level + 1) for child in children)
    return deepest


def _first(doc: Any) -> dict[str, Any]:
    if isinstance(doc, list):
        if not doc:
            raise ParseError("status blob is an empty JSON array; expected one status element", kind="shape")
        doc = doc[0]
    if not isinstance(doc, dict):
        raise ParseError("status element is not a JSON object", kind="shape")
    return doc


def _status_object(doc: Any) -> dict[str, Any]:
    status = _first(doc).get("status")
    if not isinstance(status, dict):
        raise ParseError("status element has no 'status' object", kind="shape")
    return status


def _substatus_payload(status: dict[str, Any]) -> Any | None:
    """The agent file form carries the whole blob payload as text in ``substatus[0].name``."""
    sub = status.get("substatus")
    if not isinstance(sub, list) or not sub or not isinstance(sub[0], dict):
        return None
    name = sub[0].get("name")
    if not isinstance(name, str) or not name.lstrip().startswith(("[", "{")):
        return None
    return _loads(name, "substatus[0].name")


def _report(status: dict[str, Any], timestamp: datetime | None, *, source: str) -> StatusReport:
    notes: list[str] = []
    code = _clamped(_int(status.get("code")), "status.code", notes)
    if code is None:
        raise ParseError(f"status.code is missing or not a number: {_show(status.get('code'))}", kind="shape")
    word = status.get("status")
    if not isinstance(word, str) or not word.strip():
        raise ParseError("status.status is missing; expected 'success' or 'error'", kind="shape")
    inner = _message(status.get("formattedMessage"))
    message = scrub_text(inner.get("messageStr", "") if isinstance(inner, dict) else "", 1000) or ""
    health = status["vmHealthInfo"] if isinstance(status.get("vmHealthInfo"), dict) else {}
    storage = status["storageDetails"] if isinstance(status.get("storageDetails"), dict) else {}
    telemetry = _telemetry(status.get("telemetryData"))
    task_id = status.get("taskId")
    ticks = _int(status.get("commandStartTimeUTCTicks"))
    size = _int(storage.get("totalUsedSizeInBytes"))
    if size is not None and not INT64[0] <= size <= INT64[1]:
        notes.append(f"storageDetails.totalUsedSizeInBytes {_show_number(size)} is beyond what the job "
                     f"record holds (Int64); the backup size is not recorded")
        size = None
    return StatusReport(
        code=code,
        status=word.strip().lower(),
        source=source,
        timestamp=timestamp,
        task_id=task_id.strip() if isinstance(task_id, str) and task_id.strip() else None,
        command_start=_ticks(ticks),
        message=message,
        status_code_names=tuple(dict.fromkeys(_STATUS_CODE_NAME.findall(message))),
        snapshot_consistency=_clamped(_int(inner.get("snapshotConsistency")) if isinstance(inner, dict) else None,
                                      "snapshotConsistency", notes),
        health_state=_clamped(_int(health.get("vmHealthState")), "vmHealthInfo.vmHealthState", notes),
        health_code=_clamped(_int(health.get("vmHealthStatusCode")), "vmHealthInfo.vmHealthStatusCode", notes),
        backup_size_bytes=size if size is not None and size >= 0 else None,
        size_computation_failed=_bool(storage.get("isSizeComputationFailed")),
        disks=_disks(status.get("snapshotInfo")),
        upload_error="statusBlobUploadError=true" in message or _bool(telemetry.get("statusBlobUploadError")) is True,
        telemetry=telemetry,
        notes=tuple(notes),
    )


def _clamped(value: int | None, name: str, notes: list[str]) -> int | None:
    """``value`` within Int32, noting in ``notes`` when it had to be clamped."""
    if value is None or INT32[0] <= value <= INT32[1]:
        return value
    bound = INT32[1] if value > 0 else INT32[0]
    notes.append(f"{name} {_show_number(value)} is beyond what the job record holds (Int32); recorded as {bound}")
    return bound


def _show_number(value: int) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text.lstrip('-'))} digits)"


def _message(formatted: Any) -> dict[str, Any]:
    """``formattedMessage.message`` is JSON inside a string; plain text is kept as the message."""
    if not isinstance(formatted, dict):
        return {}
    raw = formatted.get("message")
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        return {}
    if raw.lstrip().startswith("{"):
        try:
            inner = _loads(raw, "formattedMessage.message")
        except ParseError as exc:
            if exc.kind == "too_deep":
                raise
            return {"messageStr": raw}
        return inner if isinstance(inner, dict) else {}
    return {"messageStr": raw}


def _telemetry(items: Any) -> dict[str, str]:
    if not isinstance(items, list):
        return {}
    pairs: dict[str, str] = {}
    for item in items[:200]:
        if isinstance(item, dict) and isinstance(item.get("Key"), str):
            value = item.get("Value")
            pairs[item["Key"][:100]] = scrub_text(value, 200) or ""
    return pairs


def _disks(entries: Any) -> tuple[DiskReport, ...] | None:
    if not isinstance(entries, list):
        return None
    disks = []
    for index, entry in enumerate(entries[:MAX_DISKS]):
        if not isinstance(entry, dict):
            continue
        ok = _bool(entry.get("isSuccessful")) is True
        snapshot = strip_secrets(entry.get("snapshotUri"))
        error = scrub_text(entry.get("errorMessage"))
        disks.append(DiskReport(
            index=index,
            successful=ok,
            snapshot_uri=snapshot if ok else None,
            blob_uri=strip_secrets(entry.get("blobUri")) or (strip_secrets(base_of(snapshot)) if snapshot else None),
            error=None if ok else (error or "snapshot failed; the extension gave no error text"),
        ))
    return tuple(disks)


def _timestamp(element: dict[str, Any]) -> datetime | None:
    value = element.get("timestampUTC")
    if value is None or value == "":
        return None
    if isinstance(value, str):
        match = _MS_DATE.match(value.strip())
        try:
            if match:
                return _EPOCH + timedelta(milliseconds=int(match.group(1)))
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except (ValueError, OverflowError):
            pass
        else:
            return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
    raise ParseError(f"timestampUTC {_show(value)} is neither \\/Date(ms)\\/ nor an ISO 8601 time", kind="shape")


def _ticks(ticks: int | None) -> datetime | None:
    if ticks is None:
        return None
    try:
        return from_ticks(ticks)
    except (OverflowError, ValueError):
        return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,400}\s*", value):
        return int(value)
    return None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int):
        return bool(value)
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
