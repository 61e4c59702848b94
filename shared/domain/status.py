# Over 400 lines on purpose: one parser for every status blob form; the forms share field readers.
"""The status report: what the VMSnapshot extension wrote into its status blob, read into plain values.

``parse_status_blob`` is pure. It accepts every shape the extension family produces (blob form and the
agent's file form with the payload in ``substatus[0].name``, one or several status entries, the four
status words, ``\\/Date(ms)\\/`` or ISO times, codes and booleans as strings, page-blob padding) and
refuses, with a reason, what it cannot trust; ``report_time_error`` bounds the times it carries.
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
# The status words of the extension handler schema (the agent's status file, which the VMSnapshot blob
# copies); "transitioning" is not final, the other three are. Severity breaks ties between final entries.
TRANSITIONING = "transitioning"
STATUS_WORDS = (TRANSITIONING, "success", "warning", "error")
_SEVERITY = {"success": 0, "warning": 1, "error": 2}
MAX_ENTRIES = 64                    # status entries in one blob; the extension writes one
# What a job record can hold (Table Storage Edm.Int32 / Edm.Int64); a number beyond is clamped (codes)
# or dropped (the size) and noted on the job, so one odd number never costs the whole result.
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
# How far a VM's clock may be off ours: a report stamped beyond it (after now, or before its job
# started) is not believed. An end time in the future would stand on the job for good, and a time
# out of any window is where date arithmetic overflows.
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
        self.kind = kind    # empty | too_large | encoding | json | too_deep | shape


@dataclass(frozen=True)
class DirectDriveSnapshot:
    """A Direct Drive disk's snapshot (``directDriveSnapshotIdentifier``): its id, creation time and
    instant-access duration. Never its ``token``, an access credential this service does not keep."""

    id: str
    created_at: datetime | None = None
    instant_access_minutes: int | None = None

    def as_record(self) -> dict[str, Any]:
        """The JSON form job and recovery point records keep."""
        return {"id": self.id, "createdAt": self.created_at.isoformat() if self.created_at else None,
                "instantAccessMinutes": self.instant_access_minutes}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> "DirectDriveSnapshot":
        created = data.get("createdAt")
        return cls(id=str(data["id"]), created_at=_instant(created) if isinstance(created, str) else None,
                   instant_access_minutes=data.get("instantAccessMinutes"))


@dataclass(frozen=True)
class DiskReport:
    """One ``snapshotInfo`` entry; entries follow the order of the disks' SAS list."""

    index: int
    successful: bool
    snapshot_uri: str | None = None
    blob_uri: str | None = None
    error: str | None = None
    direct_drive: DirectDriveSnapshot | None = None     # a host-path Direct Drive snapshot (snapshotUri null)


@dataclass(frozen=True)
class StatusReport:
    code: int                         # the run result (docs/error-codes.md); 4 = still running
    status: str                       # one of STATUS_WORDS (lower case)
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
        """Not final: "transitioning", or code 4, the VMSnapshot handler's own in-progress marker, which
        it writes with the word "success"."""
        return self.code == IN_PROGRESS_CODE or self.status == TRANSITIONING

    @property
    def succeeded(self) -> bool:
        """Final and not an error: "success", or "warning" (finished, with something to look at)."""
        return not self.in_progress and self.status in ("success", "warning")

    @property
    def warning(self) -> bool:
        return not self.in_progress and self.status == "warning"


