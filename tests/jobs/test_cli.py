"""vmsnap job list|show|wait and status show, through shared.cli.main, on Azurite."""
from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from shared.bootstrap import Services, reset_services
from shared.cli import main
from shared.clock import FixedClock
from shared.cli.output import format_time
from shared.domain.job_transitions import RETRY_BACKOFF, apply_report, mark_dispatched
from shared.domain.jobs import Job
from shared.domain.status import parse_status_blob
from tests.fakes import RecordingTaskQueue
from tests.jobs.helpers import CORPUS, FINAL_AT, SLOT, corpus, finished_job

NOW = FINAL_AT + timedelta(minutes=10)
CASES = {"web-01": "02-completed-fs-two-disks.txt", "db-01": "05-warning-prescript-failed.txt",
         "app-01": "06-failed-partial-76-761.txt"}


@pytest.fixture
def svc(make_settings):
    services = Services(make_settings(), clock=FixedClock(NOW))
    jobs = {vm: finished_job(vm, blob, NOW) for vm, blob in CASES.items()}
    running = Job.new_backup(vm_name="web-02", slot=SLOT + timedelta(hours=1), now=SLOT + timedelta(hours=1))
    services.jobs.create_many_if_absent(list(jobs.values()) + [running])
    services.ids = {**{vm: j.job_id for vm, j in jobs.items()}, "running": running.job_id}
    reset_services(services)
    yield services
    reset_services(None)


