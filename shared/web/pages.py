"""The dashboard's pages, rendered on the server from the API's own answers (shared/web/api.py), so a page
shows exactly what /api/v1/ returns: Jinja2 templates with autoescaping on (a VM name or an error text is
hostile input), inline SVG charts (charts.py), one small script and one style sheet inlined and admitted by
their hashes in a strict Content-Security-Policy. Lists are paginated."""
from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import replace
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from shared.documents import alert_document, report_document
from shared.domain.alerts import AlertStatus
from shared.redaction import redact
from shared.domain.attention import describe_age
from shared.domain.jobs import JobStatus
from shared.services.compliance import ComplianceReport
from shared.services.dashboard import MAX_AGE, RECENT_OPERATIONS, fleet_overview
from shared.services.job_listing import OPERATIONS
from shared.web import api, charts
from shared.web.http import Reply
from shared.web.params import Params, route_name

if TYPE_CHECKING:
    from shared.bootstrap import Services

BASE = "/api/dashboard"
HERE = Path(__file__).parent
OVERVIEW_ITEMS = 50         # items listed on the overview, the neediest first; the items page has the rest
OVERVIEW_ATTENTION = 20
OVERVIEW_ALERTS = 20
PAGE_ITEMS = 50
PAGE_JOBS = 50
ITEM_JOBS = 20
NAV = (("Overview", BASE, "overview"), ("Items", f"{BASE}/items", "items"), ("Jobs", f"{BASE}/jobs", "jobs"),
       ("Restore drills", f"{BASE}/restore-tests", "drills"), ("API", f"{api.PREFIX}/openapi.json", "api"))
STATE_ORDER = {"Unprotected": 0, "AtRisk": 1, "Healthy": 2}
STATUSES = [s.value for s in JobStatus]


# --- rendering ----------------------------------------------------------------------------------

