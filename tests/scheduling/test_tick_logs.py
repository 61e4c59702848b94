"""What a tick logs at the default level (INFO, what the Functions host keeps): one summary per shard with
work and one for the tick, whatever the fleet's size, naming the slots and the first jobs; the line per task
is at DEBUG (docs/monitoring.md, "Logs worth their cost")."""
from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone

import pytest

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.shards import SHARDS
from shared.services.protection import enable_protection
from shared.services.scheduling import run_scheduling_tick
from shared.settings import Connection, Settings
from tests.fakes import InMemoryInventory, InMemoryJobStore, RecordingTaskQueue
from tests.scheduling.conftest import local_vm
from tests.scheduling.fakes import InMemoryPolicyStore, InMemoryProtectedItemStore, InMemoryShardProgressStore

SLOT = datetime(2025, 6, 2, 22, 30, tzinfo=timezone.utc)        # DefaultPolicy's daily slot


def fleet(size: int) -> Services:
    names = [f"vm{n:04d}" for n in range(size)]
    svc = Services(Settings(storage=Connection("BackupStorage", "x"), service_bus=Connection("ServiceBusConnection", "x")),
                   clock=FixedClock(SLOT - timedelta(hours=1)), jobs=InMemoryJobStore(),
                   task_queue=RecordingTaskQueue(), policies=InMemoryPolicyStore(),
                   protected_items=InMemoryProtectedItemStore(), progress=InMemoryShardProgressStore(),
                   inventory=InMemoryInventory(*(local_vm(name) for name in names)))
    for name in names:
        enable_protection(svc, name, "DefaultPolicy", initial_backup=False)
    return svc


@pytest.mark.parametrize("size", [40, 400])
def test_a_tick_logs_a_summary_per_shard_not_a_line_per_task(size, caplog):
    """40 or 400 VMs due at 22:30: at most a line per shard and one for the tick at INFO, each shard's line
    naming the slot and its first jobs; every task's line at DEBUG."""
    svc = fleet(size)
    svc.clock.current = SLOT
    with caplog.at_level(logging.DEBUG, logger="shared"):
        result = run_scheduling_tick(svc, fan_out=False)
    assert result.tasks_sent == size
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(info) <= len(SHARDS) + 1, info
    shards = [line for line in info if ", shard " in line]
    assert shards and all(f"tasks by slot: {SLOT.isoformat()} x" in line for line in shards)
    job_ids = {job.job_id for job in svc.jobs.jobs.values()}
    assert all(sum(job_id in line for job_id in job_ids) == min(5, int(re.search(r"(\d+) tasks sent", line)[1]))
               for line in shards)
    per_task = [r for r in caplog.records if r.levelno == logging.DEBUG and r.getMessage().startswith("task ")]
    assert len(per_task) == size
