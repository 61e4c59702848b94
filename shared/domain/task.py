"""The snapshot task: the versioned queue-message contract between the scheduler and the worker.

Defined once, used by both sides. It never carries a SAS token or any other secret: the worker
mints SAS at dispatch time from the job's VM inventory.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Literal, overload

from shared.clock import utc
from shared.errors import ValidationError

SCHEMA = "vmsnap.snapshot-task/1"
MAX_MESSAGE_BYTES = 64 * 1024


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
        job_id = _required_str(doc, "jobId")
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
            slot=_parse_time(doc, "slot", required=True),
            trigger=trigger,
            policy_name=policy,
            retain_until=_parse_time(doc, "retainUntil", required=False),
        )


def _iso(dt: datetime) -> str:
    return utc(dt).isoformat().replace("+00:00", "Z")


def _required_str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise ValidationError(f"{key} must be a non-empty string", field=key)
    return value


@overload
def _parse_time(doc: dict[str, Any], key: str, *, required: Literal[True]) -> datetime: ...
@overload
def _parse_time(doc: dict[str, Any], key: str, *, required: bool) -> datetime | None: ...
def _parse_time(doc: dict[str, Any], key: str, *, required: bool) -> datetime | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{key} must be an ISO 8601 UTC time", field=key)
    try:
        return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError as exc:
        raise ValidationError(f"{key} is not an ISO 8601 time: {value!r}", field=key) from exc
