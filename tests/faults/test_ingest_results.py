"""Hostile or odd results under the local Functions host: recorded, never poisoned, never lost."""
from __future__ import annotations

from datetime import timedelta

import pytest

from devhost.host import HOSTS_CONTAINER, LocalFunctionsHost
from devhost.receipts import read_receipts
from shared.bootstrap import Services, reset_services
from shared.clock import FixedClock
from shared.domain.jobs import JobStatus
from tests.jobs.helpers import DISPATCHED, corpus, dispatched_job

BLOB = f"{dispatched_job().job_id}/1.Status.txt"


@pytest.fixture
def host(make_settings, storage_connection_string, unique_name):
    """The Function App under the local host (blob trigger, timers) on Azurite, with a dispatched job."""
    import function_app

    settings = make_settings()
    svc = Services(settings)
    assert svc.jobs.create_if_absent(dispatched_job())
    svc.blob_service.get_container_client(settings.status_container).create_container()
    reset_services(svc)
    env = {**settings.binding_values(), "AzureWebJobsStorage": storage_connection_string}
    local = LocalFunctionsHost(function_app.app, env, host_id=unique_name("host"))
    yield svc, local
    local.stop()
    reset_services()


def write_status(svc, data: bytes) -> None:
    svc.blob_service.get_blob_client(svc.settings.status_container, BLOB).upload_blob(data, overwrite=True)


def poison_records(svc, local) -> list[str]:
    receipts = read_receipts(svc.blob_service.get_container_client(HOSTS_CONTAINER), local.host_id,
                             "ingest_status", svc.settings.status_container)
    return [receipt.blob for receipt in receipts if receipt.poison]


def test_a_status_blob_with_out_of_range_numbers_is_recorded_not_poisoned(host):
    """A health code beyond Int32 and a size beyond Int64: the job completes with notes; no poison record."""
    svc, local = host
    write_status(svc, corpus("02-completed-fs-two-disks.txt")
                 .replace(b'"vmHealthStatusCode": 1', b'"vmHealthStatusCode": 4294967296')
                 .replace(b'"totalUsedSizeInBytes": 5368709120', b'"totalUsedSizeInBytes": 18446744073709551616'))
    for _ in range(local.config.poison_blob_threshold):     # as many passes as the host needs to poison
        local.scan_blobs("ingest_status")
    job = svc.jobs.get(dispatched_job().job_id)
    assert poison_records(svc, local) == []
    assert job.status is JobStatus.COMPLETED_WITH_WARNINGS and [d.status for d in job.disks] == ["Completed"] * 2
    assert job.health_code == 2**31 - 1 and job.backup_size_bytes is None
    assert any("4294967296" in note for note in job.notes)
    assert any("18446744073709551616" in note for note in job.notes)


def test_the_sweeper_completes_a_job_whose_status_blob_was_poisoned(host):
    """The table refused the trigger (a wrong key) until the host poisoned the blob; the sweep timer then
    completes the job from its blob instead of failing it."""
    from azure.data.tables import TableServiceClient
    from shared.adapters.table_jobs import TableJobStore

    svc, local = host
    write_status(svc, corpus("02-completed-fs-two-disks.txt"))
    conn = svc.settings.storage.connection_string
    key = conn.split("AccountKey=")[1].split(";")[0]
    wrong = TableServiceClient.from_connection_string(conn.replace(key, "d3Jvbmcta2V5"), retry_total=0)
    reset_services(Services(svc.settings, jobs=TableJobStore(wrong, svc.settings.table("jobs"))))
    for _ in range(local.config.poison_blob_threshold):
        local.scan_blobs("ingest_status")
    assert len(poison_records(svc, local)) == 1

    reset_services(Services(svc.settings, clock=FixedClock(DISPATCHED + timedelta(hours=3))))
    local.fire_timer("sweep_stale_jobs")
    job = svc.jobs.get(dispatched_job().job_id)
    assert job.status is JobStatus.COMPLETED and job.errors == []


def test_a_final_report_stamped_in_year_9999_is_unreadable_with_a_reason(host):
    """A result dated 9999-12-31 is not the job's end time: the job says the blob is unreadable, and why."""
    svc, local = host
    write_status(svc, corpus("02-completed-fs-two-disks.txt")
                 .replace(b'"\\/Date(1740794621000)\\/"', b'"9999-12-31T23:59:59Z"'))
    local.scan_blobs("ingest_status")
    job = svc.jobs.get(dispatched_job().job_id)
    assert job.status is JobStatus.IN_PROGRESS and job.end_time is None
    error = job.errors[0]
    assert error.error_code == "StatusBlobUnreadable" and "9999-12-31" in error.error_string
    assert "in the future" in error.error_string and error.recommendations
    assert poison_records(svc, local) == []
