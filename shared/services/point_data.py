"""Whether a recovery point's data is still there: each disk's blob snapshot, or the VM restore point.

Retention asks before it deletes anything of a VM (the point it keeps must be restorable); restore
asks when a copy finds its source gone. What is found missing makes the point Unavailable.
"""
from __future__ import annotations

from typing import Protocol

from shared.domain.inventory import BackupMethod
from shared.domain.recovery import RecoveryPoint
from shared.services.needs import HasInventory, HasProtectedItems, HasRestorePoints, HasSnapshots
from shared.services.restore_point_backup import vm_resource_id


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
