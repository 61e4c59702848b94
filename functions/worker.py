"""Service Bus worker: turns a snapshot task into the VMSnapshot extension command and dispatches it.

Every outcome the service records (dispatched, duplicate, retry scheduled, failed, rejected) completes
the message. A job store or queue that stays unreachable for minutes propagates, so the host abandons
the message and Service Bus redelivers it (and dead-letters it after MaxDeliveryCount).
"""
import logging

import azure.functions as func

from shared.bootstrap import services
from shared.services.dispatch import dispatch_with_retries

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("dispatch_snapshot")
@bp.service_bus_queue_trigger(arg_name="msg", connection="ServiceBusConnection",
                              queue_name="%SNAPSHOT_TASKS_QUEUE%")
def dispatch_snapshot(msg: func.ServiceBusMessage) -> None:
    # An outage of the job store or queue is ridden out here, inside the message's lock: the
    # platform's own redeliveries come seconds apart and end in the dead-letter queue after ten.
    svc = services()
    with svc.telemetry.span("dispatch_snapshot", message_id=msg.message_id, delivery=msg.delivery_count):
        outcome = dispatch_with_retries(svc, msg.get_body(), message_id=msg.message_id or "",
                                        delivery_count=msg.delivery_count or 1)
    # From when the task was due (a retry's when it was scheduled for) to its command handed over.
    svc.telemetry.latency_since("dispatch", msg.scheduled_enqueue_time_utc or msg.enqueued_time_utc, svc.clock.now())
    log.info("message %s: %s", msg.message_id, outcome)
