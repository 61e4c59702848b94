"""Use cases around recovery points: record one per successful backup job (idempotent, also as a
repair), list and show them with their tiers and expiry, refuse a backup whose disk is near the
storage snapshot limit before it reaches the VM, and find the disks whose blob is gone."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator, Protocol, Sequence

from shared.domain import remediation
from shared.domain.inventory import Vm
from shared.domain.jobs import Job, JobError
from shared.domain.policy import Policy
from shared.domain.recovery import RecoveryPoint, Rule, near_limit, point_from_job
from shared.domain.retention import tiers_now
from shared.errors import NotFoundError, PermanentError
from shared.services.needs import (HasAlerts, HasClock, HasPolicies, HasProtectedItems, HasRecoveryPoints, HasSettings,
                                   HasSnapshots, HasTelemetry)

log = logging.getLogger(__name__)


class NearLimitNeeds(HasAlerts, HasClock, HasProtectedItems, HasTelemetry, Protocol):
    """What _near_limit() reads: alerting.snapshot_limit_near()'s RaiseNeeds, listed here rather than imported
    (alerting builds on this module, so the seam is a function-level import)."""


class DiskGuardNeeds(HasAlerts, HasClock, HasProtectedItems, HasSettings, HasSnapshots, HasTelemetry, Protocol):
    """What disk_guard_error() reads."""


class ListPointsNeeds(HasClock, HasPolicies, HasProtectedItems, HasRecoveryPoints, Protocol):
    """What list_points(), show_point() read."""


class PolicyOfNeeds(HasPolicies, HasProtectedItems, Protocol):
    """What _policy_of() reads."""


# Storage refuses more snapshots of one blob past its snapshot count limit (the extension then fails
# with code 85 on every backup); a few hundred is where users report it. Refuse a little earlier.
SNAPSHOT_LIMIT_CODE = 85


def record_recovery_point(svc: HasRecoveryPoints, job: Job) -> RecoveryPoint | None:
    """Record the recovery point of a successful backup job; the same job twice gives one point.

    Returns the point (new or already there), or None when the job left nothing restorable.
    """
    point = point_from_job(job)
    if point is None:
        return None
    if svc.recovery_points.add_if_absent(point):
        log.info("job %s: recovery point %s of VM %s recorded (%s disk(s))", job.job_id, point.name,
                 point.vm_name, len(point.disks))
    else:
        log.debug("job %s: recovery point %s already recorded", job.job_id, point.name)
    return point


@dataclass(frozen=True)
class PointView:
    """A point as ``recoverypoint list|show`` prints it: the record plus its tiers and expiry now."""

    point: RecoveryPoint
    tiers: tuple[Rule, ...]
    expires_at: datetime | None


def list_points(svc: ListPointsNeeds, vm_name: str, *, since: datetime | None = None,
                until: datetime | None = None) -> list[PointView]:
    """The VM's points that still hold data (Available, and Unavailable with the reason) in [since, until),
    newest first, with the tiers that hold them."""
    history = svc.recovery_points.list_for_vm(vm_name)
    policy = _policy_of(svc, vm_name)
    now = svc.clock.now()
    views = []
    for point in history:
        if not point.state.holds_data or (since and point.created_at < since) or (until and point.created_at >= until):
            continue
        tiers, expiry = tiers_now(point, history, policy, now)
        views.append(PointView(point, tuple(tiers), expiry))
    return views


def show_point(svc: ListPointsNeeds, vm_name: str, name: str) -> PointView:
    point = svc.recovery_points.get(vm_name, name)
    if point is None:
        raise NotFoundError(f"recovery point {name!r} of VM {vm_name!r} not found; list them with "
                            f"'vmsnap recoverypoint list --vm {vm_name}'")
    history = svc.recovery_points.list_for_vm(vm_name)
    tiers, expiry = tiers_now(point, history, _policy_of(svc, vm_name), svc.clock.now())
    held = point.state.holds_data
    return PointView(point, tuple(tiers) if held else (), expiry if held else None)


def disk_guard_error(svc: DiskGuardNeeds, vm: Vm) -> JobError | None:
    """Why the VM's disks cannot take this backup, found before dispatch, or None.

    A disk within reach of the snapshot limit gets the extension's code 85 with the advice to run
    retention, instead of the VM failing with it. A disk whose blob is missing is no reason to refuse:
    as the service does, the command goes out, the extension reports the disk (76, or 2 when every
    disk is missing), and the retry policy runs, since a storage failover can bring the blob back.
    Managed disks have neither problem here.
    """
    limit = svc.settings.snapshot_limit
    worst = 0
    for position, url, count in _snapshot_counts(svc, [disk.blob_url for disk in vm.disks]):
        disk = vm.disks[position]
        if count is None:
            log.warning("VM %s: the blob of disk LUN %s (%s) does not exist now; dispatching anyway, the "
                        "extension reports the disk and the retry policy runs", vm.name, disk.lun, url)
            continue
        worst = max(worst, count)
        if count >= limit:
            _near_limit(svc, vm, worst, limit)
            fix = remediation.for_extension_code(SNAPSHOT_LIMIT_CODE)
            error = JobError.from_remediation(
                fix, detail=f"disk LUN {disk.lun} ({url}) has {count} snapshots; this service stops at {limit}")
            error.recommendations = [f"Run 'vmsnap retention run --vm {vm.name}' to delete expired "
                                     f"snapshots, or shorten the policy's retention."] + error.recommendations
            error.retryable = False
            log.warning("VM %s: disk LUN %s has %s snapshots (limit %s); backup refused", vm.name, disk.lun,
                        count, limit)
            return error
    _near_limit(svc, vm, worst, limit)
    return None


def missing_blob_positions(svc: HasSnapshots, blob_urls: Sequence[str]) -> set[int]:
    """The positions of the page-blob disks whose blob does not exist (one listing per disk)."""
    return {position for position, _, count in _snapshot_counts(svc, blob_urls) if count is None}


def _snapshot_counts(svc: HasSnapshots, blob_urls: Sequence[str]) -> Iterator[tuple[int, str, int | None]]:
    """(position, blob URL without query, snapshot count or None when the blob does not exist) of each
    page-blob disk of the backup account. Managed disks (resource ids) are skipped, and so are disks
    outside the account: minting their SAS fails the job, saying why."""
    for position, blob_url in enumerate(blob_urls):
        url = blob_url.split("?", 1)[0]
        if not url or "/providers/" in url.lower():
            continue
        try:
            count = svc.snapshots.count_snapshots(url)
        except PermanentError:
            continue
        yield position, url, count
def _near_limit(svc: NearLimitNeeds, vm: Vm, worst: int, limit: int) -> None:
    """A disk within reach of the limit raises SnapshotLimitNear (shared/services/alerting.py)."""
    if worst >= near_limit(limit):
        from shared.services.alerting import snapshot_limit_near   # alerting builds on this module

        snapshot_limit_near(svc, vm.name, worst, limit)


def _policy_of(svc: PolicyOfNeeds, vm_name: str) -> Policy | None:
    item = svc.protected_items.get(vm_name)
    if item is None:
        return None
    try:
        policy: Policy = svc.policies.get(item.policy_name)
    except NotFoundError:
        return None
    return policy