def test_job_list_table_has_az_columns_newest_first(svc, capsys):
    """job list prints az's columns, newest job first, with each job's status and duration."""
    assert main(["job", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["Name", "Operation", "Status", "Item", "Name", "Start", "Time", "UTC", "Duration"]
    rows = [line.split() for line in lines[2:]]
    assert rows[0][:4] == [svc.ids["running"], "Backup", "InProgress", "web-02"]
    assert {r[3]: r[2] for r in rows[1:]} == {"web-01": "Completed", "db-01": "CompletedWithWarnings",
                                              "app-01": "Failed"}
    assert {r[3]: r[5] for r in rows[1:]}["web-01"] == "0:03:36"


def test_job_list_filters(svc, capsys):
    """--status, --vm and a date range narrow the list; -o json gives az-shaped documents."""
    assert main(["job", "list", "--status", "Failed", "-o", "json"]) == 0
    [doc] = json.loads(capsys.readouterr().out)
    assert doc["name"] == svc.ids["app-01"] and doc["properties"]["status"] == "Failed"
    assert main(["job", "list", "--vm", "db-01", "-o", "json"]) == 0
    assert [d["properties"]["entityFriendlyName"] for d in json.loads(capsys.readouterr().out)] == ["db-01"]
    assert main(["job", "list", "--since", "01-03-2025", "--until", "2025-03-01T02:30:00Z", "-o", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(["job", "list", "--since", "02-03-2025"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2      # headers only


def test_job_show_failed_prints_errors_with_recommendations(svc, capsys):
    """job show on a failed job prints every field, each disk and the errors with what to do."""
    assert main(["job", "show", "--name", svc.ids["app-01"]]) == 0
    out = re.sub(r" {2,}", "  ", capsys.readouterr().out)
    for text in ("Status  Failed", "Item Name  app-01", "Policy  DefaultPolicy",
                 "Extension Code  76 (FailedRetryableSnapshotFailedNoNetwork)", "Backup Size  5120 MB",
                 "OS disk", "LUN 0", "BlobNotFound: The specified blob does not exist.",
                 "Errors: ExtensionSnapshotFailedNoNetwork", "Retry can help: yes", "Recommended actions:",
                 "168.63.129.16"):
        assert text in out, text


def test_job_show_json_has_error_details_and_tasks(svc, capsys):
    """job show -o json carries errorDetails and a per-disk tasks list like az."""
    assert main(["job", "show", "-n", svc.ids["db-01"], "-o", "json"]) == 0
    props = json.loads(capsys.readouterr().out)["properties"]
    assert props["status"] == "CompletedWithWarnings" and props["consistency"] == "FileSystemConsistent"
    assert props["errorDetails"][0]["errorCode"] == "UserErrorPreScriptExecutionFailed"
    assert props["errorDetails"][0]["recommendations"]
    assert [t["taskId"] for t in props["extendedInfo"]["tasksList"]] == ["Take Snapshot", "Snapshot disk OS disk",
                                                                         "Snapshot disk LUN 0"]
    assert props["extendedInfo"]["propertyBag"]["Backup Size"] == "5120 MB"


def test_job_show_unknown_id_exits_not_found(svc, capsys):
    """An unknown job id prints one ERROR line and exits 3."""
    assert main(["job", "show", "--name", "01954f6e-8d00-8000-8000-000000000000"]) == 3
    assert capsys.readouterr().err.startswith("ERROR: job 01954f6e")


def test_job_wait_exit_codes(svc, capsys):
    """job wait exits 0 for completed or warned, 1 for failed, 6 with one line when it times out."""
    assert main(["job", "wait", "--name", svc.ids["web-01"]]) == 0
    assert main(["job", "wait", "--name", svc.ids["db-01"]]) == 0
    assert main(["job", "wait", "--name", svc.ids["app-01"]]) == 1
    capsys.readouterr()
    assert main(["job", "wait", "--name", svc.ids["running"], "--timeout", "0.2", "--interval", "0.05"]) == 6
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ERROR: job {svc.ids['running']} is still InProgress (Queued) after 0.2 s"]


def test_status_show_file_prints_outcome(svc, capsys):
    """status show on the agent's file form prints the real (failed) result and the remedies."""
    assert main(["status", "show", str(CORPUS / "12-file-form-substatus.status")]) == 0
    out = re.sub(r" {2,}", "  ", capsys.readouterr().out)
    assert "Job Status  Failed" in out and "agent status file" in out
    assert "Health Code  761 (FailedRetryableSnapshotFailedRestrictedNetwork)" in out
    assert "Recommended actions:" in out and "#1" in out


def test_status_show_bad_file_says_why(svc, capsys):
    """A blob that cannot be parsed gives one ERROR line with the reason and exit code 2."""
    assert main(["status", "show", str(CORPUS / "92-no-code.txt")]) == 2
    assert "status.code is missing" in capsys.readouterr().err


def test_status_show_blob_url_with_and_without_sas(svc, capsys):
    """status show reads a blob by SAS URL or by plain URL with the configured credential; never echoes the SAS."""
    from datetime import datetime, timezone
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    container = svc.blob_service.get_container_client(svc.settings.status_container)
    container.create_container()
    blob = container.get_blob_client("j/1.Status.txt")
    blob.upload_blob(corpus("11-page-blob-padded.bin"))
    assert main(["status", "show", blob.url, "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["result"]["jobStatus"] == "Completed"
    sas = generate_blob_sas(blob.account_name, blob.container_name, blob.blob_name,
                            account_key=svc.blob_service.credential.account_key,
                            permission=BlobSasPermissions(read=True),
                            expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    assert main(["status", "show", f"{blob.url}?{sas}"]) == 0
    assert "Completed" in capsys.readouterr().out
    missing = f"{blob.url.replace('j/1', 'j/2')}?{sas}"
    assert main(["status", "show", missing]) in (3, 5)
    err = capsys.readouterr().err
    assert "sig=" not in err and err.startswith("ERROR:")


def test_job_show_of_a_retrying_job_says_whose_errors_it_shows(svc, capsys):
    """While attempt 2 waits, the errors shown are attempt 1's, and the notes say when it retries."""
    from shared.services.ingestion import ingest_status_blob

    job = Job.new_backup(vm_name="retry-01", slot=SLOT, now=SLOT + timedelta(seconds=5))
    job = mark_dispatched(job, attempt=1, task_id=f"{job.job_id}_1", status_blob=f"{job.job_id}/1.Status.txt",
                          log_blob=f"{job.job_id}/1.Logs.txt", now=SLOT + timedelta(seconds=9))
    svc.jobs.create_if_absent(job)
    svc.task_queue = RecordingTaskQueue()
    blob = corpus("07-failed-all-disks-76-sas.txt").replace(b"01954f6e-8d00-87cd-91c5-3d28beef679b", job.job_id.encode())
    ingest_status_blob(svc, f"{job.job_id}/1.Status.txt", blob, None)
    assert main(["job", "show", job.job_id]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Status\s+InProgress", out) and re.search(r"Attempt\s+2 \(task -\)", out)
    assert "Errors of attempt 1 (retrying as attempt 2): ExtensionSnapshotFailedNoNetwork" in out
    assert f"retrying as attempt 2 at {format_time(NOW + RETRY_BACKOFF[0])}" in out.replace("+00:00", "")


def test_job_show_of_a_job_an_earlier_attempt_ended_lists_its_attempts_in_order(svc, capsys):
    """Attempt 1 was taken for not handed over, then reported success: `job show` says Completed by
    attempt 1, and its attempts table lists attempt 1 (Completed) before attempt 2 (Overtaken)."""
    from shared.domain import remediation
    from shared.domain.job_transitions import mark_not_dispatched
    from shared.domain.jobs import JobError

    job = Job.new_backup(vm_name="late-01", slot=SLOT, now=SLOT + timedelta(seconds=5))
    job = mark_dispatched(job, attempt=1, task_id=f"{job.job_id}_1", status_blob=f"{job.job_id}/1.Status.txt",
                          log_blob=f"{job.job_id}/1.Logs.txt", now=SLOT + timedelta(seconds=9))
    error = JobError.from_remediation(remediation.for_service_error(remediation.DISPATCH_FAILED), detail="timed out")
    job = mark_not_dispatched(job, attempt=1, error=error, now=NOW, retry_at=NOW + RETRY_BACKOFF[0])
    report = parse_status_blob(corpus("02-completed-fs-two-disks.txt").replace(
        b"01954f6e-8d00-87cd-91c5-3d28beef679b", job.job_id.encode()))
    svc.jobs.create_if_absent(apply_report(job, report, NOW, attempt=1))
    assert main(["job", "show", job.job_id]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Status\s+Completed", out) and re.search(rf"Attempt\s+1 \(task {job.job_id}_1\)", out)
    table = out[out.index("\nAttempts\n"):]
    assert re.search(rf"1\s+{job.job_id}_1\s+Completed.*\n.*2\s+{job.job_id}_2\s+Overtaken", table), table
