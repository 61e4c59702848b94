"""The JSON API under /api/v1/ (docs/dashboard.md): each answer is the document vmsnap prints with -o json,
lists come a page at a time behind a Link header, the OpenAPI document validates and describes every answer,
and a hostile query string gets a 400 with a one-line reason, never a traceback."""
from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.cli import main as vmsnap
from shared.services.alerting import evaluate_alerts
from shared.web import api
from tests.dashboard.conftest import HOSTILE_NAME, backup, protect
from tests.monitoring.conftest import T0
from tests.properties import examples

# (function, path, route values, vmsnap arguments giving the same document)
ENDPOINTS = [
    ("api_compliance", "/api/v1/compliance", {}, ["report", "compliance"]),
    ("api_items", "/api/v1/items", {}, ["item", "list"]),
    ("api_item", "/api/v1/items/db-01", {"name": "db-01"}, ["item", "show", "--vm", "db-01"]),
    ("api_item_points", "/api/v1/items/web-01/recoverypoints", {"name": "web-01"},
     ["recoverypoint", "list", "--vm", "web-01"]),
    ("api_jobs", "/api/v1/jobs", {}, ["job", "list"]),
    ("api_alerts", "/api/v1/alerts", {}, ["alert", "list"]),
    ("api_restore_tests", "/api/v1/restore-tests", {}, ["job", "list", "--operation", "RestoreTest"]),
]
QUERIES = {"api_compliance": api.COMPLIANCE_PARAMS, "api_items": api.ITEMS_PARAMS, "api_jobs": api.JOBS_PARAMS,
           "api_alerts": api.ALERTS_PARAMS, "api_restore_tests": api.RESTORE_TESTS_PARAMS,
           "api_item_points": api.POINTS_PARAMS}


