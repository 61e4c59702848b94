"""Service Bus worker: records the digest of each blob snapshot of a new recovery point, right after its
backup, so every restore of the point verifies by reading its copy only. A storage outage propagates: the
host abandons the message and Service Bus redelivers it; a digest already recorded is read, not redone."""
import logging

import azure.functions as func

from shared.bootstrap import services
from shared.domain.disk_digest import DigestRequest
from shared.messages import parsed_or_dropped
from shared.services.point_data import record_point_digests

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("record_digests")
@bp.service_bus_queue_trigger(arg_name="msg", connection="ServiceBusConnection", queue_name="%DIGEST_TASKS_QUEUE%")
def record_digests(msg: func.ServiceBusMessage) -> None:
    request = parsed_or_dropped(msg, DigestRequest.from_json, queue="digest", what="digest request", log=log)
    if request is None:
        return
    record_point_digests(services(), request)
