"""A tick over a fleet past the fan-out size: the timer sends one request per shard, and planners on
two hosts at once plan them through the real Function App; each VM gets one job and one task."""
from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

from azure.servicebus import ServiceBusClient

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.shards import SHARDS
from shared.ports import JobQuery
from shared.services.protection import enable_protection
from shared.services.scheduling import run_scheduling_tick
from shared.settings import Settings
from tests.faults.conftest import make_vms

SLOT = datetime(2025, 6, 2, 22, 30, tzinfo=timezone.utc)      # DefaultPolicy: daily at 22:30 UTC
VMS = 60


def test_a_fanned_out_tick_planned_by_two_hosts_at_once_gives_each_vm_one_job_and_one_task(stack, stack_env):
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

    hosts = [LocalFunctionsHost(function_app.app, {**env, **settings.binding_values()}, host_id=f"fan{n}")
             for n in range(2)]
    handled = [0, 0]

    def drain(n: int) -> None:
        handled[n] = hosts[n].drain_queue("plan_shard", max_wait=2.0)

    threads = [threading.Thread(target=drain, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for host in hosts:
        host.stop()
    assert sum(handled) == len(SHARDS)

    jobs = svc.jobs.query(JobQuery(since=SLOT, until=SLOT + timedelta(seconds=1), page_size=1000)).jobs
    assert Counter(job.vm_name for job in jobs) == Counter({f"fan{n:02d}": 1 for n in range(VMS)})
    with ServiceBusClient.from_connection_string(settings.service_bus.connection_string) as client, \
            client.get_queue_receiver(settings.tasks_queue) as receiver:
        queued = Counter(str(m.message_id) for m in receiver.peek_messages(max_message_count=5 * VMS))
    assert queued == Counter({f"{job.job_id}_1": 1 for job in jobs})
    assert {p.shard: p.settled_until for p in svc.progress.all()} == {
        shard: SLOT + timedelta(minutes=5) for shard in SHARDS}      # the next timer tick's time
