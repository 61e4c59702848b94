"""The snapshot task: the versioned queue-message contract between the scheduler and the worker.

Defined once, used by both sides. It never carries a SAS token or any other secret: the worker
mints SAS at dispatch time from the job's VM inventory.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from shared.clock import shifted, utc
from shared.errors import ValidationError

SCHEMA = "vmsnap.snapshot-task/1"
MAX_MESSAGE_BYTES = 64 * 1024

# The one rule for job ids, wherever one enters: the task message, a status blob's name, the CLI.
# A job id becomes a Table Storage key and a blob name prefix; Table Storage refuses / \ # ? and
# control characters (U+0000-U+001F, U+007F-U+009F) in keys (docs/scheduling.md, "Job ids").
MAX_ID_CHARS = 128
ID_PATTERN = rf"[^/\\#?\x00-\x1f\x7f-\x9f]{{1,{MAX_ID_CHARS}}}"
_ID = re.compile(ID_PATTERN)


def validate_job_id(value: object, field: str = "jobId") -> str:
    """``value`` if it can be a job id; ValidationError naming ``field`` and the rule otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{field} must be a non-empty string", field=field)
    if len(value) > MAX_ID_CHARS:
        raise ValidationError(f"{field} has {len(value)} characters; a job id has at most {MAX_ID_CHARS}",
                              field=field)
    if not _ID.fullmatch(value):
        raise ValidationError(f"{field} {value!r} contains a character a job id cannot hold "
                              f"(/ \\ # ? or a control character)", field=field)
    return value


# The window a task's slot must fall in when the worker makes its job from the message (a task put on the
# queue by hand, or one whose job record was lost). Ahead: the scheduler sends a slot at most an hour
# early (planning.MAX_LOOKAHEAD), plus clock skew. Behind: the stale-job sweep reads jobs whose slot
# lies within the catch-up bound plus JOB_HORIZON (shared/services/sweeping.py); a job made older than
# that could never time out and would block its VM. Jobs the service made itself are trusted as stored.
MAX_TASK_LEAD = timedelta(hours=2)
JOB_HORIZON = timedelta(days=3)


class Trigger(str, Enum):
    SCHEDULED = "Scheduled"
    ON_DEMAND = "OnDemand"
    INITIAL = "Initial"


@dataclass(frozen=True)
class SnapshotTask:
    job_id: str
    attempt: int
    vm_name: str
    slot: datetime
    trigger: Trigger = Trigger.SCHEDULED
    policy_name: str | None = None
    retain_until: datetime | None = None
    not_before: datetime | None = field(default=None, compare=False)

    @property
    def task_id(self) -> str:
        """The extension's taskId: ``<job guid>_<attempt>``, new for every attempt."""
        return f"{self.job_id}_{self.attempt}"

    @property
    def message_id(self) -> str:
        """Service Bus MessageId: duplicate detection drops a second send of the same attempt."""
        return self.task_id

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": SCHEMA,
                "jobId": self.job_id,
                "attempt": self.attempt,
                "vmName": self.vm_name,
                "slot": _iso(self.slot),
                "trigger": self.trigger.value,
                "policyName": self.policy_name,
                "retainUntil": _iso(self.retain_until) if self.retain_until else None,
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, body: bytes | str) -> "SnapshotTask":
        """Decode a message body; a malformed one raises ValidationError naming the field."""
        if isinstance(body, bytes):
            if len(body) > MAX_MESSAGE_BYTES:
                raise ValidationError(f"task message is {len(body)} bytes, over {MAX_MESSAGE_BYTES}")
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValidationError("task message is not UTF-8 text") from exc
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ValidationError(f"task message is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ValidationError("task message must be a JSON object")
        if doc.get("schema") != SCHEMA:
            raise ValidationError(
                f"unsupported task schema {doc.get('schema')!r}, expected {SCHEMA!r}", field="schema"
            )
        job_id = validate_job_id(doc.get("jobId"))
        vm_name = _required_str(doc, "vmName")
        attempt = doc.get("attempt")
        if not isinstance(attempt, int) or isinstance(attempt, bool) or not 1 <= attempt <= 1000:
            raise ValidationError("attempt must be an integer from 1 to 1000", field="attempt")
        try:
            trigger = Trigger(doc.get("trigger", Trigger.SCHEDULED.value))
        except ValueError as exc:
            raise ValidationError(f"unknown trigger {doc.get('trigger')!r}", field="trigger") from exc
        policy = doc.get("policyName")
        if policy is not None and not isinstance(policy, str):
            raise ValidationError("policyName must be a string", field="policyName")
        return cls(
            job_id=job_id,
            attempt=attempt,
            vm_name=vm_name,
            slot=_parse_time(doc, "slot"),
            trigger=trigger,
            policy_name=policy,
            retain_until=None if doc.get("retainUntil") is None else _parse_time(doc, "retainUntil"),
        )


def check_new_task(task: SnapshotTask, now: datetime, *, catch_up: timedelta,
                   max_retention: timedelta) -> None:
    """ValidationError naming the field and the window when a task's times cannot start a job now.

    ``slot`` within [now - catch_up - JOB_HORIZON, now + MAX_TASK_LEAD]; ``retainUntil``, when given,
    after the slot and at most ``max_retention`` after it. Nothing is created for a task refused here."""
    earliest, latest = shifted(now, -(catch_up + JOB_HORIZON)), shifted(now, MAX_TASK_LEAD)
    if not earliest <= task.slot <= latest:
        raise ValidationError(f"slot {_iso(task.slot)} lies outside the window a new job may start in "
                              f"({_iso(earliest)} to {_iso(latest)}: the catch-up bound and the sweep's horizon "
                              f"behind, {int(MAX_TASK_LEAD.total_seconds() // 3600)} hours ahead)", field="slot")
    if task.retain_until is not None:
        longest = shifted(task.slot, max_retention)
        if not task.slot < task.retain_until <= longest:
            raise ValidationError(f"retainUntil {_iso(task.retain_until)} must lie after the slot and at most "
                                  f"{max_retention.days // 365} years after it (by {_iso(longest)})",
                                  field="retainUntil")


def _iso(dt: datetime) -> str:
    return utc(dt).isoformat().replace("+00:00", "Z")


def _required_str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise ValidationError(f"{key} must be a non-empty string", field=key)
    return value


def _parse_time(doc: dict[str, Any], key: str) -> datetime:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ValidationError(f"{key} must be an ISO 8601 UTC time", field=key)
    try:
        return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except OverflowError as exc:    # a valid local time that lies beyond the range once made UTC
        raise ValidationError(f"{key} {value!r} lies outside the times a task can name", field=key) from exc
    except ValueError as exc:
        raise ValidationError(f"{key} is not an ISO 8601 time: {value!r}", field=key) from exc


_STATUS_BLOB_NAME = re.compile(rf"^(?:.*/)?(?P<job>{ID_PATTERN})/(?P<attempt>\d{{1,4}})\.Status\.txt$")


def parse_blob_name(blob_name: str) -> tuple[str, int] | None:
    """``<job_id>/<attempt>.Status.txt`` (a leading container name is tolerated) -> (job id, attempt)."""
    match = _STATUS_BLOB_NAME.match(blob_name or "")
    if not match:
        return None
    return match.group("job"), int(match.group("attempt"))
