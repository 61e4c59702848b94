"""Restore drills: a RestoreTest job restores a point into a scratch container / resource group through the
restore worker, validates what came back (data: every disk equals its point; content: the OS disk's
partition table, file system and probe file), records Passed/Failed with its checks and time to restore,
and deletes what it restored once the plan's keep window ends. A timer runs the due plans."""
from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from shared.domain.inventory import OS_DISK_LUN, BackupMethod
from shared.domain.jobs import DiskResult, Job
from shared.domain.restore import RESTORE_TEST, Check, DiskState, RestoreMode, with_disk
from shared.domain.restore_testing import (MAX_KEEP_HOURS, RestoreTestPlan, choose_point, partition_table)
from shared.errors import ConflictError, NotFoundError, PermanentError, TransientError, VmsnapError
from shared.ports import JobQuery, RestorePointRefused
from shared.services.restore import create_restore_job, plan_restore, queue_restore
from shared.services.needs import (HasClock, HasDiskCopier, HasFilesystems, HasInventory, HasJobs, HasProtectedItems,
                                   HasRecoveryPoints, HasRestorePoints, HasRestoreQueue, HasRestoreTests)

log = logging.getLogger(__name__)


class StartDrillNeeds(HasClock, HasDiskCopier, HasInventory, HasJobs, HasProtectedItems, HasRecoveryPoints,
                      HasRestorePoints, HasRestoreQueue, HasRestoreTests, Protocol):
    """What start_drill(), run_due_drills() read."""


class PlanForNeeds(HasProtectedItems, HasRestoreTests, Protocol):
    """What plan_for() reads."""


class ValidateNeeds(HasDiskCopier, HasFilesystems, HasRestorePoints, Protocol):
    """What validate() reads."""


class CleanUpDrillsNeeds(HasClock, HasDiskCopier, HasJobs, HasRestorePoints, Protocol):
    """What clean_up_drills() reads."""


class ContentNeeds(HasDiskCopier, HasFilesystems, Protocol):
    """What _content() reads."""


class CleanNeeds(HasDiskCopier, HasJobs, HasRestorePoints, Protocol):
    """What _clean() reads."""


class RemoveNeeds(HasDiskCopier, HasRestorePoints, Protocol):
    """What _remove() reads."""

HEAD_BYTES = 1024 * 1024            # the partition table (MBR, or GPT and its entries) lies within this
GRANT_SECONDS = 900                 # a managed disk's read grant lasts this long
ADHOC_PLAN = "adhoc"


def start_drill(svc: StartDrillNeeds, vm_name: str, rp_name: str | None = None, plan: RestoreTestPlan | None = None,
                rng: random.Random | None = None) -> Job:
    """Create a RestoreTest job for the VM (its point: ``rp_name``, else the plan's choice) and queue it."""
    plan = plan or plan_for(svc, vm_name)
    now = svc.clock.now()
    if rp_name is None:
        point = choose_point(svc.recovery_points.list_for_vm(vm_name), plan, now, rng or random.Random())
        if point is None:
            raise NotFoundError(f"VM {vm_name} has no Available recovery point of the last {plan.window_days} "
                                f"day(s) to test; back it up first ('vmsnap backup-now --vm {vm_name}')")
        rp_name = point.name
    known = svc.recovery_points.get(vm_name, rp_name)
    if known is None:
        raise NotFoundError(f"recovery point {rp_name!r} of VM {vm_name!r} not found")
    managed = known.method is BackupMethod.RESTORE_POINT
    # A container of its own per drill, so two drills of one VM never meet; managed disks get the drill's
    # job in their names instead (a resource group is not made per drill).
    token = hashlib.sha256(f"{vm_name}|{rp_name}|{now.isoformat()}".encode()).hexdigest()[:10]
    container = None if managed else f"{plan.scratch}-{token}"[:63]
    _, disks, spec = plan_restore(svc, vm_name, rp_name, container, plan.scratch if managed else None, None,
                                  RestoreMode.ALTERNATE, plan_name=plan.name, probe_file=plan.probe_file,
                                  keep_until=now + timedelta(hours=min(plan.keep_hours, MAX_KEEP_HOURS)))
    job = create_restore_job(svc, known, disks, spec, operation=RESTORE_TEST)
    log.info("job %s: restore drill of VM %s (point %s, plan %s) queued", job.job_id, vm_name, rp_name, plan.name)
    return queue_restore(svc, job)


