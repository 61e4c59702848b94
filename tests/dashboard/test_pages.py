"""The dashboard's pages (docs/dashboard.md), rendered from the API's answers: the overview's counts are the
compliance report's, an item that failed is under "needs attention" with its advice, hostile text is escaped,
the Content-Security-Policy admits exactly the page's own style and script, and lists are paginated."""
from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.cli import main as vmsnap
from shared.ports import JobQuery
from shared.services.alerting import evaluate_alerts
from shared.web import charts, pages
from tests.dashboard.conftest import HOSTILE_NAME, protect
from tests.properties import examples

PAGES = [("dashboard_overview", {}), ("dashboard_items", {}), ("dashboard_item", {"name": "db-01"}),
         ("dashboard_jobs", {})]


def html(response) -> str:
    assert response.headers.get("Content-Security-Policy"), "a page without its policy"
    return response.get_body().decode()


def test_the_overview_counts_are_the_compliance_report(fleet, call, capsys):
    """Healthy, AtRisk, Unprotected and the item count on the page equal `vmsnap report compliance -o json`."""
    page = html(call("dashboard_overview", "/api/dashboard"))
    capsys.readouterr()
    assert vmsnap(["report", "compliance", "-o", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    shown = dict(re.findall(r'data-testid="count-(\w+)">(\d+)<', page))
    assert shown == {"Healthy": str(summary["healthy"]), "AtRisk": str(summary["atRisk"]),
                     "Unprotected": str(summary["unprotected"]), "items": str(summary["items"])} == \
        {"Healthy": "1", "AtRisk": "1", "Unprotected": "1", "items": "3"}


def test_an_item_whose_backup_failed_needs_attention_with_its_advice(fleet, call):
    """db-01's failed backup (and its alert) and new-vm's missing point are listed with what to do; web-01 is not."""
    evaluate_alerts(fleet)
    page = html(call("dashboard_overview", "/api/dashboard"))
    attention = page.split('data-testid="attention"', 1)[1].split("</section>", 1)[0]
    assert 'data-item="db-01"' in attention and 'data-item="new-vm"' in attention
    assert 'data-item="web-01"' not in attention
    assert "last backup failed (UserErrorVmNotFound" in attention and "BackupFailed alert" in attention
    assert "Re-create the VM, or stop protection for it." in attention
    assert "vmsnap backup-now --vm new-vm" in attention


def test_hostile_text_is_escaped_on_every_page(fleet, call):
    """An error text holding markup is shown as text: on the overview, the item, the jobs and the job page."""
    evaluate_alerts(fleet)
    job_id = next(j.job_id for j in fleet.jobs.query(JobQuery()).jobs if j.errors)
    for name, route in PAGES + [("dashboard_job", {"id": job_id})]:
        page = html(call(name, "/api/dashboard/x", route=route))
        assert HOSTILE_NAME not in page, name
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html(call("dashboard_job", "/x", route={"id": job_id}))


def test_the_policy_admits_only_the_pages_own_style_and_script(fleet, call):
    """No inline code but the one <style> and <script>, each named by its sha256 in the CSP; nothing else loads."""
    response = call("dashboard_overview", "/api/dashboard")
    policy, page = response.headers["Content-Security-Policy"], html(response)
    assert "unsafe-inline" not in policy and "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.S)
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.S)
    for text in (style, script):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert not re.search(r'\s(src|style|on\w+)="', page), "an attribute the policy would block"
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


HOSTILE = [{"state": "Bad"}, {"skip": "-1"}, {"policy": "<b>"}, {"bogus": "1"}, {"vm": "x\ny"}, {"since": "never"},
           {"continuation": "!!"}, {"attention": "yes"}, {"status": "x" * 900}]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_query_gets_a_400_page_with_one_line(fleet, call, query):
    for name, route in PAGES:
        response = call(name, "/api/dashboard/x", query, route=route)
        assert response.status_code == 400, (name, query)
        page = html(response)
        (message,) = re.findall(r'data-testid="error">(.*?)</p>', page, re.S)
        assert "\n" not in message and "Traceback" not in page and "<b>" not in page.split("<main>")[1]


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_query_string_gives_a_page_or_a_400_never_a_500(fleet, call, data):
    """A page; a 400 for a value that cannot be one; a 404 for a well-formed name of nothing (a policy
    filter naming no policy, as `report compliance --policy` says); never a 500."""
    name, route = data.draw(st.sampled_from(PAGES))
    allowed = {"dashboard_overview": pages.OVERVIEW_PARAMS, "dashboard_items": pages.ITEMS_PARAMS,
               "dashboard_item": pages.ITEM_PARAMS, "dashboard_jobs": pages.JOBS_PARAMS}[name]
    keys = st.one_of(st.sampled_from(allowed or ("x",)), st.text(max_size=10))
    query = data.draw(st.dictionaries(keys, st.text(max_size=60), max_size=3))
    answer = call(name, "/api/dashboard/x", query, route=route)
    assert answer.status_code in (200, 400, 404)
    if answer.status_code == 404:
        assert "not found" in answer.get_body().decode(), answer.get_body()[:300]


def test_items_are_listed_fifty_to_a_page(fleet, call):
    """120 more items: the items page shows 50 with a next link; the overview lists 50 and links to the rest."""
    for n in range(120):
        protect(fleet, f"bulk-{n:03d}")
    fleet.report_cache.max_age = timedelta(0)       # this test's items, not a report cached by another call
    first = html(call("dashboard_items", "/api/dashboard/items"))
    assert first.count('<tr data-item="') == 50 and 'rel="next"' in first
    last = html(call("dashboard_items", "/api/dashboard/items", {"skip": "100"}))
    assert last.count('<tr data-item="') == 23 and 'rel="next"' not in last and "First page" in last
    overview = html(call("dashboard_overview", "/api/dashboard"))
    items = overview.split('data-testid="items"', 1)[1]
    assert items.count('<tr data-item="') == 50 and "All 123 items" in items


def test_charts_escape_names_and_draw_in_proportion():
    """A policy name with markup is text in the SVG; a 50 % policy's bar is half the track."""
    svg = str(charts.compliance_bars([{"name": "<b>x</b>", "slots": {"compliance": 0.5, "met": 1, "missed": 1}}]))
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    track = charts.WIDTH - charts.LABEL - 130
    assert f'width="{track * 0.5:.1f}"' in svg
    bar = str(charts.state_bar({"healthy": 3, "atRisk": 1, "unprotected": 0}))
    assert f'width="{charts.WIDTH * 0.75:.1f}"' in bar and f'width="{charts.WIDTH * 0.25:.1f}"' in bar


def test_the_item_page_shows_rpo_against_target_points_and_jobs_with_advice(fleet, call):
    page = html(call("dashboard_item", "/api/dashboard/items/db-01", route={"name": "db-01"}))
    assert "Achieved: <strong>4 days, 0:00:00</strong>; target: 1 day, 3:00:00" in page
    assert 'class="point ok"' in page and "Re-create the VM, or stop protection for it." in page
    assert call("dashboard_item", "/x", route={"name": "no-such-vm"}).status_code == 404


def test_jobs_page_filters_as_job_list(fleet, call):
    page = html(call("dashboard_jobs", "/api/dashboard/jobs", {"status": "failed"}))
    rows = re.findall(r'<span class="status-(\w+)">', page.split('data-testid="jobs"', 1)[1])
    assert rows == ["Failed"]
