"""The sweep looks for a result before it fails a job: the status blob, then (Compute API) the instance view."""
from __future__ import annotations

from datetime import timedelta

import pytest

from shared.adapters.dispatch_arm import ArmDispatcher
from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.inventory import Disk, Vm, VmKind
from shared.domain.jobs import JobPhase, JobStatus
from shared.domain.remediation import TIMED_OUT
from shared.services.sweeping import sweep_stale_jobs
from tests.dispatch.recording import RecordingTransport, StaticCredential
from tests.fakes import InMemoryInventory
from tests.jobs.helpers import DISPATCHED, corpus, dispatched_job

PAST_DEADLINE = DISPATCHED + timedelta(hours=3)
SUB = "00000000-0000-0000-0000-0000000000aa"
VM = Vm(name="vm1", kind=VmKind.AZURE, disks=(Disk(lun=-1, blob_url="https://acct.blob.core.windows.net/v/os.vhd"),),
        location="westeurope",
        resource_id=f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1")


@pytest.fixture
def svc(make_settings):
    services = Services(make_settings(), clock=FixedClock(PAST_DEADLINE))
    assert services.jobs.create_if_absent(dispatched_job())
    return services


def write_status(svc, data: bytes, attempt: int = 1) -> None:
    container = svc.blob_service.get_container_client(svc.settings.status_container)
    if not container.exists():
        container.create_container()
    container.upload_blob(f"{dispatched_job().job_id}/{attempt}.Status.txt", data, overwrite=True)


def test_a_success_in_the_status_blob_completes_the_job_instead_of_failing_it(svc):
    """The trigger gave up on the blob (poisoned); the sweep applies it: Completed, not timed out."""
    write_status(svc, corpus("02-completed-fs-two-disks.txt"))
    result = sweep_stale_jobs(svc)
    job = svc.jobs.get(dispatched_job().job_id)
    assert (job.status, result.reingested, result.timed_out) == (JobStatus.COMPLETED, [job.job_id], [])
    assert [d.status for d in job.disks] == ["Completed", "Completed"]


def test_a_retryable_failure_in_the_blob_queues_the_next_attempt_instead_of_timing_out(svc):
    """A code-76 blob found by the sweep starts attempt 2, as the trigger would have, and the job lives on."""
    from tests.fakes import RecordingTaskQueue

    svc.task_queue = RecordingTaskQueue()
    write_status(svc, corpus("06-failed-partial-76-761.txt"))
    result = sweep_stale_jobs(svc)
    job = svc.jobs.get(dispatched_job().job_id)
    assert (job.status, job.phase, job.attempt, result.timed_out) == (JobStatus.IN_PROGRESS, JobPhase.QUEUED, 2, [])
    assert [t.attempt for t in svc.task_queue.sent] == [2]


def test_a_job_still_running_in_its_blob_times_out(svc):
    """A blob that only ever said 'running' does not save the job: it fails with the timeout advice."""
    write_status(svc, corpus("01-running-code4.txt"))
    result = sweep_stale_jobs(svc)
    job = svc.jobs.get(dispatched_job().job_id)
    assert result.timed_out == [job.job_id] and job.errors[0].error_code == TIMED_OUT


def test_a_result_written_a_minute_after_dispatch_is_applied_by_the_sweep(svc):
    """However recent the dispatch, a final blob the trigger has not applied is applied by the sweep:
    a run that ends (or a trigger that stalls) right after the VM wrote its result loses nothing."""
    write_status(svc, corpus("02-completed-fs-two-disks.txt"))
    svc.clock.current = DISPATCHED + timedelta(minutes=1)
    assert sweep_stale_jobs(svc).reingested == [dispatched_job().job_id]
    assert svc.jobs.get(dispatched_job().job_id).status is JobStatus.COMPLETED


def test_a_recent_job_whose_blob_is_not_written_yet_is_left_as_it_is(svc):
    """The empty blob the worker created (or none at all) changes nothing: the job stays Dispatched."""
    before = svc.jobs.get(dispatched_job().job_id)
    svc.clock.current = DISPATCHED + timedelta(minutes=1)
    assert sweep_stale_jobs(svc).reingested == []
    write_status(svc, b"")
    assert sweep_stale_jobs(svc).reingested == []
    assert svc.jobs.get(dispatched_job().job_id) == before


def test_unreachable_blob_storage_defers_the_job_instead_of_failing_it(svc, make_settings):
    """When the status blob cannot be read, the job waits for the next sweep rather than failing unheard."""
    from azure.storage.blob import BlobServiceClient
    from shared.adapters.blob_sas import StatusBlobStore

    dead = BlobServiceClient.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;", retry_total=0)
    svc.status_blobs = StatusBlobStore(dead, svc.settings.status_container)
    result = sweep_stale_jobs(svc)
    assert (result.deferred, result.timed_out) == ([dispatched_job().job_id], [])
    assert svc.jobs.get(dispatched_job().job_id).status is JobStatus.IN_PROGRESS


def instance_view(document: bytes | None, status: str = "succeeded") -> dict:
    """The extension resource as ``GET ...?$expand=instanceView`` returns it."""
    substatuses = [] if document is None else [{
        "code": f"ComponentStatus/{document.decode()}/{status}", "level": "Info",
        "displayStatus": "Provisioning succeeded"}]
    return {"name": "VMSnapshotLinux", "location": "westeurope", "properties": {
        "publisher": "Microsoft.Azure.RecoveryServices", "type": "VMSnapshotLinux", "typeHandlerVersion": "1.9",
        "provisioningState": "Succeeded",
        "instanceView": {"name": "VMSnapshotLinux", "type": "Microsoft.Azure.RecoveryServices.VMSnapshotLinux",
                         "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info",
                                       "displayStatus": "Provisioning succeeded", "message": "{}"}],
                         "substatuses": substatuses}}}


