"""Timer: the alert evaluator (shared/services/alerting.py): jobs that turned final since its last run,
slots whose deadline passed, RPO watches come due; then the webhook gets what it is owed."""
import logging

import azure.functions as func

from shared.bootstrap import services
from shared.services.alerting import evaluate_alerts

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("evaluate_alerts")
@bp.timer_trigger(arg_name="timer", schedule="%ALERT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def evaluate(timer: func.TimerRequest) -> None:
    result = evaluate_alerts(services())
    log.info("alerts: %s", result)