def plan_for(svc: PlanForNeeds, vm_name: str) -> RestoreTestPlan:
    """The first plan (by name) that selects the VM, else an ad-hoc plan with the defaults."""
    item = svc.protected_items.get(vm_name)
    policy = item.policy_name if item is not None else None
    plans: list[RestoreTestPlan] = svc.restore_tests.list()
    return next((plan for plan in plans if plan.selects(vm_name, policy)), RestoreTestPlan(name=ADHOC_PLAN))


def validate(svc: ValidateNeeds, job: Job, backup_job_id: str) -> list[Check]:
    """What a drill checks once its disks are restored and verified: data, then the OS disk's content."""
    checks = [Check("data", True, f"{len(job.disks)} disk(s) equal their recovery point")]
    os_disk = next((d for d in job.disks if d.lun == OS_DISK_LUN), None)
    if os_disk is None:
        return checks
    managed = "/providers/Microsoft.Compute/disks/" in os_disk.blob_url
    url = os_disk.blob_url
    try:
        if managed:
            url = svc.restore_points.grant_read(os_disk.blob_url, GRANT_SECONDS)
        checks += _content(svc, job, url, managed, backup_job_id)
    except (TransientError, PermanentError, RestorePointRefused, NotFoundError) as exc:
        checks.append(Check("content", False, f"the restored OS disk could not be read: {exc}"))
    finally:
        if managed:
            try:
                svc.restore_points.revoke_read(os_disk.blob_url)
            except VmsnapError as exc:
                log.warning("job %s: the read grant on %s could not be ended: %s", job.job_id, os_disk.blob_url, exc)
    return checks


def _content(svc: ContentNeeds, job: Job, url: str, managed: bool, backup_job_id: str) -> list[Check]:
    read = svc.disk_copier.read_range
    head = read(url, 0, HEAD_BYTES)
    table = partition_table(head)
    how = " through a read grant" if managed else ""
    if table is None:
        return [Check("partition table", False, f"the restored OS disk holds no MBR or GPT partition table{how}")]
    kind, parts = table
    checks = [Check("partition table", True, f"{kind}{how}, " + ", ".join(
        f"#{p.number} type {p.kind} at {p.start // 2**20} MiB, {p.size // 2**20} MiB" for p in parts))]
    root = max(parts, key=lambda p: p.size)
    image = read(url, root.start, root.size)
    probe = job.restore.probe_file if job.restore else None
    found = svc.filesystems.inspect(image, offset=0, probe=probe)
    if found.kind is None:
        checks.append(Check("file system", False, f"partition #{root.number} holds no file system this drill reads"))
        return checks
    checks.append(Check("file system", True, f"{found.kind} '{found.label}' on partition #{root.number}, "
                                             f"{found.blocks} blocks"))
    if probe:
        checks.append(_probe_check(backup_job_id, probe, found.probe_content, found.probe_error))
    return checks


def _probe_check(backup_job: str, probe: str, content: bytes | None, error: str | None) -> Check:
    """The probe file must name the backup the point came from: its job id (the guest writes the task id
    of the backup that snapshots it, ``<job id>_<attempt>``, before the snapshot)."""
    name = f"probe file {probe}"
    if content is None:
        return Check(name, False, f"not readable: {error}")
    text = content.decode("utf-8", "replace").strip()
    if backup_job in text:
        return Check(name, True, f"holds {text[:80]!r}: written by backup job {backup_job} before its snapshot")
    return Check(name, False, f"holds {text[:80]!r}, not the id of backup job {backup_job}")


