"""Timer: follows the restore points of managed-disk backups until their jobs finish (or time out)."""
import logging

import azure.functions as func

from shared.bootstrap import services
from shared.services.restore_point_backup import track_restore_points

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("track_restore_points")
@bp.timer_trigger(arg_name="timer", schedule="%RESTORE_POINT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def track(timer: func.TimerRequest) -> None:
    result = track_restore_points(services())
    log.info("restore points: examined %d, finished %d, retrying %d, unreachable %d", result.examined,
             len(result.finished), len(result.retrying), len(result.unreachable))
