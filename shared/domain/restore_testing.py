"""Restore drills (restore testing), pure: the plan (which items, how often, which point, how long to keep
what it restored, what to probe), when it is due, which point it picks, and what a restored OS disk's
first sectors say (partition table, file system superblock). Ranges follow AWS Backup's restore testing."""
from __future__ import annotations

import random
import struct
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Sequence

from shared.clock import utc
from shared.domain.recovery import RecoveryPoint
from shared.errors import ValidationError

MAX_KEEP_HOURS = 168            # AWS ValidationWindowHours 0-168
MAX_WINDOW_DAYS = 365           # AWS SelectionWindowDays 1-365 (default 30)
MAX_ITEMS = 30                  # AWS: at most 30 named resources per selection
DEFAULT_SCRATCH = "vmsnap-drills"   # the scratch container / resource group drills restore into
SECTOR = 512


class Selection(str, Enum):
    ALL = "All"
    POLICY = "Policy"
    ITEMS = "Items"


class PointChoice(str, Enum):
    LATEST = "Latest"           # AWS LATEST_WITHIN_WINDOW
    RANDOM = "Random"           # AWS RANDOM_WITHIN_WINDOW


@dataclass(frozen=True)
class RestoreTestPlan:
    name: str
    selection: Selection = Selection.ALL
    members: tuple[str, ...] = ()           # policy names (Policy) or VM names (Items)
    every_hours: int = 24
    point: PointChoice = PointChoice.LATEST
    window_days: int = 30
    keep_hours: float = 1.0
    probe_file: str | None = None
    scratch: str = DEFAULT_SCRATCH          # container (page-blob points) / resource group (managed disks)
    last_run_at: datetime | None = None
    version: str | None = None

    def validated(self) -> "RestoreTestPlan":
        """The plan, or ValidationError naming the first field out of range."""
        if not self.name or len(self.name) > 60 or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValidationError(f"plan name {self.name!r}: use 1-60 letters, digits, '-' or '_'", field="name")
        if self.selection is not Selection.ALL and not self.members:
            raise ValidationError(f"a {self.selection.value} selection names at least one "
                                  f"{'policy' if self.selection is Selection.POLICY else 'VM'}", field="members")
        if len(self.members) > MAX_ITEMS:
            raise ValidationError(f"a plan names at most {MAX_ITEMS} items or policies", field="members")
        if not 1 <= self.every_hours <= 24 * 366:
            raise ValidationError("--every-hours must be 1 to 8784", field="every_hours")
        if not 1 <= self.window_days <= MAX_WINDOW_DAYS:
            raise ValidationError(f"--window-days must be 1 to {MAX_WINDOW_DAYS}", field="window_days")
        if not 0 <= self.keep_hours <= MAX_KEEP_HOURS:
            raise ValidationError(f"--keep-hours must be 0 to {MAX_KEEP_HOURS}", field="keep_hours")
        if self.probe_file is not None and (not self.probe_file.startswith("/") or "\n" in self.probe_file
                                            or '"' in self.probe_file):
            raise ValidationError("--probe-file is an absolute path in the VM's OS file system", field="probe_file")
        return self

    def due(self, now: datetime) -> bool:
        return self.last_run_at is None or utc(now) >= utc(self.last_run_at) + timedelta(hours=self.every_hours)

    def ran(self, now: datetime) -> "RestoreTestPlan":
        return replace(self, last_run_at=utc(now))

    def selects(self, vm_name: str, policy_name: str | None) -> bool:
        members = {m.lower() for m in self.members}
        if self.selection is Selection.ALL:
            return True
        if self.selection is Selection.POLICY:
            return (policy_name or "").lower() in members
        return vm_name.lower() in members

    def as_document(self) -> dict[str, Any]:
        """The plan as ``restore-test plan show -o json`` prints it (and a dashboard reads it)."""
        return {"name": self.name, "selection": {"kind": self.selection.value, "members": list(self.members)},
                "everyHours": self.every_hours,
                "recoveryPointSelection": {"algorithm": self.point.value, "windowDays": self.window_days},
                "keepHours": self.keep_hours, "probeFile": self.probe_file, "scratch": self.scratch,
                "lastRunAt": utc(self.last_run_at).isoformat() if self.last_run_at else None}