def cli_document(capsys, argv):
    capsys.readouterr()
    assert vmsnap([*argv, "-o", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def body(response):
    return json.loads(response.get_body())


def test_each_answer_is_the_document_vmsnap_prints(fleet, call, capsys):
    """Compliance, items, an item, its points, jobs, alerts and drills: the API's body equals `-o json`'s."""
    evaluate_alerts(fleet)
    for name, path, route, argv in ENDPOINTS:
        response = call(name, path, route=route)
        assert response.status_code == 200, (name, response.get_body())
        assert body(response) == cli_document(capsys, argv), name
    failed = cli_document(capsys, ["job", "list", "--status", "Failed"])[0]
    assert body(call("api_job", f"/api/v1/jobs/{failed['name']}", route={"id": failed["name"]})) == failed
    alert = cli_document(capsys, ["alert", "list"])[0]
    assert body(call("api_alert", f"/api/v1/alerts/{alert['name']}", route={"name": alert["name"]})) == \
        cli_document(capsys, ["alert", "show", "--name", alert["name"]])


def test_job_pages_follow_the_link_header_and_visit_every_job_once(fleet, call):
    """`top=2`: each page says where the next one is; together they are `job list`'s jobs, each once."""
    seen, params = [], {"top": "2", "vm": "web-01"}
    while True:
        response = call("api_jobs", "/api/v1/jobs", params)
        seen += [job["name"] for job in body(response)]
        link = response.headers.get("Link")
        if link is None:
            break
        target = re.fullmatch(r'<(/api/v1/jobs)\?([^>]*)>; rel="next"', link)
        assert target, link
        from urllib.parse import parse_qsl

        params = dict(parse_qsl(target.group(2)))
        assert len(seen) < 20
    assert len(seen) == len(set(seen)) == 5


def test_item_and_compliance_pages_cover_the_fleet(fleet, call):
    """Items a page of one at a time, and compliance items by skip and top, list all three VMs once."""
    names, params = [], {"top": "1"}
    while params is not None:
        response = call("api_items", "/api/v1/items", params)
        names += [i["name"] for i in body(response)]
        link = response.headers.get("Link")
        params = None if link is None else dict(__import__("urllib.parse").parse.parse_qsl(link[1:-13].split("?")[1]))
    assert sorted(names) == ["db-01", "new-vm", "web-01"]
    first = call("api_compliance", "/api/v1/compliance", {"top": "2"})
    second = call("api_compliance", "/api/v1/compliance", {"top": "2", "skip": "2"})
    assert [i["name"] for i in body(first)["items"] + body(second)["items"]] == ["db-01", "new-vm", "web-01"]
    assert body(first)["summary"]["items"] == 3 and "Link" in first.headers and "Link" not in second.headers
    at_risk = body(call("api_compliance", "/api/v1/compliance", {"state": "atrisk"}))
    assert [i["name"] for i in at_risk["items"]] == ["db-01"]


# --- the OpenAPI document ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def openapi():
    return api.openapi_document()


def schema_for(openapi, path, status):
    operation = openapi["paths"][path]["get"]
    answer = operation["responses"][str(status)]
    if "$ref" in answer:
        answer = openapi["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    return {**answer["content"]["application/json"]["schema"], "components": openapi["components"]}


def check(openapi, path, response):
    from jsonschema import Draft202012Validator

    Draft202012Validator(schema_for(openapi, path, response.status_code)).validate(body(response))


def test_the_openapi_document_validates_and_is_served(fleet, call, openapi):
    """openapi-spec-validator accepts the document, and /api/v1/openapi.json serves it."""
    from openapi_spec_validator import validate

    validate(openapi)
    assert body(call("api_openapi", "/api/v1/openapi.json")) == openapi


def test_every_answer_matches_the_openapi_document(fleet, call, openapi):
    """Each endpoint's 200, and its 400 and 404 answers, fit the schema the document gives them."""
    evaluate_alerts(fleet)
    alert = body(call("api_alerts", "/api/v1/alerts"))[0]["name"]
    job = body(call("api_jobs", "/api/v1/jobs", {"status": "Failed"}))[0]["name"]
    cases = [(name, path, route) for name, path, route, _ in ENDPOINTS] + [
        ("api_job", "/api/v1/jobs/{id}", {"id": job}), ("api_alert", "/api/v1/alerts/{name}", {"name": alert}),
        ("api_item", "/api/v1/items/{name}", {"name": "no-such-vm"}),
        ("api_job", "/api/v1/jobs/{id}", {"id": "not-a-job"}),
        ("api_jobs", "/api/v1/jobs", {}), ("api_alert", "/api/v1/alerts/{name}", {"name": "BackupFailed-x-1Z"})]
    statuses = set()
    for name, path, route in cases:
        template = {"/api/v1/items/db-01": "/api/v1/items/{name}",
                    "/api/v1/items/web-01/recoverypoints": "/api/v1/items/{name}/recoverypoints"}.get(path, path)
        response = call(name, path, route=route)
        check(openapi, template[len("/api/v1"):], response)
        statuses.add(response.status_code)
        bad = call(name, path, {"top": "0", "bogus": "1"}, route=route)
        assert bad.status_code == 400
        check(openapi, template[len("/api/v1"):], bad)
    assert statuses == {200, 404}


# --- hostile input ------------------------------------------------------------------------------

HOSTILE = [
    {"status": "Failed\nInjected: yes"}, {"status": "x" * 5000}, {"top": "-1"}, {"top": "1e9"}, {"top": "ninety"},
    {"top": "99999999999999999999"}, {"skip": "-5"}, {"since": "yesterday"}, {"since": "2025-13-45"},
    {"until": "\x00"}, {"vm": "../../etc/passwd"}, {"vm": HOSTILE_NAME}, {"vm": "a" * 65},
    {"continuation": "not!base64"}, {"continuation": "eyJ4IjogMX0="}, {"continuation": "A" * 3000},
    {"operation": "DROP TABLE jobs"}, {"days": "0"}, {"days": "401"}, {"state": "Broken"},
    {"policy": "' or 1 eq 1 or '"}, {"$filter": "PartitionKey eq 'x'"}, {"code": "k", "status": "\u202e"},
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_query_gets_400_with_one_line(fleet, call, query):
    """Every list endpoint answers 400 with a one-line message that quotes nothing raw."""
    for name, path, route, _ in ENDPOINTS:
        response = call(name, path, query, route=route)
        assert response.status_code == 400, (name, query, response.get_body())
        message = body(response)["error"]["message"]
        assert "\n" not in message and "Traceback" not in message, message
        assert b"<script>" not in response.get_body()      # JSON escapes: no markup even if rendered


def test_hostile_names_in_the_path_are_400_or_404(fleet, call):
    for name, route in (("api_item", {"name": HOSTILE_NAME}), ("api_item", {"name": "x" * 300}),
                        ("api_job", {"id": "a/b"}), ("api_job", {"id": "\x07"}), ("api_alert", {"name": "a b"}),
                        ("api_item_points", {"name": "%00"})):
        response = call(name, "/api/v1/x", route=route)
        assert response.status_code in (400, 404) and "\n" not in body(response)["error"]["message"]


@pytest.mark.parametrize("query", [{"vm": "0"}, {"policy": "0"}, {"vm": "no-such-vm", "state": "atrisk"}])
def test_a_well_formed_name_of_nothing_is_a_404_that_says_not_found(fleet, call, query):
    """Compliance for a VM nobody protects (or a policy nobody made): 404, and the message says so as every
    other 404 of the API does (found by the property below: the VM's said only "is not protected")."""
    response = call("api_compliance", "/api/v1/compliance", query)
    assert response.status_code == 404, response.get_body()
    assert "not found" in body(response)["error"]["message"]


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_query_string_is_answered_200_400_or_404_never_500(fleet, call, data):
    """Property: whatever the parameters (known names with any text, or unknown ones), no endpoint fails:
    a 400 for a value that cannot be one, a 404 for a well-formed name of nothing (``policy=0``)."""
    name = data.draw(st.sampled_from(sorted(QUERIES)))
    keys = st.one_of(st.sampled_from(QUERIES[name]), st.text(max_size=12))
    query = data.draw(st.dictionaries(keys, st.text(max_size=80), max_size=4))
    route = {"name": "web-01"} if name == "api_item_points" else {}
    response = call(name, "/api/v1/x", query, route=route)
    assert response.status_code in (200, 400, 404), (query, response.get_body())
    if response.status_code != 200:
        assert "\n" not in body(response)["error"]["message"]
    if response.status_code == 404:
        assert "not found" in body(response)["error"]["message"]


def test_a_failure_the_api_did_not_expect_is_a_500_without_detail(fleet, call, monkeypatch, caplog):
    """A bug answers `internal error (incident ...)`: no exception text, no traceback; the log has them."""
    def broken(*args, **kwargs):
        raise RuntimeError("secret detail AccountKey=abc")

    monkeypatch.setattr(fleet.jobs, "query", broken)
    response = call("api_jobs", "/api/v1/jobs")
    message = body(response)["error"]["message"]
    assert response.status_code == 500 and "incident" in message and "secret" not in message
    assert "RuntimeError" in caplog.text


def test_new_failures_show_in_the_next_answer(fleet, call):
    """Jobs are read as they are (no cache): a backup that just failed is in the next jobs page."""
    protect(fleet, "late-vm")
    backup(fleet, "late-vm", ok=False, at=T0 - timedelta(minutes=30))
    assert "late-vm" in [j["properties"]["entityFriendlyName"] for j in body(call("api_jobs", "/api/v1/jobs"))]
