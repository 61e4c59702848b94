"""No page and no API answer carries a SAS, a key or protected settings (docs/dashboard.md, "Access"): a crawl
of every page and every /api/v1/ answer of a local stack where secrets are present: the storage account key
in the connection string, SAS URLs the worker minted for the extension, protected settings handed to the VM,
a webhook URL with a signature, and a job record written by an older writer with all of them in its text. The API's answers there fit the OpenAPI
document too."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from devhost.demo import create_demo_vm
from shared.domain import remediation
from shared.domain.job_transitions import mark_failed
from shared.domain.jobs import JobError, JobStatus
from shared.ports import JobQuery
from shared.services.alerting import evaluate_alerts
from shared.services.protection import backup_now, enable_protection
from tests.e2e.conftest import run_cycle

WEBHOOK_SIG = "WebhookSignatureValue0123456789"
PLANTED_SIG = "PlantedSasSignature0123456789abc"
PLANTED_KEY = "PlantedAccountKey0123456789+/=="
PROTECTED = "protectedValue-0123456789"


@pytest.fixture
def secret_stack(loop_with, storage_connection_string):
    """The app on the local stack, its webhook URL signed (and down)."""
    svc, host = loop_with(ALERT_WEBHOOK_URL=f"http://127.0.0.1:9/hook?sv=2024&sig={WEBHOOK_SIG}")
    return svc, host, storage_connection_string


def plant_secrets_in_a_job_record(svc, job_id: str) -> None:
    """Rewrite the job's row as a careless older writer would have: secrets in its error and notes."""
    from shared.adapters.table_jobs import _job_entity

    job = svc.jobs.get(job_id)
    entity = _job_entity(job)
    sas = f"https://acct.blob.core.windows.net/vhds/d.vhd?sv=2024&sp=rw&sig={PLANTED_SIG}"
    entity["Errors"] = json.dumps([{"error_code": "UserErrorX", "error_string": f"PUT {sas} failed; "
                                    f"AccountKey={PLANTED_KEY}", "error_title": "x", "recommendations": [sas],
                                    "retryable": False, "extension_code": None}])
    entity["Notes"] = json.dumps([f'settings {{"protectedSettings": {{"sasUri": "{PROTECTED}"}}}}'])
    svc.table_service.get_table_client(svc.settings.table("jobs")).upsert_entity(entity)


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        self.found += [value for name, value in attrs if name in ("href", "action") and value]


def fetch(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def test_no_page_or_answer_carries_a_secret(secret_stack):
    svc, host, connection_string = secret_stack
    account_key = re.search(r"AccountKey=([^;]+)", connection_string).group(1)
    vm = create_demo_vm(svc, "secret-vm")
    enable_protection(svc, vm.name, "DefaultPolicy")
    (done,) = run_cycle(svc, host)
    assert done.status is JobStatus.COMPLETED
    # A failed job, with secrets planted in its stored record, and the alert it raises (webhook down).
    failing = backup_now(svc, vm.name, retain_until=None)
    svc.jobs.update(failing.job_id, lambda j: mark_failed(j, JobError.from_remediation(
        remediation.for_service_error(remediation.VM_NOT_FOUND), detail="gone"), svc.clock.now()))
    plant_secrets_in_a_job_record(svc, failing.job_id)
    evaluate_alerts(svc)
    assert svc.alerts.list(), "the failure raised no alert"
    base = host.serve_http()
    origin = urlsplit(base).netloc

    start = [f"{base}/api/dashboard", f"{base}/api/v1/openapi.json", f"{base}/api/v1/compliance",
             f"{base}/api/v1/items", f"{base}/api/v1/jobs?vm={vm.name}", f"{base}/api/v1/alerts",
             f"{base}/api/v1/restore-tests", f"{base}/api/v1/restore-tests/plans",
             f"{base}/api/v1/items/{vm.name}", f"{base}/api/v1/items/{vm.name}/recoverypoints",
             f"{base}/api/dashboard/jobs?vm={vm.name}", f"{base}/api/dashboard/items?attention=1"]
    for job in svc.jobs.query(JobQuery(vm_name=vm.name)).jobs:
        start += [f"{base}/api/v1/jobs/{job.job_id}", f"{base}/api/dashboard/jobs/{job.job_id}"]
    start += [f"{base}/api/v1/alerts/{a.name}" for a in svc.alerts.list()]
    pending, seen, bodies = list(start), set(), {}
    while pending and len(seen) < 300:
        url = pending.pop()
        if url in seen:
            continue
        seen.add(url)
        status, kind, body = fetch(url)
        assert status == 200, (url, status, body[:300])
        bodies[url] = body.decode()
        if kind.startswith("text/html"):
            parser = Links()
            parser.feed(bodies[url])
            for href in parser.found:
                target = urljoin(url, href)
                if urlsplit(target).netloc == origin and "/api/" in target:
                    pending.append(target)
    assert any("/api/dashboard/items/secret-vm" in url for url in seen), sorted(seen)
    everything = "\n".join(bodies.values())
    planted_shown = "UserErrorX" in everything
    for secret in (account_key, WEBHOOK_SIG, PLANTED_SIG, PLANTED_KEY, PROTECTED):
        leaks = [url for url, body in bodies.items() if secret in body]
        assert not leaks, (secret[:8], leaks)
    unredacted = re.findall(r"sig(?:=|%3D)(?!REDACTED)[^&\s\"'<]+", everything, re.I)
    assert not unredacted, unredacted[:3]
    assert planted_shown, "the planted record was not shown at all: the test would prove nothing"
    assert len(seen) >= 20, len(seen)
    # The same answers, from real stores over HTTP, fit the OpenAPI document.
    checked = [url for url in bodies if "/api/v1/" in url and fits_the_openapi_document(url, bodies[url])]
    assert len(checked) == len([url for url in bodies if "/api/v1/" in url]) >= 10


def fits_the_openapi_document(url: str, body: str) -> bool:
    from jsonschema import Draft202012Validator

    from shared.web.api import openapi_document

    document = openapi_document()
    path = urlsplit(url).path.removeprefix("/api/v1")
    for template, operations in document["paths"].items():
        if re.fullmatch(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)), path):
            schema = operations["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            Draft202012Validator({**schema, "components": document["components"]}).validate(json.loads(body))
            return True
    raise AssertionError(f"{path} is not in the OpenAPI document")
