"""The Function App: logging with redaction, then one Blueprint per module. Nothing else."""
import azure.functions as func

from functions import (alerts, dashboard, digests, restore_points, restore_tests, restorer, retention, scheduler,
                       status_ingest, sweeper, worker)
from shared.logs import configure_logging

configure_logging()

app = func.FunctionApp()
app.register_functions(scheduler.bp)
app.register_functions(worker.bp)
app.register_functions(status_ingest.bp)
app.register_functions(sweeper.bp)
app.register_functions(restore_points.bp)
app.register_functions(retention.bp)
app.register_functions(restorer.bp)
app.register_functions(digests.bp)
app.register_functions(restore_tests.bp)
app.register_functions(alerts.bp)
app.register_functions(dashboard.bp)
