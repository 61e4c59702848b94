"""The JSON API under /api/v1/ (described by shared/web/openapi.yaml): each answer is the document vmsnap
prints with ``-o json`` for the same question (shared/documents.py), a page at a time; the next page's
address is in a ``Link: <...>; rel="next"`` header, so the bodies keep the CLI's shapes exactly."""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from functools import cache
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from shared.documents import (alert_document, item_document, job_document, point_document, report_document,
                              to_jsonable)
from shared.domain.alerts import AlertStatus
from shared.domain.compliance import DEFAULT_DAYS, MAX_DAYS
from shared.domain.jobs import JobStatus
from shared.domain.shards import SHARDS, shard_of
from shared.errors import NotFoundError, ValidationError
from shared.redaction import redact
from shared.services.alerting import list_alerts, show_alert
from shared.services.compliance import ComplianceReport
from shared.services.job_listing import OPERATIONS, JobFilter, job_page
from shared.services.protection import get_protected_item, list_protected_items
from shared.services.recovery import list_points
from shared.web.http import Reply, json_reply
from shared.web.params import Params, route_job_id, route_name

if TYPE_CHECKING:
    from shared.bootstrap import Services

PREFIX = "/api/v1"
DEFAULT_TOP = 100
MAX_TOP = 1000
STATES = ("Healthy", "AtRisk", "Unprotected")


@dataclass(frozen=True)
class Answer:
    """A document, and the query of its next page when there is one."""

    document: Any
    next_query: dict[str, str] | None = None

    def reply(self, path: str) -> Reply:
        headers = {}
        if self.next_query is not None:
            headers["Link"] = f'<{path}?{urlencode(self.next_query)}>; rel="next"'
        # Redacted as a structure, before JSON escapes the quotes a protectedSettings block is found by.
        return json_reply(redact(self.document), headers=headers)


# --- compliance ---------------------------------------------------------------------------------

COMPLIANCE_PARAMS = ("policy", "vm", "days", "state", "top", "skip")


def compliance(svc: Services, q: Params) -> Answer:
    """``vmsnap report compliance -o json``; ``items`` holds one page of the items (``state`` filters them),
    ``summary`` and ``policies`` count them all."""
    report = compliance_of(svc, q)
    document = report_document(report)
    state = q.choice("state", STATES)
    items = [i for i in document["items"] if state is None or i["state"] == state]
    top, skip = q.integer("top", DEFAULT_TOP, 1, MAX_TOP), q.integer("skip", 0, 0, 10_000_000)
    document["items"] = items[skip:skip + top]
    more = skip + top < len(items)
    return Answer(document, {**q.given(), "skip": str(skip + top), "top": str(top)} if more else None)


def compliance_of(svc: Services, q: Params) -> ComplianceReport:
    """The report the query asks for, through the dashboard's short-lived cache."""
    return svc.report_cache.report(svc, policy=q.name("policy", "policy"), vm=q.name("vm", "VM"),
                                   days=q.integer("days", DEFAULT_DAYS, 1, MAX_DAYS))


# --- protected items ----------------------------------------------------------------------------

ITEMS_PARAMS = ("top", "continuation")


def items(svc: Services, q: Params) -> Answer:
    """``vmsnap item list -o json``, a page at a time (shard by shard, names in order within one)."""
    top = q.integer("top", DEFAULT_TOP, 1, MAX_TOP)
    after = _item_position(q.token("continuation"))
    page = list(islice(list_protected_items(svc, after=after), top + 1))
    more = len(page) > top
    page = page[:top]
    next_query = None
    if more and page:
        last = page[-1].item.vm_name.lower()
        next_query = {**q.given(), "continuation": _encode(["i1", shard_of(last), last])}
    return Answer([item_document(status) for status in page], next_query)


def item(svc: Services, q: Params, name: str) -> Answer:
    """``vmsnap item show -o json``."""
    return Answer(item_document(get_protected_item(svc, route_name(name, "VM"))))


POINTS_PARAMS = ("since", "until")


def item_points(svc: Services, q: Params, name: str) -> Answer:
    """``vmsnap recoverypoint list --vm NAME -o json`` (a VM's points are bounded by its retention)."""
    views = list_points(svc, route_name(name, "VM"), since=q.when("since"), until=q.when("until", end=True))
    return Answer([point_document(view) for view in views])


