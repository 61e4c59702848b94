"""Retention: the timer starts the daily run (expired recovery points, failed attempts' snapshots,
soft-deleted items, old status/log blobs) and settles a small fleet itself; the retention workers
settle the parts of a large one, each resuming from its part's cursor. Two runs at the same time are
safe; see shared/services/retention.py."""
import logging

import azure.functions as func

from shared.bootstrap import services
from shared.domain.retention_progress import RetentionRequest
from shared.messages import parsed_or_dropped
from shared.services.alerting import after_retention_part
from shared.services.retention import retain_part, start_retention

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("enforce_retention")
@bp.timer_trigger(arg_name="timer", schedule="%RETENTION_SCHEDULE%", run_on_startup=False, use_monitor=True)
def enforce(timer: func.TimerRequest) -> None:
    svc = services()
    start = start_retention(svc)
    for outcome in start.outcomes:
        after_retention_part(svc, outcome)     # a finished shard resolves its VMs' RetentionFailed alerts
    log.info("retention run %s started (past_due=%s): %d part(s) settled here, %d handed to the retention queue",
             start.run.isoformat(), timer.past_due, len(start.outcomes), len(start.sent))


@bp.function_name("retain_part")
@bp.service_bus_queue_trigger(arg_name="msg", connection="ServiceBusConnection", queue_name="%RETENTION_QUEUE%")
def retain_part_message(msg: func.ServiceBusMessage) -> None:
    request = parsed_or_dropped(msg, RetentionRequest.from_json, queue="retention", what="retention request", log=log)
    if request is None:
        return
    # A TransientError goes up: the message is delivered again and the part resumes from its cursor.
    svc = services()
    outcome = retain_part(svc, request)
    after_retention_part(svc, outcome)
    log.info("message %s: retention run %s, part %s %s after %d page(s) in %.1f s", msg.message_id,
             request.run.isoformat(), request.part, outcome.state, outcome.pages, outcome.seconds)