def arm(svc, body: dict, status: int = 200) -> RecordingTransport:
    transport = RecordingTransport(status, body)
    svc.dispatcher = ArmDispatcher(StaticCredential(), SUB, transport=transport, retry_total=0)
    svc.inventory = InMemoryInventory(VM)
    return transport


def test_a_result_only_in_the_instance_view_completes_the_job(svc):
    """The handler could not write its blob (SAS expired); its result in the instance view completes the job."""
    write_status(svc, b"")          # the worker's empty blob, never written
    transport = arm(svc, instance_view(corpus("02-completed-fs-two-disks.txt")))
    result = sweep_stale_jobs(svc)
    job = svc.jobs.get(dispatched_job().job_id)
    assert (job.status, result.recovered, result.timed_out) == (JobStatus.COMPLETED, [job.job_id], [])
    (request,) = transport.requests
    assert request.method == "GET" and "extensions/VMSnapshotLinux" in request.url
    assert "expand=instanceView" in request.url


def test_a_failure_in_the_instance_view_is_answered_like_a_blob(svc):
    """A 402 (command too late) reported only to the agent: recorded with its code, next attempt queued."""
    from tests.fakes import RecordingTaskQueue

    svc.task_queue = RecordingTaskQueue()
    write_status(svc, b"")
    arm(svc, instance_view(corpus("08-failed-too-late-402.txt")))
    result = sweep_stale_jobs(svc)
    job = svc.jobs.get(dispatched_job().job_id)
    assert (job.attempt, job.errors[0].extension_code, result.timed_out) == (2, 402, [])
    assert [t.attempt for t in svc.task_queue.sent] == [2]


@pytest.mark.parametrize("body,status", [(instance_view(None), 200),
                                         ({"error": {"code": "NotFound", "message": "gone"}}, 404),
                                         ({"error": {"code": "AuthorizationFailed", "message": "no"}}, 403)])
def test_no_usable_instance_view_still_times_out(svc, body, status):
    """No substatus, no extension or no permission: the job fails with the timeout advice."""
    arm(svc, body, status)
    result = sweep_stale_jobs(svc)
    assert result.timed_out == [dispatched_job().job_id]


def test_arm_unreachable_defers_then_gives_up_after_the_grace(svc):
    """ARM throttling: the job waits; an hour past its deadline it fails without the instance view."""
    from shared.services.sweeping import INSTANCE_VIEW_GRACE

    arm(svc, {"error": {"code": "TooManyRequests", "message": "slow down"}}, 429)
    assert sweep_stale_jobs(svc).deferred == [dispatched_job().job_id]
    svc.clock.current = DISPATCHED + timedelta(minutes=150) + INSTANCE_VIEW_GRACE + timedelta(minutes=1)
    assert sweep_stale_jobs(svc).timed_out == [dispatched_job().job_id]


def test_trigger_and_sweep_racing_on_the_same_blobs_start_one_retry_each(make_settings):
    """The blob trigger (twice over) and two sweeps apply the same failed blobs at once: one attempt 2 per job."""
    import threading

    from shared.domain.job_transitions import mark_dispatched
    from shared.domain.jobs import DiskResult, Job
    from shared.services.ingestion import ingest_status_blob
    from tests.fakes import RecordingTaskQueue

    svc = Services(make_settings(), clock=FixedClock(PAST_DEADLINE), task_queue=RecordingTaskQueue())
    failed = corpus("06-failed-partial-76-761.txt")
    jobs = []
    for i in range(20):
        job = Job.new_backup(vm_name=f"vm-{i:02d}", slot=DISPATCHED, now=DISPATCHED)
        jobs.append(mark_dispatched(job, attempt=1, task_id=f"{job.job_id}_1", status_blob=f"{job.job_id}/1.Status.txt",
                                    log_blob=f"{job.job_id}/1.Logs.txt", now=DISPATCHED,
                                    disks=[DiskResult(lun=-1, blob_url="http://x/os"), DiskResult(lun=0, blob_url="http://x/d")]))
    svc.jobs.create_many_if_absent(jobs)
    container = svc.blob_service.get_container_client(svc.settings.status_container)
    container.create_container()
    blobs = {job.status_blob: failed.replace(dispatched_job().job_id.encode(), job.job_id.encode()) for job in jobs}
    for name, data in blobs.items():
        container.upload_blob(name, data)
    errors = []

    def trigger():
        try:
            for name, data in blobs.items():
                ingest_status_blob(svc, name, data, None)
        except Exception as exc:   # noqa: BLE001 - kept for the assertion
            errors.append(exc)

    def sweep():
        try:
            sweep_stale_jobs(svc, workers=4)
        except Exception as exc:   # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=fn) for fn in (trigger, trigger, sweep, sweep)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    for job in jobs:
        record = svc.jobs.get(job.job_id)
        assert (record.status, record.phase, record.attempt) == (JobStatus.IN_PROGRESS, JobPhase.QUEUED, 2)
        assert sum("failed with code 76" in note for note in record.notes) == 1, record.notes
    assert sorted(t.job_id for t in svc.task_queue.sent) == sorted(j.job_id for j in jobs)