# --- jobs ---------------------------------------------------------------------------------------

JOBS_PARAMS = ("vm", "status", "operation", "since", "until", "top", "continuation")


def job_filter(q: Params) -> JobFilter:
    status = q.choice("status", [s.value for s in JobStatus])
    return JobFilter(vm=q.name("vm", "VM"), status=JobStatus(status) if status else None,
                     operation=q.choice("operation", OPERATIONS), since=q.when("since"), until=q.when("until", end=True))


def jobs(svc: Services, q: Params, *, operation: str | None = None) -> Answer:
    """``vmsnap job list -o json``: one page, newest start first within it."""
    filters = job_filter(q)
    if operation is not None:
        filters = JobFilter(vm=filters.vm, status=filters.status, operation=operation, since=filters.since,
                            until=filters.until)
    page = job_page(svc, filters, q.integer("top", DEFAULT_TOP, 1, MAX_TOP), _unwrap(q.token("continuation")))
    now = svc.clock.now()
    next_query = {**q.given(), "continuation": _wrap(page.continuation)} if page.continuation else None
    return Answer([job_document(job, now) for job in page.jobs], next_query)


def job(svc: Services, q: Params, job_id: str) -> Answer:
    """``vmsnap job show -o json``."""
    found = svc.jobs.get(route_job_id(job_id))
    if found is None:
        raise NotFoundError(f"job {job_id} not found")
    return Answer(job_document(found, svc.clock.now()))


RESTORE_TESTS_PARAMS = ("vm", "status", "since", "until", "top", "continuation")


def restore_tests(svc: Services, q: Params) -> Answer:
    """``vmsnap job list --operation RestoreTest -o json``: the drills, each with ``properties.restoreTest``."""
    return jobs(svc, q, operation="RestoreTest")


def restore_test_plans(svc: Services, q: Params) -> Answer:
    """``vmsnap restore-test plan list -o json``."""
    return Answer(to_jsonable([plan.as_document() for plan in svc.restore_tests.list()]))


# --- alerts -------------------------------------------------------------------------------------

ALERTS_PARAMS = ("status", "vm", "top", "skip")


def alerts(svc: Services, q: Params) -> Answer:
    """``vmsnap alert list -o json``, newest fired first, a page at a time."""
    status = q.choice("status", [s.value for s in AlertStatus])
    found = list_alerts(svc, AlertStatus(status) if status else None, q.name("vm", "VM"))
    top, skip = q.integer("top", DEFAULT_TOP, 1, MAX_TOP), q.integer("skip", 0, 0, 10_000_000)
    more = skip + top < len(found)
    return Answer([alert_document(a) for a in found[skip:skip + top]],
                  {**q.given(), "skip": str(skip + top), "top": str(top)} if more else None)


def alert(svc: Services, q: Params, name: str) -> Answer:
    """``vmsnap alert show -o json``."""
    if len(name) > 200 or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name):
        raise ValidationError("an alert name holds letters, digits, '-', '_' and '.' (see /api/v1/alerts)",
                              field="name")
    return Answer(alert_document(show_alert(svc, name)))


# --- the description ----------------------------------------------------------------------------

def openapi(svc: Services, q: Params) -> Answer:
    return Answer(openapi_document())


@cache
def openapi_document() -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load((Path(__file__).parent / "openapi.yaml").read_text()))


# --- continuations -----------------------------------------------------------------------------
# The API's own envelope around a store's opaque token (URL-safe whatever the store's alphabet), and the
# item listing's position (shard, name).

def _wrap(token: str) -> str:
    return base64.urlsafe_b64encode(token.encode()).decode()


def _unwrap(token: str | None) -> str | None:
    if token is None:
        return None
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("continuation is not one this API issued; start from the first page",
                              field="continuation") from None


def _encode(value: list[str]) -> str:
    return _wrap(json.dumps(value))


def _item_position(token: str | None) -> tuple[str, str] | None:
    if token is None:
        return None
    try:
        version, shard, name = json.loads(_unwrap(token) or "")
        if version != "i1" or shard not in SHARDS or not isinstance(name, str):
            raise ValueError(version)
        return shard, name
    except (ValueError, TypeError, binascii.Error):
        raise ValidationError("continuation is not one this API issued; start from the first page",
                              field="continuation") from None