@cache
def _assets() -> tuple[str, str, str]:
    """The inlined style and script, and the Content-Security-Policy that admits exactly those two."""
    style = (HERE / "static" / "dashboard.css").read_text()
    script = (HERE / "static" / "dashboard.js").read_text()
    policy = ("default-src 'none'; "
              f"style-src '{_sha256(style)}'; script-src '{_sha256(script)}'; img-src 'self'; "
              "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    return style, script, policy


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def content_security_policy() -> str:
    return _assets()[2]


def link(path: str = "", **params: Any) -> str:
    """The address of a dashboard page: path segments quoted, parameters encoded (the template escapes it)."""
    return f"{BASE}{quote(path)}" + (f"?{urlencode({k: v for k, v in params.items() if v not in (None, '')})}"
                                     if any(v not in (None, "") for v in params.values()) else "")


def api_link(path: str = "", **params: Any) -> str:
    return f"{api.PREFIX}{quote(path)}" + (f"?{urlencode(params)}" if params else "")


@cache
def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(link=link, api=api_link, nav=NAV)
    return env


class Redacted(dict):  # type: ignore[type-arg]
    """A document redacted already (a report's, reused while the report is): ``render`` passes it as it is."""


_documents: dict[int, tuple[ComplianceReport, Redacted]] = {}
_documents_lock = threading.Lock()


def report_view(report: ComplianceReport) -> Redacted:
    """The report's document, redacted, built once per report (the dashboard reuses a report for up to 30 s:
    1,000 items' documents cost a few hundred milliseconds to build and redact)."""
    with _documents_lock:
        found = _documents.get(id(report))
        if found is not None and found[0] is report:
            return found[1]
    document = Redacted(redact(report_document(report)))
    with _documents_lock:
        _documents[id(report)] = (report, document)
        while len(_documents) > 8:
            del _documents[next(iter(_documents))]
    return document


def render(template: str, *, title: str, here: str, status: int = 200, **context: Any) -> Reply:
    """The page, its documents redacted as structures first (in the HTML, escaping hides a protectedSettings
    block's quotes from the text pass every body gets at the end)."""
    style, script, policy = _assets()
    scrubbed = {key: redact(value) if isinstance(value, (dict, list, str)) and not isinstance(value, Redacted)
                and key != "charts" else value    # charts: markup drawn from redacted documents
                for key, value in context.items()}
    html = _environment().get_template(template).render(title=title, here=here, style=Markup(style),
                                                          script=Markup(script), **scrubbed)
    return Reply(html, "text/html", status, {"Content-Security-Policy": policy})


def error_page(status: int, message: str) -> Reply:
    title = {400: "Bad request", 404: "Not found", 503: "Storage unavailable"}.get(status, "Error")
    return render("error.html", title=title, here="", status=status, message=message, base=BASE)


# --- pages --------------------------------------------------------------------------------------

OVERVIEW_PARAMS: tuple[str, ...] = ()


def overview(svc: Services, q: Params) -> Reply:
    """The fleet at a glance: items by state, what needs attention, compliance per policy, the last day's
    outcomes, active alerts, and the neediest items."""
    seen = fleet_overview(svc)
    report = report_view(seen.report)
    items = sorted(report["items"], key=lambda i: (STATE_ORDER[i["state"]], i["name"].lower()))
    alerts = [alert_document(a) for a in seen.alerts.alerts[:OVERVIEW_ALERTS]]
    return render("overview.html", title="Fleet overview", here="overview", report=report,
                  age=_age(svc, seen.as_of), as_of=seen.as_of, max_age=int(MAX_AGE.total_seconds()),
                  attention=[replace(a, reasons=redact(a.reasons), advice=redact(a.advice))
                             for a in seen.attention[:OVERVIEW_ATTENTION]], attention_total=len(seen.attention),
                  recent=seen.recent, statuses=STATUSES, alerts=alerts, alerts_total=len(seen.alerts.alerts),
                  items=items[:OVERVIEW_ITEMS], more_items=len(items) > OVERVIEW_ITEMS,
                  charts={"state": charts.state_bar(report["summary"]),
                          "policies": charts.compliance_bars(report["policies"]),
                          "recent": charts.outcome_bars({op: seen.recent.counts.get(op, {})
                                                         for op in RECENT_OPERATIONS})})


ITEMS_PARAMS = ("state", "policy", "attention", "skip")


def items(svc: Services, q: Params) -> Reply:
    """Every item of the (cached) compliance report, filtered by state or policy or to those that need
    attention, a page at a time."""
    state, policy = q.choice("state", api.STATES), q.name("policy", "policy")
    attention_only = q.choice("attention", ("1",)) is not None
    report = svc.report_cache.report(svc, policy=policy)
    document = report_view(report)
    chosen = [i for i in document["items"] if state is None or i["state"] == state]
    if attention_only:
        from shared.domain.attention import needs_attention

        wanted = {a.item.lower() for a in needs_attention(report.items, svc.alerts.list(AlertStatus.ACTIVE))}
        chosen = [i for i in chosen if i["name"].lower() in wanted]
    chosen.sort(key=lambda i: (STATE_ORDER[i["state"]], i["name"].lower()))
    skip = q.integer("skip", 0, 0, 10_000_000)
    page = chosen[skip:skip + PAGE_ITEMS]
    given = q.given()
    return render("items.html", title="Items", here="items", report=document, age=_age(svc, report.generated_at),
                  items=page, total=len(chosen), skip=skip, states=api.STATES, chosen_state=state,
                  chosen_policy=policy, attention_only=attention_only,
                  first=link("/items", **{**given, "skip": None}) if skip else None,
                  next=link("/items", **{**given, "skip": skip + PAGE_ITEMS})
                  if skip + PAGE_ITEMS < len(chosen) else None)


ITEM_PARAMS: tuple[str, ...] = ()


def item(svc: Services, q: Params, name: str) -> Reply:
    """One item: its protection, achieved RPO against its policy, its points on a timeline, its recent jobs
    with their errors and advice."""
    name = route_name(name, "VM")
    item_doc = api.item(svc, q, name).document
    report = svc.report_cache.report(svc, vm=name)
    compliance = report_document(report)["items"]
    points = api.item_points(svc, Params({}, ()), name).document
    jobs = api.jobs(svc, Params({"vm": name, "top": str(ITEM_JOBS)}, api.JOBS_PARAMS)).document
    current = compliance[0] if compliance else None
    window_start = report.since
    return render("item.html", title=f"Item {item_doc['name']}", here="items", item=item_doc, compliance=current,
                  points=points, jobs=jobs, allowance=report_document(report)["allowance"],
                  charts={"rpo": charts.rpo_gauge(current["achievedRpoSeconds"], current["targetRpoSeconds"])
                          if current else "",
                          "timeline": charts.timeline(points, window_start, report.generated_at,
                                                      current["targetRpoSeconds"] if current else None)})


JOBS_PARAMS = ("vm", "status", "operation", "since", "until", "continuation")


def jobs(svc: Services, q: Params) -> Reply:
    """Jobs filtered as ``vmsnap job list`` filters them (default the last 7 days), a page at a time."""
    return _job_list(svc, q, template="jobs.html", title="Jobs", here="jobs", path="/jobs", operation=None)


DRILLS_PARAMS = ("vm", "status", "since", "until", "continuation")


def restore_tests(svc: Services, q: Params) -> Reply:
    """Restore drills: each RestoreTest job's verdict, checks and time to restore, and the plans."""
    plans = api.restore_test_plans(svc, q).document
    return _job_list(svc, q, template="drills.html", title="Restore drills", here="drills", path="/restore-tests",
                     operation="RestoreTest", plans=plans)


def _job_list(svc: Services, q: Params, *, template: str, title: str, here: str, path: str,
              operation: str | None, **context: Any) -> Reply:
    given = q.given()
    answer = api.jobs(svc, Params({**given, "top": str(PAGE_JOBS)}, api.JOBS_PARAMS), operation=operation)
    windowless = not any(given.get(k) for k in ("vm", "since", "until"))
    return render(template, title=title, here=here, path=path, jobs=answer.document, given=given,
                  statuses=STATUSES, operations=OPERATIONS if operation is None else (),
                  note="slots of the last 7 days; give a VM or a time to see others" if windowless else "",
                  first=link(path, **{**given, "continuation": None}) if given.get("continuation") else None,
                  next=link(path, **{**given, "continuation": answer.next_query["continuation"]})
                  if answer.next_query else None, **context)


JOB_PARAMS: tuple[str, ...] = ()


def job(svc: Services, q: Params, job_id: str) -> Reply:
    """One job: its course, errors with their recommended actions, tasks, attempts and notes."""
    document = api.job(svc, q, job_id).document
    return render("job.html", title=f"Job {document['name']}", here="jobs", job=document)


def _age(svc: Services, generated_at: Any) -> str:
    return describe_age(max(svc.clock.now() - generated_at, timedelta(0)))

