"""Timer: enforce retention (expired recovery points, failed attempts' snapshots, soft-deleted items,
old status/log blobs). A second run at the same time is safe; see shared/services/retention.py."""
import logging

import azure.functions as func

from shared.bootstrap import services
from shared.services.alerting import after_retention
from shared.services.retention import run_retention

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("enforce_retention")
@bp.timer_trigger(arg_name="timer", schedule="%RETENTION_SCHEDULE%", run_on_startup=False, use_monitor=True)
def enforce(timer: func.TimerRequest) -> None:
    svc = services()
    result = run_retention(svc)
    after_retention(svc, result)     # a VM whose retention finished has its RetentionFailed alert resolved
    log.info("retention: examined %d point(s), deleted %d point(s) and %d snapshot(s), %d status blob(s); "
             "%d point(s) found Unavailable, %d VM problem(s) reported as Retention jobs",
             result.plan.examined, len(result.points_deleted), result.snapshots_deleted, result.blobs_deleted,
             len(result.marked_unavailable), len(result.plan.problems))
