"""Scheduling: the timer plans every shard's due backups, or fans the shards out to the planner,
a Service Bus-triggered function the app's instances run side by side (large fleets)."""
import logging

import azure.functions as func

from shared.bootstrap import services
from shared.domain.progress import PlanRequest
from shared.messages import parsed_or_dropped
from shared.services.scheduling import plan_shard, run_scheduling_tick

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("schedule_backups")
@bp.timer_trigger(arg_name="timer", schedule="%SNAPSHOT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def schedule_backups(timer: func.TimerRequest) -> None:
    svc = services()
    with svc.telemetry.span("schedule_backups", past_due=timer.past_due):
        result = run_scheduling_tick(svc, past_due=timer.past_due)
    svc.telemetry.latency("tick", (svc.clock.now() - result.now).total_seconds())
    log.info("scheduling tick done (past_due=%s): %s", timer.past_due, result)


@bp.function_name("plan_shard")
@bp.service_bus_queue_trigger(arg_name="msg", connection="ServiceBusConnection", queue_name="%PLANNER_QUEUE%")
def plan_shard_message(msg: func.ServiceBusMessage) -> None:
    request = parsed_or_dropped(msg, PlanRequest.from_json, queue="planner", what="plan request", log=log)
    if request is None:
        return
    if request.past_due:
        log.warning("message %s: shard %s of a past-due tick at %s; slots missed meanwhile are caught up",
                    msg.message_id, request.shard, request.tick.isoformat())
    result = plan_shard(services(), request.shard, request.tick)
    log.info("message %s: shard %s planned: %s", msg.message_id, request.shard, result)
    if result.stopped:
        # Handing the message back makes Service Bus deliver it again: the shard resumes where it stopped.
        raise RuntimeError(f"shard {request.shard} of tick {request.tick.isoformat()} stopped on a failure; "
                           f"retried by redelivery")
