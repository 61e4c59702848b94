"""A tick over a fleet past the fan-out size: the timer sends one request per shard, and planners on
two hosts at once plan them through the real Function App; each VM gets one job and one task."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from azure.servicebus import ServiceBusClient

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.shards import SHARDS
from shared.ports import JobQuery
from shared.services.protection import enable_protection
from shared.services.scheduling import run_scheduling_tick
from shared.settings import Settings
from tests.faults.conftest import make_vms
from tests.polling import eventually

SLOT = datetime(2025, 6, 2, 22, 30, tzinfo=timezone.utc)      # DefaultPolicy: daily at 22:30 UTC
NEXT_TICK = SLOT + timedelta(minutes=5)
VMS = 60


@pytest.mark.timeout(900)
def test_a_fanned_out_tick_planned_by_two_hosts_at_once_gives_each_vm_one_job_and_one_task(stack, stack_env,
                                                                                           local_servicebus):
    """Once the counted fleet reaches PLANNER_FAN_OUT_ITEMS the timer fans out; two hosts' planners
    share the 16 shard requests and every VM gets exactly one job and one queued task."""
    import function_app
    from devhost.host import LocalFunctionsHost

    _, _ = stack
    env = {**stack_env, "PLANNER_QUEUE": f"plan-{stack_env['TABLE_PREFIX']}", "PLANNER_FAN_OUT_ITEMS": "10"}
    settings = Settings.from_env(env)
    clock = FixedClock(SLOT - timedelta(minutes=20))
    svc = Services(settings, clock=clock)
    for vm in make_vms(svc, "fan", VMS):
        enable_protection(svc, vm.name, initial_backup=False)

    counting = run_scheduling_tick(svc)          # nothing due yet: this tick counts the fleet
    assert (counting.fanned_out, counting.items_seen, counting.jobs_created) == (0, VMS, 0)
    clock.current = SLOT + timedelta(seconds=5)
    timer = run_scheduling_tick(svc)
    assert (timer.fanned_out, timer.shards, timer.jobs_created) == (len(SHARDS), 0, 0)

    # Both hosts listen to the planner queue as deployed hosts do, until every shard is planned and no
    # request is left, locked or not. A request whose lock is lost on a loaded machine comes back and is
    # planned again: that must not give any VM a second job or task.
    hosts = [LocalFunctionsHost(function_app.app, {**env, **settings.binding_values()}, host_id=f"fan{n}")
             for n in range(2)]
    try:
        for host in hosts:
            host.start("plan_shard")
        assert eventually(lambda: _all_planned(svc) and local_servicebus.queue_depth(settings.planner_queue) == 0,
                          timeout=600, interval=0.5), {p.shard: p.settled_until for p in svc.progress.all()}
    finally:
        for host in hosts:
            host.stop()
    assert local_servicebus.dead_letter_depth(settings.planner_queue) == 0

    jobs = svc.jobs.query(JobQuery(since=SLOT, until=SLOT + timedelta(seconds=1), page_size=1000)).jobs
    assert Counter(job.vm_name for job in jobs) == Counter({f"fan{n:02d}": 1 for n in range(VMS)})
    with ServiceBusClient.from_connection_string(settings.service_bus.connection_string) as client, \
            client.get_queue_receiver(settings.tasks_queue) as receiver:
        queued = Counter(str(m.message_id) for m in receiver.peek_messages(max_message_count=5 * VMS))
    assert queued == Counter({f"{job.job_id}_1": 1 for job in jobs})


def _all_planned(svc) -> bool:
    """Every shard's progress has reached the next timer tick's time."""
    return {p.shard: p.settled_until for p in svc.progress.all()} == {shard: NEXT_TICK for shard in SHARDS}
