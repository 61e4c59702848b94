"""The dashboard in a real browser (Debian's chromium driven by Playwright) on the local stack: the real
Function App under the local host serving its HTTP functions on 127.0.0.1, Azurite and the local Service
Bus. The overview's counts are `vmsnap report compliance -o json`'s, a VM made to fail is under "needs
attention" with its advice, nothing is loaded from elsewhere or refused by the page's policy, and a
screenshot of each page is written to .local/artifacts/."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from devhost.demo import create_demo_vm
from shared.domain import remediation
from shared.domain.jobs import JobStatus
from shared.services.protection import backup_now, enable_protection
from tests.e2e.conftest import run_cycle
from tests.polling import eventually

pytestmark = pytest.mark.long

ARTIFACTS = Path(__file__).resolve().parents[2] / ".local" / "artifacts"
# What chromium needs on these machines: no sandbox (root), no GPU, and no traffic of its own (the network
# is closed); Playwright gives each launch a fresh profile directory.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("no browser: Debian's chromium is not installed and ./dev setup could not install it "
                    "(it needs root and apt-get: apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A page that records what the browser asked for and what the console said (CSP refusals land there)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.requests, opened.console = [], []
    opened.on("request", lambda request: opened.requests.append(request.url))
    opened.on("console", lambda message: opened.console.append(message.text))
    yield opened
    context.close()


@pytest.fixture
def fleet_stack(loop):
    """Two demo VMs backed up once by the stack; fail-vm then made to fail (gone from the inventory)."""
    svc, host = loop
    for name in ("ok-vm", "fail-vm"):
        enable_protection(svc, create_demo_vm(svc, name).name, "DefaultPolicy")
    jobs = run_cycle(svc, host)
    assert sorted(j.status for j in jobs) == [JobStatus.COMPLETED] * 2, [j.errors for j in jobs]
    svc.inventory.delete_vm("fail-vm")
    failing = backup_now(svc, "fail-vm", retain_until=None)

    def failed():
        host.drain_queue("dispatch_snapshot", max_wait=0.2)
        job = svc.jobs.get(failing.job_id)
        return job if job.is_terminal else None

    assert eventually(failed, timeout=60)
    assert svc.jobs.get(failing.job_id).status is JobStatus.FAILED
    base = f"{host.serve_http()}/api/dashboard"
    return svc, host, base, svc.jobs.get(failing.job_id)


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def test_the_overview_counts_are_the_compliance_report(fleet_stack, page, capsys):
    """Healthy / AtRisk / Unprotected and the item count, read from the rendered page, equal the CLI's summary."""
    from shared.cli import main as vmsnap

    svc, host, base, _ = fleet_stack
    page.goto(base)
    shown = {state: page.get_by_test_id(f"count-{state}").inner_text()
             for state in ("Healthy", "AtRisk", "Unprotected", "items")}
    capsys.readouterr()
    assert vmsnap(["report", "compliance", "-o", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert shown == {"Healthy": str(summary["healthy"]), "AtRisk": str(summary["atRisk"]),
                     "Unprotected": str(summary["unprotected"]), "items": str(summary["items"])}
    assert summary["items"] == 2
    assert all(url.startswith(base.split("/api/")[0]) for url in page.requests), page.requests
    assert not [line for line in page.console if "Content Security Policy" in line], page.console


def test_a_vm_made_to_fail_needs_attention_with_its_advice(fleet_stack, page):
    """fail-vm's failed backup is listed under "needs attention" with the recommended actions of its error."""
    svc, host, base, failed = fleet_stack
    assert failed.errors[0].error_code == remediation.VM_NOT_FOUND
    page.goto(base)
    row = page.get_by_test_id("attention").locator('tr[data-item="fail-vm"]')
    assert row.count() == 1
    text = row.inner_text()
    assert "last backup failed (UserErrorVmNotFound" in text
    assert all(advice in text for advice in failed.errors[0].recommendations), text
    assert page.get_by_test_id("attention").locator('tr[data-item="ok-vm"]').count() == 0
    shoot(page, "overview")


def test_a_screenshot_of_each_page(fleet_stack, page):
    """Overview, items, an item, jobs (filtered by the form), a job, restore drills: each renders, each shot."""
    svc, host, base, failed = fleet_stack
    for name, address in (("items", f"{base}/items"), ("item", f"{base}/items/fail-vm"),
                          ("jobs", f"{base}/jobs"), ("job", f"{base}/jobs/{failed.job_id}"),
                          ("restore-drills", f"{base}/restore-tests")):
        response = page.goto(address)
        assert response.status == 200, (name, response.status)
        shoot(page, name)
    page.goto(f"{base}/jobs")
    page.select_option("select[name=status]", "Failed")
    page.click("button[type=submit]")
    rows = page.get_by_test_id("jobs").locator("tr").all_inner_texts()[1:]
    assert len(rows) == 1 and failed.job_id in rows[0] and "Failed" in rows[0]
    assert page.goto(f"{base}/jobs?status=%0A").status == 400
    assert "contains a control character" in page.get_by_test_id("error").inner_text()
    assert not [line for line in page.console if "Content Security Policy" in line], page.console
    assert {p.name for p in ARTIFACTS.glob("dashboard-*.png")} >= {
        "dashboard-items.png", "dashboard-item.png", "dashboard-jobs.png", "dashboard-job.png",
        "dashboard-restore-drills.png"}


def test_a_function_key_in_the_address_follows_the_links_and_forms(fleet_stack, page):
    """Opened with ?code=K (as in Azure), the page's script carries K on to its links and its form; the served
    page itself never contains K."""
    svc, host, base, _ = fleet_stack
    response = page.goto(f"{base}?code=not-a-real-key")
    assert b"not-a-real-key" not in response.body()
    hrefs = page.locator("header a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert all("code=not-a-real-key" in href for href in hrefs), hrefs
    page.goto(f"{base}/jobs?code=not-a-real-key")
    page.click("button[type=submit]")
    assert "code=not-a-real-key" in page.url