def parse_status_blob(data: bytes) -> StatusReport:
    """Read one status blob (or agent status file); ParseError names what is wrong.

    With several status entries the most final one is the report: a final entry (success, warning,
    error) over an unfinished one, then the newest ``timestampUTC``, then the more severe word, then
    the first written. Entries that name different taskIds are refused: a blob reports one task.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ParseError("status blob content must be bytes", kind="shape")
    data = bytes(data)
    if len(data) > MAX_STATUS_BYTES:
        raise ParseError(f"status blob is {len(data)} bytes, over the {MAX_STATUS_BYTES} byte limit",
                         kind="too_large")
    text = _decode(data)
    if not text:
        raise ParseError("status blob is empty", kind="empty")
    reports = _entries(_loads(text, "status blob"), "status blob", source="blob")
    task_ids = sorted({r.task_id for r in reports if r.task_id})
    if len(task_ids) > 1:
        raise ParseError(f"the status entries name {len(task_ids)} different taskIds ({_show(task_ids[0])}, "
                         f"{_show(task_ids[1])}); a status blob reports on one task", kind="shape")
    return max(reports, key=_finality)      # max keeps the first of equals: the first written


def report_time_error(report: StatusReport, *, not_before: datetime, now: datetime,
                      skew: timedelta = MAX_CLOCK_SKEW) -> str | None:
    """Why the report's times are not believed, or None.

    ``timestampUTC`` and ``commandStartTimeUTCTicks`` must lie within [``not_before`` - skew, ``now`` +
    skew]: ``not_before`` is when the job started (the command is issued after it, the report written
    after the command), and no report is written after now.
    """
    earliest, latest = _shifted(not_before, -skew), _shifted(now, skew)
    minutes = int(skew.total_seconds() // 60)
    for name, value in (("timestampUTC", report.timestamp), ("commandStartTimeUTCTicks", report.command_start)):
        if value is None:
            continue
        if value > latest:
            return (f"{name} {value.isoformat()} lies in the future (more than {minutes} minutes after "
                    f"{now.isoformat(timespec='seconds')}); the VM's clock is wrong or the blob was not written "
                    f"by the extension, so its result is not trusted")
        if value < earliest:
            return (f"{name} {value.isoformat()} is before the job started ({not_before.isoformat(timespec='seconds')}"
                    f", less {minutes} minutes of clock skew); the VM's clock is wrong or the blob was not "
                    f"written for this job, so its result is not trusted")
    return None


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


def _entries(doc: Any, what: str, *, source: str) -> list[StatusReport]:
    """Every status entry of a document (an array of elements, or one element), each read as a report;
    an element of the file form stands for the entries of the payload it carries."""
    elements = doc if isinstance(doc, list) else [doc]
    if not elements:
        raise ParseError(f"{what} is an empty JSON array; expected one status element", kind="shape")
    if len(elements) > MAX_ENTRIES:
        raise ParseError(f"{what} has {len(elements)} status elements, over the limit of {MAX_ENTRIES}",
                         kind="shape")
    reports = []
    for position, element in enumerate(elements):
        where = "status element" if len(elements) == 1 else f"status element {position + 1} of {len(elements)}"
        if not isinstance(element, dict):
            raise ParseError(f"{where} is not a JSON object", kind="shape")
        status = element.get("status")
        if not isinstance(status, dict):
            raise ParseError(f"{where} has no 'status' object", kind="shape")
        inner = _substatus_payload(status) if source == "blob" else None
        if inner is not None:
            reports.extend(_entries(inner, "substatus[0].name", source="file"))
            continue
        try:
            reports.append(_report(status, _timestamp(element), source=source))
        except ParseError as exc:
            if len(elements) == 1:
                raise
            raise ParseError(f"{where}: {exc.reason}", kind=exc.kind) from None
    return reports


def _finality(report: StatusReport) -> tuple[bool, bool, datetime, int]:
    """How final a report is, for ``max``: final over unfinished, then newest, then most severe."""
    stamped = report.timestamp is not None
    return (not report.in_progress, stamped, report.timestamp or _EPOCH,
            -1 if report.in_progress else _SEVERITY[report.status])


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
    word = status.get("status")
    if not isinstance(word, str) or not word.strip():
        raise ParseError(f"status.status is missing; expected one of {', '.join(STATUS_WORDS)}", kind="shape")
    word = word.strip().lower()
    if word not in STATUS_WORDS:
        raise ParseError(f"status.status {_show(word)} is not a word of the extension handler schema "
                         f"({', '.join(STATUS_WORDS)})", kind="shape")
    code = _clamped(_int(status.get("code")), "status.code", notes)
    if code is None and word == TRANSITIONING and status.get("code") is None:
        code = IN_PROGRESS_CODE     # the handler schema lets an unfinished status leave its code out
    if code is None:
        raise ParseError(f"status.code is missing or not a number: {_show(status.get('code'))}", kind="shape")
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
        status=word,
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
        disks=_disks(status.get("snapshotInfo"), notes),
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


def _disks(entries: Any, notes: list[str]) -> tuple[DiskReport, ...] | None:
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
            direct_drive=_direct_drive(entry.get("directDriveSnapshotIdentifier"), index, notes) if ok else None,
        ))
    return tuple(disks)


def _direct_drive(value: Any, index: int, notes: list[str]) -> DirectDriveSnapshot | None:
    """``{creationTime: {DateTime: "\\/Date(ms)\\/", OffsetMinutes}, id, token, instantAccessDurationMinutes}``
    without its token; None without an id (nothing to find the snapshot by)."""
    if not isinstance(value, dict):
        return None
    snapshot_id = scrub_text(value.get("id")) if isinstance(value.get("id"), str) else None
    if not snapshot_id:
        return None
    created = value.get("creationTime")
    if isinstance(created, dict):
        created = created.get("DateTime")
    minutes = _clamped(_int(value.get("instantAccessDurationMinutes")),
                       f"snapshotInfo[{index}].directDriveSnapshotIdentifier.instantAccessDurationMinutes", notes)
    return DirectDriveSnapshot(id=snapshot_id, created_at=_instant(created) if isinstance(created, str) else None,
                               instant_access_minutes=minutes)


def _timestamp(element: dict[str, Any]) -> datetime | None:
    value = element.get("timestampUTC")
    if value is None or value == "":
        return None
    moment = _instant(value) if isinstance(value, str) else None
    if moment is None:
        raise ParseError(f"timestampUTC {_show(value)} is neither \\/Date(ms)\\/ nor an ISO 8601 time within "
                         f"the years 1-9999", kind="shape")
    return moment


def _instant(text: str) -> datetime | None:
    """``\\/Date(ms)\\/`` or ISO 8601 as an aware UTC time; None for anything else, also for a time that
    leaves datetime's range once moved to UTC (``0001-01-01T00:00+01:00``)."""
    match = _MS_DATE.match(text.strip())
    try:
        if match:
            return _EPOCH + timedelta(milliseconds=int(match.group(1)))
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


def _shifted(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, held at datetime's bounds instead of overflowing."""
    try:
        return moment + delta
    except OverflowError:
        bound = datetime.max if delta > timedelta(0) else datetime.min
        return bound.replace(tzinfo=moment.tzinfo)


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
