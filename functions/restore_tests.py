"""Timer: starts the restore drills of due restore test plans, and deletes what drills restored once their
keep windows end (shared/services/restore_testing.py)."""
import logging

import azure.functions as func

from shared.bootstrap import services
from shared.services.restore_testing import run_due_drills

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("run_restore_tests")
@bp.timer_trigger(arg_name="timer", schedule="%RESTORE_TEST_SCHEDULE%", run_on_startup=False, use_monitor=True)
def run_restore_tests(timer: func.TimerRequest) -> None:
    run = run_due_drills(services())
    log.info("restore drills: %d started, %d refused; %d drill(s) cleaned up, %d resource(s) removed, %d left",
             len(run.started), len(run.refused), len(run.cleanup.jobs), len(run.cleanup.removed),
             len(run.cleanup.left))
