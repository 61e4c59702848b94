"""Fixtures for scheduling tests: Services on Azurite tables (policies, items), in-memory jobs and queue."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.inventory import OS_DISK_LUN, Disk, Vm, VmKind
from tests.fakes import InMemoryInventory, InMemoryJobStore, RecordingTaskQueue

T0 = datetime(2025, 6, 2, 12, 0, tzinfo=timezone.utc)   # a Monday, no DST change near


def local_vm(name: str, data_disks: int = 1) -> Vm:
    base = "http://127.0.0.1:10000/devstoreaccount1/disks"
    disks = [Disk(OS_DISK_LUN, f"{base}/{name}-os.vhd", "osdisk")]
    disks += [Disk(lun, f"{base}/{name}-data{lun}.vhd", f"data{lun}") for lun in range(data_disks)]
    return Vm(name=name, kind=VmKind.LOCAL, disks=tuple(disks))


@pytest.fixture
def make_services(make_settings):
    """Services at a fixed time on fresh tables; jobs and queue in memory (override any of them)."""

    def factory(at: datetime = T0, vms=("vm1",), **overrides) -> Services:
        defaults = dict(jobs=InMemoryJobStore(), task_queue=RecordingTaskQueue(),
                        inventory=InMemoryInventory(*(local_vm(n) for n in vms)))
        defaults.update(overrides)
        clock = defaults.pop("clock", None) or FixedClock(at)
        return Services(make_settings(), clock=clock, **defaults)

    return factory


class HostDied(Exception):
    """The host running a tick died: not a TransientError, so no retry rides it out and the tick ends."""


def dies(*_args, **_kwargs):
    """Stands in for a port method during which the host dies."""
    raise HostDied("host died")
