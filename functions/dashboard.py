"""HTTP: the dashboard's JSON API under /api/v1/ and its pages (docs/dashboard.md). Read-only and thin:
each function names its route, and shared/web checks the query, calls the use case and renders.
Every function needs a function key in Azure (auth_level FUNCTION); App Service authentication can
stand in front (infra parameter dashboardAuthClientId). With DASHBOARD_KEEP_WARM the overview is computed
on a thread as the app loads and then every few minutes, so no page waits for the report."""
import logging
import os
import threading
from typing import Mapping

import azure.functions as func

from shared.bootstrap import services
from shared.errors import ConfigurationError
from shared.services.dashboard import keep_warm
from shared.settings import dashboard_keep_warm
from shared.web import api, pages
from shared.web.http import serve_api, serve_page

log = logging.getLogger(__name__)
bp = func.Blueprint(http_auth_level=func.AuthLevel.FUNCTION)


@bp.function_name("api_compliance")
@bp.route(route="v1/compliance", methods=["GET"])
def api_compliance(req: func.HttpRequest) -> func.HttpResponse:
    return serve_api(req, api.compliance, api.COMPLIANCE_PARAMS)


@bp.function_name("api_items")
@bp.route(route="v1/items", methods=["GET"])
def api_items(req: func.HttpRequest) -> func.HttpResponse:
    return serve_api(req, api.items, api.ITEMS_PARAMS)


@bp.function_name("api_item")
@bp.route(route="v1/items/{name}", methods=["GET"])
def api_item(req: func.HttpRequest) -> func.HttpResponse:
    return serve_api(req, api.item, (), name=req.route_params["name"])


@bp.function_name("api_item_points")
@bp.route(route="v1/items/{name}/recoverypoints", methods=["GET"])
def api_item_points(req: func.HttpRequest) -> func.HttpResponse:
    return serve_api(req, api.item_points, api.POINTS_PARAMS, name=req.route_params["name"])


@bp.function_name("api_jobs")
@bp.route(route="v1/jobs", methods=["GET"])
def api_jobs(req: func.HttpRequest) -> func.HttpResponse:
    return serve_api(req, api.jobs, api.JOBS_PARAMS)


@bp.function_name("api_job")
@bp.route(route="v1/jobs/{id}", methods=["GET"])
def api_job(req: func.HttpRequest) -> func.HttpResponse:
    return serve_api(req, api.job, (), job_id=req.route_params["id"])


@bp.function_name("api_alerts")
@bp.route(route="v1/alerts", methods=["GET"])
def api_alerts(req: func.HttpRequest) -> func.HttpResponse:
    return serve_api(req, api.alerts, api.ALERTS_PARAMS)


@bp.function_name("api_alert")
@bp.route(route="v1/alerts/{name}", methods=["GET"])
def api_alert(req: func.HttpRequest) -> func.HttpResponse:
    return serve_api(req, api.alert, (), name=req.route_params["name"])


@bp.function_name("api_restore_tests")
@bp.route(route="v1/restore-tests", methods=["GET"])
def api_restore_tests(req: func.HttpRequest) -> func.HttpResponse:
    return serve_api(req, api.restore_tests, api.RESTORE_TESTS_PARAMS)


@bp.function_name("api_restore_test_plans")
@bp.route(route="v1/restore-tests/plans", methods=["GET"])
def api_restore_test_plans(req: func.HttpRequest) -> func.HttpResponse:
    return serve_api(req, api.restore_test_plans, ())


@bp.function_name("api_openapi")
@bp.route(route="v1/openapi.json", methods=["GET"])
def api_openapi(req: func.HttpRequest) -> func.HttpResponse:
    return serve_api(req, api.openapi, ())


@bp.function_name("dashboard_overview")
@bp.route(route="dashboard", methods=["GET"])
def dashboard_overview(req: func.HttpRequest) -> func.HttpResponse:
    return serve_page(req, pages.overview, pages.OVERVIEW_PARAMS)


@bp.function_name("dashboard_items")
@bp.route(route="dashboard/items", methods=["GET"])
def dashboard_items(req: func.HttpRequest) -> func.HttpResponse:
    return serve_page(req, pages.items, pages.ITEMS_PARAMS)


@bp.function_name("dashboard_item")
@bp.route(route="dashboard/items/{name}", methods=["GET"])
def dashboard_item(req: func.HttpRequest) -> func.HttpResponse:
    return serve_page(req, pages.item, pages.ITEM_PARAMS, name=req.route_params["name"])


@bp.function_name("dashboard_jobs")
@bp.route(route="dashboard/jobs", methods=["GET"])
def dashboard_jobs(req: func.HttpRequest) -> func.HttpResponse:
    return serve_page(req, pages.jobs, pages.JOBS_PARAMS)


@bp.function_name("dashboard_job")
@bp.route(route="dashboard/jobs/{id}", methods=["GET"])
def dashboard_job(req: func.HttpRequest) -> func.HttpResponse:
    return serve_page(req, pages.job, pages.JOB_PARAMS, job_id=req.route_params["id"])


@bp.function_name("dashboard_restore_tests")
@bp.route(route="dashboard/restore-tests", methods=["GET"])
def dashboard_restore_tests(req: func.HttpRequest) -> func.HttpResponse:
    return serve_page(req, pages.restore_tests, pages.DRILLS_PARAMS)


def _start_keeping_warm(env: Mapping[str, str]) -> None:
    try:
        wanted = dashboard_keep_warm(env)
    except ConfigurationError as exc:
        log.error("the dashboard's overview is not computed ahead: %s", exc)
        return
    if wanted:
        threading.Thread(target=keep_warm, args=(services, threading.Event()), name="dashboard-warm",
                         daemon=True).start()


_start_keeping_warm(os.environ)
