"""Timer: the alert evaluator (shared/services/alerting.py): jobs that turned final since its last run,
slots whose deadline passed, RPO watches come due; then the webhook gets what it is owed."""
import azure.functions as func

from shared.bootstrap import services
from shared.services.alerting import evaluate_alerts

bp = func.Blueprint()


@bp.function_name("evaluate_alerts")
@bp.timer_trigger(arg_name="timer", schedule="%ALERT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def evaluate(timer: func.TimerRequest) -> None:
    evaluate_alerts(services())     # it logs what it did (at DEBUG when nothing happened: it runs every 30 s)