def plan_from_document(doc: dict[str, Any]) -> RestoreTestPlan:
    """A plan from its document (``as_document``); ValidationError for a malformed one."""
    try:
        selection, points = doc.get("selection") or {}, doc.get("recoveryPointSelection") or {}
        last = doc.get("lastRunAt")
        return RestoreTestPlan(
            name=str(doc["name"]), selection=Selection(selection.get("kind", Selection.ALL.value)),
            members=tuple(str(m) for m in selection.get("members") or ()), every_hours=int(doc.get("everyHours", 24)),
            point=PointChoice(points.get("algorithm", PointChoice.LATEST.value)),
            window_days=int(points.get("windowDays", 30)), keep_hours=float(doc.get("keepHours", 1.0)),
            probe_file=doc.get("probeFile"), scratch=str(doc.get("scratch") or DEFAULT_SCRATCH),
            last_run_at=utc(datetime.fromisoformat(last)) if last else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationError(f"not a restore test plan document: {exc}") from None


def choose_point(points: Sequence[RecoveryPoint], plan: RestoreTestPlan, now: datetime,
                 rng: random.Random) -> RecoveryPoint | None:
    """The point a drill restores: the newest, or a random one, among the VM's Available points of the
    last ``window_days``; None when there is none."""
    since = utc(now) - timedelta(days=plan.window_days)
    candidates = sorted((p for p in points if p.is_available and since <= utc(p.created_at) <= utc(now)),
                        key=lambda p: (p.created_at, p.name), reverse=True)
    if not candidates:
        return None
    return candidates[0] if plan.point is PointChoice.LATEST else rng.choice(candidates)


# --- what a restored OS disk holds ----------------------------------------------------------------

@dataclass(frozen=True)
class Partition:
    number: int
    start: int              # bytes from the disk's start
    size: int               # bytes
    kind: str               # MBR type byte as hex ("83": Linux), or "gpt"


def partition_table(head: bytes) -> tuple[str, list[Partition]] | None:
    """The disk's partition table from its first sectors (at least 1 KiB for GPT): ("MBR" | "GPT",
    partitions), or None when the disk has no valid one."""
    if len(head) < SECTOR or head[510:512] != b"\x55\xaa":
        return None
    entries = [struct.unpack_from("<B3xB3xII", head, 446 + 16 * i) for i in range(4)]
    if any(kind == 0xEE for _, kind, _, _ in entries) and len(head) >= 2 * SECTOR and head[512:520] == b"EFI PART":
        return "GPT", _gpt_partitions(head)
    parts = [Partition(i + 1, first * SECTOR, count * SECTOR, f"{kind:02x}")
             for i, (_, kind, first, count) in enumerate(entries) if kind and count]
    return ("MBR", parts) if parts else None


def _gpt_partitions(head: bytes) -> list[Partition]:
    entries_lba, count, size = struct.unpack_from("<QII", head, 512 + 72)
    parts = []
    for i in range(count):
        at = entries_lba * SECTOR + i * size
        if at + size > len(head):
            break
        first, last = struct.unpack_from("<QQ", head, at + 32)
        if any(head[at:at + 16]):
            parts.append(Partition(i + 1, first * SECTOR, (last - first + 1) * SECTOR, "gpt"))
    return parts


@dataclass(frozen=True)
class FileSystemCheck:
    """A file system as read from its superblock (and, for the probe, by the file system reader)."""

    kind: str | None                # "ext4", "ext3", "ext2", or None when none was recognised
    label: str = ""
    blocks: int = 0
    probe_content: bytes | None = None
    probe_error: str | None = None


EXT_SUPERBLOCK = 1024               # the superblock's offset inside the file system, and its size
_EXT_MAGIC = 0xEF53


def ext_superblock(block: bytes) -> FileSystemCheck | None:
    """An ext2/3/4 superblock (the 1 KiB at offset 1024 of the file system), or None."""
    if len(block) < 256 or struct.unpack_from("<H", block, 56)[0] != _EXT_MAGIC:
        return None
    blocks_lo, = struct.unpack_from("<I", block, 4)
    compat, incompat = struct.unpack_from("<II", block, 92)
    kind = "ext4" if incompat & 0x2C0 else "ext3" if compat & 0x4 else "ext2"   # extents/64bit/flex_bg; journal
    label = block[120:136].split(b"\0", 1)[0].decode("utf-8", "replace")
    return FileSystemCheck(kind=kind, label=label, blocks=blocks_lo)
