"""Table outages while a status blob is ingested: the finished backup is recorded once the table is back."""
from __future__ import annotations

import threading
import time

import pytest
from azure.functions.blob import InputStream

from shared.bootstrap import Services, reset_services
from shared.domain.jobs import JobStatus
from tests.jobs.helpers import corpus, dispatched_job

pytestmark = pytest.mark.long

OUTAGE_SECONDS = 60


@pytest.fixture
def stack(make_settings, through_table_proxy):
    """A dispatched job on Azurite, its completed status blob written, and the app's services behind the proxy."""
    settings = make_settings()
    direct = Services(settings)
    assert direct.jobs.create_if_absent(dispatched_job())
    name = f"{dispatched_job().job_id}/1.Status.txt"
    container = direct.blob_service.get_container_client(settings.status_container)
    container.create_container()
    container.upload_blob(name, corpus("02-completed-fs-two-disks.txt"))
    props = container.get_blob_client(name).get_blob_properties()
    blob = InputStream(data=corpus("02-completed-fs-two-disks.txt"), name=f"{settings.status_container}/{name}",
                       length=props.size, blob_properties={"ETag": props.etag})
    reset_services(Services(through_table_proxy(settings)))
    yield direct, blob
    reset_services()


def run_trigger(blob: InputStream) -> tuple[threading.Thread, list[BaseException]]:
    """The blob trigger, invoked as the host invokes it, in its own thread; exceptions are kept."""
    from functions.status_ingest import ingest_status

    errors: list[BaseException] = []

    def invoke() -> None:
        try:
            ingest_status(blob)
        except BaseException as exc:    # noqa: BLE001 - kept for the assertion
            errors.append(exc)

    thread = threading.Thread(target=invoke, name="ingest-trigger")
    thread.start()
    return thread, errors


def test_a_60_second_table_outage_during_ingestion_ends_completed(stack, table_proxy):
    """The table refuses connections for a minute while the blob is ingested: the job still ends Completed."""
    direct, blob = stack
    with table_proxy.outage("refuse"):
        thread, errors = run_trigger(blob)
        thread.join(OUTAGE_SECONDS)
        assert thread.is_alive() and not errors, f"ingestion gave up during the outage: {errors}"
    thread.join(120)
    assert not thread.is_alive() and not errors
    job = direct.jobs.get(dispatched_job().job_id)
    assert job.status is JobStatus.COMPLETED and [d.status for d in job.disks] == ["Completed", "Completed"]


def test_a_short_reset_storm_is_ridden_out(stack, table_proxy):
    """Connections reset on accept for a few seconds, then every third request reset: still Completed."""
    direct, blob = stack
    table_proxy.reset_every(3)
    with table_proxy.outage("reset"):
        thread, errors = run_trigger(blob)
        time.sleep(5)
    thread.join(120)
    assert not errors and table_proxy.resets >= 1
    assert direct.jobs.get(dispatched_job().job_id).status is JobStatus.COMPLETED
