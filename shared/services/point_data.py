"""A recovery point's data: whether it is still there (each disk's blob snapshot, or the VM restore point),
and its digest recorded right after its backup.

Retention asks before it deletes anything of a VM (the point it keeps must be restorable); restore
asks when a copy finds its source gone. What is found missing makes the point Unavailable.

A new point of blob snapshots is read once right after its backup (a digest request per point, sent where
the backup's result is applied, at least once): each snapshot's digest is recorded, so that every restore of
the point, the first too, verifies by reading its copy only (docs/restore.md#the-digest).
"""
from __future__ import annotations

import logging
from typing import Protocol

from shared.domain.disk_digest import DigestRequest
from shared.domain.inventory import BackupMethod
from shared.domain.recovery import RecoveryPoint
from shared.errors import PermanentError, VmsnapError
from shared.ports import Digested
from shared.services.needs import (HasDigestQueue, HasDiskCopier, HasInventory, HasProtectedItems, HasRecoveryPoints,
                                   HasRestorePoints, HasSettings, HasSnapshots)
from shared.services.restore_point_backup import vm_resource_id

log = logging.getLogger(__name__)


class PointDataNeeds(HasInventory, HasProtectedItems, HasRestorePoints, HasSnapshots, Protocol):
    """What missing_data() reads."""


def missing_data(svc: PointDataNeeds, point: RecoveryPoint) -> str | None:
    """What of the point's data is gone (a sentence naming it), or None when all of it is there.

    One request per blob snapshot, or one read of the VM restore point. A disk whose snapshot this
    service cannot look up (no blob snapshot URL: a Direct Drive snapshot identifier) counts as there.
    NotFoundError when the VM of a restore point is unknown (nothing can be confirmed), TransientError
    when storage or the Compute API cannot answer: either way the caller must not assume the data gone.
    """
    if point.method is BackupMethod.RESTORE_POINT:
        if not point.restore_point_id:
            return "the point names no VM restore point"
        name = point.restore_point_id.rstrip("/").rsplit("/", 1)[-1]
        state = svc.restore_points.get(vm_resource_id(svc, point.vm_name), name)
        if state is None:
            return f"VM restore point {point.restore_point_id} no longer exists"
        if state.provisioning_state.lower() != "succeeded":
            return f"VM restore point {point.restore_point_id} is {state.provisioning_state}"
        return None
    gone = [d for d in point.disks if d.is_blob_snapshot and not svc.snapshots.snapshot_exists(d.snapshot)]
    if not gone:
        return None
    return "; ".join(f"the snapshot of disk LUN {d.lun} ({d.snapshot}) no longer exists" for d in gone)


class RequestDigestsNeeds(HasDigestQueue, HasSettings, Protocol):
    """What request_digests() reads."""


class RecordDigestsNeeds(HasDiskCopier, HasRecoveryPoints, Protocol):
    """What record_point_digests() reads."""


def request_digests(svc: RequestDigestsNeeds, point: RecoveryPoint) -> bool:
    """Ask for the digests of a new point's blob snapshots (a duplicate request is dropped by the queue, and
    one that finds them recorded costs a read per disk). False when nothing was sent: recording is off
    (``DIGEST_AFTER_BACKUP``), the point has no blob snapshot, or the queue refused (logged: the point stands,
    its first restore reads the snapshots too)."""
    if not svc.settings.digest_after_backup or not point.blob_snapshots:
        return False
    try:
        svc.digest_queue.send([DigestRequest(point.vm_name, point.name)])
    except VmsnapError as exc:
        log.warning("recovery point %s of VM %s: its digests could not be requested (%s); its first restore "
                    "will read its snapshots too", point.name, point.vm_name, exc)
        return False
    return True


def record_point_digests(svc: RecordDigestsNeeds, request: DigestRequest) -> dict[Digested, int]:
    """Record the digest of each blob snapshot of the point the request names: how many were recorded, were
    there already, or were gone. A point that no longer exists, or holds no data, is nothing to do.
    A snapshot this service cannot read (another storage account, access refused) is logged and counted
    REFUSED: a redelivery could not change that, and the point's restore says the same with its advice.
    TransientError (storage unreachable or refusing a write) propagates: the message is delivered again."""
    point = svc.recovery_points.get(request.vm_name, request.rp_name)
    counts = {outcome: 0 for outcome in Digested}
    if point is None or not point.state.holds_data:
        log.info("recovery point %s of VM %s: %s; no digest to record", request.rp_name, request.vm_name,
                 "not found" if point is None else f"it is {point.state.value}")
        return counts
    for url in point.blob_snapshots:
        try:
            counts[svc.disk_copier.record_digest(url)] += 1
        except PermanentError as exc:
            log.warning("recovery point %s of VM %s: a snapshot's digest cannot be recorded: %s", point.name,
                        point.vm_name, exc)
            counts[Digested.REFUSED] += 1
    log.info("recovery point %s of VM %s: digests %s", point.name, point.vm_name,
             ", ".join(f"{outcome.value} {n}" for outcome, n in counts.items() if n) or "none to record")
    if counts[Digested.GONE]:
        log.warning("recovery point %s of VM %s: %d snapshot(s) already gone as their digests were recorded",
                    point.name, point.vm_name, counts[Digested.GONE])
    return counts
