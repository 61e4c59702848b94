"""Timer: applies status blobs the blob trigger missed or poisoned, then fails jobs whose extension
never reported a result in time, with what to do next."""
import logging

import azure.functions as func

from shared.bootstrap import services
from shared.services.sweeping import sweep_stale_jobs

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("sweep_stale_jobs")
@bp.timer_trigger(arg_name="timer", schedule="%SWEEP_SCHEDULE%", run_on_startup=False, use_monitor=True)
def sweep(timer: func.TimerRequest) -> None:
    result = sweep_stale_jobs(services())
    log.info("stale-job sweep: examined %d, re-ingested %d, recovered from instance view %d, timed out %d, "
             "deferred %d", result.examined, len(result.reingested), len(result.recovered),
             len(result.timed_out), len(result.deferred))
