"""Timer: each tick schedules the backups whose slots are due (policies and protected items in Table)."""
import logging

import azure.functions as func

from shared.bootstrap import services
from shared.services.scheduling import run_scheduling_tick

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("schedule_backups")
@bp.timer_trigger(arg_name="timer", schedule="%SNAPSHOT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def schedule_backups(timer: func.TimerRequest) -> None:
    result = run_scheduling_tick(services(), past_due=timer.past_due)
    log.info("scheduling tick done (past_due=%s): %s", timer.past_due, result)
