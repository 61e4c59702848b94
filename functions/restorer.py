"""Service Bus worker: performs (or resumes) the restore job a restore task names; a long restore hands
itself on as a continuation task. A store or queue outage propagates: the host abandons the message and
Service Bus redelivers it, and the next delivery resumes from the job's per-disk state."""
import logging

import azure.functions as func

from shared.bootstrap import services
from shared.domain.restore import RestoreTask
from shared.messages import parsed_or_dropped
from shared.services.restore import run_restore

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("run_restore")
@bp.service_bus_queue_trigger(arg_name="msg", connection="ServiceBusConnection", queue_name="%RESTORE_TASKS_QUEUE%")
def run_restore_task(msg: func.ServiceBusMessage) -> None:
    task = parsed_or_dropped(msg, RestoreTask.from_json, queue="restore", what="restore task", log=log)
    if task is None:
        return
    job = run_restore(services(), task)
    log.info("message %s: job %s is %s", msg.message_id, task.job_id, job.status.value if job else "unknown")