# --- cleanup after the keep window ------------------------------------------------------------------

@dataclass
class CleanupResult:
    jobs: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)       # what could not be removed now (next run)


def clean_up_drills(svc: CleanUpDrillsNeeds, *,
                    lookback: timedelta = timedelta(hours=MAX_KEEP_HOURS + 24)) -> CleanupResult:
    """Delete what each final RestoreTest job restored once its keep window has passed."""
    now = svc.clock.now()
    result = CleanupResult()
    query = JobQuery(operation=RESTORE_TEST, since=now - lookback, page_size=200)
    while True:
        page = svc.jobs.query(query)
        for job in page.jobs:
            spec = job.restore
            if job.is_terminal and spec is not None and spec.cleaned_at is None and \
                    spec.keep_until is not None and spec.keep_until <= now:
                _clean(svc, job, now, result)
        if not page.continuation:
            return result
        query = replace(query, continuation=page.continuation)


def _clean(svc: CleanNeeds, job: Job, now: datetime, result: CleanupResult) -> None:
    disks = list(job.disks)
    left = []
    for disk in job.disks:
        if disk.status == DiskState.REMOVED:
            continue
        try:
            gone = _remove(svc, job, disk)
        except (TransientError, PermanentError, RestorePointRefused) as exc:
            left.append(f"{disk.blob_url} ({exc})")
            continue
        disks = with_disk(disks, disk.lun, status=DiskState.REMOVED.value)
        if gone:
            result.removed.append(disk.blob_url)
    assert job.restore is not None
    if job.restore.target_kind == "container":
        svc.disk_copier.delete_container_if_empty(job.restore.target)
    cleaned = None if left else now

    def change(current: Job) -> Job | None:
        if current.restore is None:
            return None
        return replace(current, disks=disks, restore=replace(current.restore, cleaned_at=cleaned))

    svc.jobs.update(job.job_id, change)
    result.jobs.append(job.job_id)
    result.left += left
    log.info("job %s: drill cleaned up (%d removed, %d left)", job.job_id, len(job.disks) - len(left), len(left))


def _remove(svc: RemoveNeeds, job: Job, disk: DiskResult) -> bool:
    if "/providers/Microsoft.Compute/disks/" in disk.blob_url:
        found = svc.restore_points.get_disk(disk.blob_url)
        return found is not None and found.owner == job.job_id and bool(svc.restore_points.delete_disk(disk.blob_url))
    from shared.domain.bloburl import container_and_name

    container, name = container_and_name(disk.blob_url)
    return bool(svc.disk_copier.delete_owned(container, name, job.job_id))


# --- the timer ------------------------------------------------------------------------------------

@dataclass
class DrillRun:
    started: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    cleanup: CleanupResult = field(default_factory=CleanupResult)


def run_due_drills(svc: StartDrillNeeds) -> DrillRun:
    """Start the drills of every due plan (each plan claimed under its ETag, so two timers run it once),
    then delete what drills restored past their keep windows."""
    now = svc.clock.now()
    run = DrillRun()
    for plan in svc.restore_tests.list():
        if not plan.due(now):
            continue
        try:
            plan = svc.restore_tests.replace(plan.ran(now))
        except ConflictError:
            continue            # another run took it
        for page in svc.protected_items.pages():
            for item in page:
                if not item.is_active or not plan.selects(item.vm_name, item.policy_name):
                    continue
                try:
                    run.started.append(start_drill(svc, item.vm_name, plan=plan).job_id)
                except (NotFoundError, ConflictError, PermanentError) as exc:
                    run.refused[item.vm_name] = str(exc)
                    log.warning("plan %s: no drill of VM %s: %s", plan.name, item.vm_name, exc)
    run.cleanup = clean_up_drills(svc)
    return run
