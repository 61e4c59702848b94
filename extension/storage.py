"""The VM's used storage, reported as ``storageDetails`` in the final status (the backup size).

On a Linux VM it is what the real handler measures (``SizeCalculation.py``): the used bytes of the
local file systems. A VM simulated on this machine has only page-blob disks, which its dispatcher
describes in the file ``VMSNAP_VM_DISKS`` names: their size is its used storage.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from extension.config import VM_DISKS_ENV
from extension.freeze import local_mounts
from extension.layout import atomic_write

log = logging.getLogger(__name__)

ONE_TIB = 1 << 40


@dataclass(frozen=True)
class UsedStorage:
    partition_count: int
    used_bytes: int
    failed: bool = False

    def capped(self, lun_count: int) -> "UsedStorage":
        """At most 1 TiB per protected LUN, as the real handler caps it."""
        return UsedStorage(self.partition_count, min(self.used_bytes, ONE_TIB * lun_count), self.failed)


def measure(env: Mapping[str, str] = os.environ) -> UsedStorage:
    """The simulated VM's disks when ``VMSNAP_VM_DISKS`` is set, else this machine's file systems."""
    disks_file = env.get(VM_DISKS_ENV)
    return simulated_disks_usage(Path(disks_file)) if disks_file else file_system_usage(local_mounts())


def partition_count(env: Mapping[str, str] = os.environ) -> int:
    """What the in-progress report says, without measuring anything."""
    disks_file = env.get(VM_DISKS_ENV)
    if disks_file:
        return len(_read_disks(Path(disks_file)) or [])
    return len(local_mounts())


def file_system_usage(mounts: Iterable[str]) -> UsedStorage:
    """Used bytes of each mount point (``df``'s "used"); a mount that cannot be read fails the sum."""
    mounts = list(mounts)
    used, failed = 0, False
    for mount in mounts:
        try:
            st = os.statvfs(mount)
        except OSError as exc:
            log.warning("cannot measure %s: %s", mount, exc.strerror)
            failed = True
            continue
        used += (st.f_blocks - st.f_bfree) * st.f_frsize
    return UsedStorage(len(mounts), used, failed)


def simulated_disks_usage(path: Path) -> UsedStorage:
    """The sum of the described disks' sizes; unreadable or unsized disks mark the size as failed."""
    disks = _read_disks(path)
    if disks is None:
        return UsedStorage(0, 0, failed=True)
    sizes = [d.get("sizeBytes") for d in disks]
    known = [s for s in sizes if isinstance(s, int) and not isinstance(s, bool) and s > 0]
    if len(known) != len(sizes):
        log.warning("%d of %d disk(s) in %s have no size", len(sizes) - len(known), len(sizes), path)
    return UsedStorage(len(disks), sum(known), failed=len(known) != len(sizes))


def write_simulated_disks(path: Path, disks: Iterable[Mapping[str, object]]) -> None:
    """What a dispatcher of simulated VMs writes: ``[{"lun", "name", "sizeBytes"}, ...]``."""
    atomic_write(Path(path), json.dumps([dict(d) for d in disks]))


def _read_disks(path: Path) -> list[dict[str, Any]] | None:
    try:
        disks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("cannot read the VM's disks from %s: %s", path, exc)
        return None
    if not isinstance(disks, list) or not all(isinstance(d, dict) for d in disks):
        log.warning("%s is not a list of disks", path)
        return None
    return disks
