"""A retention run over a fleet past the fan-out size, through the real Function App on two hosts at
once: the timer hands every part to the retention queue, each part continues itself a page an
invocation, and a second worker per part (a redelivery racing its continuation) settles the same part
at the same time. Every expired snapshot and failed attempt's snapshot is deleted exactly once."""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta

from azure.servicebus.exceptions import ServiceBusError

from shared.adapters.snapshots import BlobSnapshots
from shared.bootstrap import Services, reset_services
from shared.domain.jobs import DiskResult, Job, JobPhase, JobStatus
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import PointState, point_from_job
from shared.domain.retention_progress import PARTS, RetentionRequest
from shared.settings import Settings
from tests.faults.conftest import make_vms

VMS, DAYS = 12, 10
AGE = 33            # days before the run of the first backup: within the 35 days a first run reads
FAILED_DAY = 5
EXPIRED = 4         # DefaultPolicy keeps 30 daily points: days 0-3 have expired


class CountingSnapshots(BlobSnapshots):
    """The real adapter, noting each delete's outcome (shared by every worker of the run)."""

    calls: Counter[tuple[str, bool]] = Counter()
    lock = threading.Lock()

    def delete_snapshot(self, snapshot_url: str) -> bool:
        deleted = super().delete_snapshot(snapshot_url)
        with self.lock:
            self.calls[snapshot_url, deleted] += 1
        return deleted


def test_two_hosts_settling_every_part_at_once_delete_each_snapshot_once(stack, stack_env, monkeypatch):
    """Ten days of backups of 12 VMs (real blob snapshots, one failed job each), the oldest 33 days old
    (DefaultPolicy keeps 30): the two hosts' workers race on every part, yet each expired point's and
    failed attempt's snapshot is deleted once and each part finishes."""
    import function_app
    from azure.functions.timer import TimerRequest

    from devhost.host import LocalFunctionsHost
    from functions.retention import enforce
    from shared.services import retention

    base, _ = stack
    env = {**stack_env, "RETENTION_QUEUE": f"ret-{stack_env['TABLE_PREFIX']}", "PLANNER_FAN_OUT_ITEMS": "1"}
    settings = Settings.from_env(env)
    first = base.clock.now() - timedelta(days=AGE)
    svc = Services(settings, clock=base.clock, snapshots=CountingSnapshots(base.blob_service, clock=base.clock))
    reset_services(svc)
    expired, failed = set(), set()
    for vm in make_vms(svc, "ret", VMS):
        svc.protected_items.add(ProtectedItem(vm_name=vm.name, policy_name="DefaultPolicy", protected_since=first,
                                              policy_assigned_at=first))
        for day in range(DAYS):
            slot = first + timedelta(days=day)
            job = Job.new_backup(vm_name=vm.name, slot=slot, now=slot, policy_name="DefaultPolicy")
            blobs = [svc.blob_service.get_blob_client(*d.blob_url.rsplit("/", 2)[1:]) for d in vm.disks]
            snaps = [f"{b.url}?snapshot={b.create_snapshot(metadata={'jobId': job.job_id})['snapshot']}"
                     for b in (blobs[:1] if day == FAILED_DAY else blobs)]
            ok = day != FAILED_DAY
            job = replace(job, status=JobStatus.COMPLETED if ok else JobStatus.FAILED, phase=JobPhase.DONE,
                          end_time=slot + timedelta(minutes=5),
                          disks=[DiskResult(d.lun, d.blob_url, "Completed" if s else "Failed", snapshot_uri=s)
                                 for d, s in zip(vm.disks, snaps + [None] * (len(vm.disks) - len(snaps)))])
            svc.jobs.create_if_absent(job)
            if ok:
                svc.recovery_points.add_if_absent(point_from_job(job))
            (expired if ok and day < EXPIRED else failed if not ok else set()).update(snaps)
    svc.progress.update("0", lambda p: replace(p, items=VMS))       # the fleet the scheduler counted
    monkeypatch.setattr(retention, "PAGE_SIZE", 2)
    monkeypatch.setattr(retention, "INVOCATION_BUDGET", timedelta(0))

    enforce(TimerRequest(past_due=False))
    run = svc.clock.now()
    # A redelivered first request racing its own continuation: a second worker per part from the start.
    svc.retention_queue.send([RetentionRequest(part, run, seq=1) for part in PARTS])
    hosts = [LocalFunctionsHost(function_app.app, {**env, **settings.binding_values()}, host_id=f"ret{n}")
             for n in range(2)]
    finished = lambda: all(p.finished == run for p in svc.retention_progress.all())  # noqa: E731
    deadline = time.monotonic() + 600

    def serve(host) -> None:
        # As the host's listener does: receive again after a link that failed to open (a loaded machine).
        while not finished() and time.monotonic() < deadline:
            try:
                host.drain_queue("retain_part", max_wait=1.0)
            except ServiceBusError:
                continue

    threads = [threading.Thread(target=serve, args=(host,)) for host in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for host in hosts:
        host.stop()

    deleted = Counter(url for (url, ok), n in CountingSnapshots.calls.items() if ok for _ in range(n))
    assert set(deleted) == expired | failed and set(deleted.values()) == {1}, "a snapshot deleted twice, or kept"
    assert finished() and all(p.run is None for p in svc.retention_progress.all())
    for vm in (f"ret{n:02d}" for n in range(VMS)):
        states = [p.state for p in svc.recovery_points.list_for_vm(vm)]
        assert states == [PointState.AVAILABLE] * (DAYS - 1 - EXPIRED) + [PointState.DELETED] * EXPIRED
