"""handle_snapshot_task: one queue message in, one attempt on the VM (fakes for jobs, claims, inventory and
dispatcher; the status container and SAS on real Azurite)."""
from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.domain.command import decode_object_str
from shared.domain.job_transitions import MAX_ATTEMPTS, RETRY_BACKOFF
from shared.domain.jobs import AttemptOutcome, Job, JobPhase, JobStatus
from shared.domain.task import SnapshotTask, Trigger
from shared.errors import TransientError
from shared.ports import DispatchRefused
from shared.services.dispatch import Outcome, handle_snapshot_task, preview_extension_resource
from tests.fakes import (InMemoryBackupClaims, InMemoryInventory, InMemoryJobStore, OutageJobStore,
                         RecordingDispatcher, RecordingTaskQueue)

NOW = datetime.now(timezone.utc).replace(microsecond=0)
JOB_ID = "0f6c1e2a-7b1d-4a57-9c0e-2d8e1c4b9a11"


@pytest.fixture
def vm(make_vm):
    return make_vm(data_luns=(0, 1))


@pytest.fixture
def svc(make_settings, vm):
    return Services(make_settings(), clock=FixedClock(NOW), jobs=InMemoryJobStore(), claims=InMemoryBackupClaims(),
                    inventory=InMemoryInventory(vm), dispatcher=RecordingDispatcher(),
                    task_queue=RecordingTaskQueue())


def _task(vm, **changes) -> SnapshotTask:
    task = SnapshotTask(job_id=JOB_ID, attempt=1, vm_name=vm.name, slot=NOW, trigger=Trigger.SCHEDULED,
                        policy_name="DefaultPolicy", retain_until=NOW + timedelta(days=30))
    return dataclasses.replace(task, **changes)


def _queue_job(svc, task) -> None:
    job = Job.new_backup(vm_name=task.vm_name, slot=task.slot, now=NOW, policy_name=task.policy_name,
                         retain_until=task.retain_until)
    svc.jobs.create_if_absent(dataclasses.replace(job, job_id=task.job_id))


def _deliver(svc, task, n: int = 1):
    return handle_snapshot_task(svc, task.to_json().encode(), message_id=task.message_id, delivery_count=n)


def _job_text(svc) -> str:
    return json.dumps(dataclasses.asdict(svc.jobs.get(JOB_ID)), default=str)


def test_a_task_reaches_the_vm_and_the_job_says_dispatched(svc, vm):
    """After one delivery the VM has the command and the job shows Dispatched with its status blob."""
    task = _task(vm)
    _queue_job(svc, task)
    outcome = _deliver(svc, task)
    assert (outcome.outcome, outcome.task_id) == (Outcome.DISPATCHED, f"{JOB_ID}_1")
    job = svc.jobs.get(JOB_ID)
    assert (job.status, job.phase, job.attempt, job.task_id) == (
        JobStatus.IN_PROGRESS, JobPhase.DISPATCHED, 1, f"{JOB_ID}_1")
    assert (job.status_blob, job.log_blob) == (f"{JOB_ID}/1.Status.txt", f"{JOB_ID}/1.Logs.txt")
    assert [(d.lun, d.blob_url) for d in job.disks] == [(d.lun, d.blob_url) for d in vm.disks]
    assert svc.status_blobs.read(job.status_blob) == b"" and svc.status_blobs.read(job.log_blob) == b""
    [(sent_vm, command)] = svc.dispatcher.sent
    assert sent_vm == vm and command.task_id == f"{JOB_ID}_1"
    sas = decode_object_str(command.protected_settings["objectStr"])["blobSASUri"]
    assert [u.split("?")[0] for u in sas] == [d.blob_url for d in vm.disks]
    assert all(parse_qs(urlsplit(u).query)["sp"] == ["c"] for u in sas)
    assert command.protected_settings["statusBlobUri"].startswith(svc.status_blobs.url(job.status_blob) + "?")


def test_the_job_record_holds_no_secret(svc, vm):
    """The job record names blobs, never a SAS or a protected setting."""
    task = _task(vm)
    _queue_job(svc, task)
    _deliver(svc, task)
    [(_, command)] = svc.dispatcher.sent
    text = _job_text(svc)
    assert "sig=" not in text and "?" not in text
    assert command.protected_settings["objectStr"] not in text


def test_a_disk_whose_blob_is_missing_is_still_dispatched(svc, vm, blob_service):
    """No refusal before dispatch for a missing blob (a failover can bring it back): the command goes out
    with every disk, and the extension's report decides, as the service does."""
    gone = vm.disks[-1]
    container, blob_name = gone.blob_url.split("/")[-2:]
    blob_service.get_container_client(container).delete_blob(blob_name)
    task = _task(vm)
    _queue_job(svc, task)
    outcome = _deliver(svc, task)
    assert outcome.outcome is Outcome.DISPATCHED
    assert svc.jobs.get(JOB_ID).phase is JobPhase.DISPATCHED and svc.jobs.get(JOB_ID).errors == []
    [(_, command)] = svc.dispatcher.sent
    sas = decode_object_str(command.protected_settings["objectStr"])["blobSASUri"]
    assert [u.split("?")[0] for u in sas] == [d.blob_url for d in vm.disks]


def test_a_missing_job_record_is_created_from_the_message(svc, vm):
    """A task whose job record is missing still runs: the message is authoritative."""
    task = _task(vm, attempt=2)
    assert _deliver(svc, task).outcome is Outcome.DISPATCHED
    job = svc.jobs.get(JOB_ID)
    assert (job.vm_name, job.policy_name, job.attempt) == (vm.name, "DefaultPolicy", 2)


def test_redeliveries_of_a_dispatched_task_start_no_new_attempt(svc, vm):
    """A task delivered again after its attempt was claimed starts no new attempt: a redelivery (the
    first delivery may have died before the VM got the command) hands over the same command, same
    taskId, which the extension runs once; once the extension has written its status, nothing."""
    task = _task(vm)
    _queue_job(svc, task)
    assert _deliver(svc, task, 1).outcome is Outcome.DISPATCHED
    assert _deliver(svc, task, 1).outcome is Outcome.DUPLICATE          # a second copy, not a redelivery
    assert {_deliver(svc, task, n).outcome for n in range(2, 5)} == {Outcome.DISPATCHED}
    assert {c.task_id for _, c in svc.dispatcher.sent} == {f"{JOB_ID}_1"}
    status_blob, _ = svc.status_blobs.attempt_blob_names(JOB_ID, 1)
    svc.blob_service.get_blob_client(svc.settings.status_container, status_blob).upload_blob(
        b'[{"status": {"code": "4"}}]', overwrite=True)                    # the extension reported
    sent = len(svc.dispatcher.sent)
    assert {_deliver(svc, task, n).outcome for n in range(5, 12)} == {Outcome.DUPLICATE}
    assert len(svc.dispatcher.sent) == sent
    job = svc.jobs.get(JOB_ID)
    assert (job.attempt, job.phase, job.attempts) == (1, JobPhase.DISPATCHED, [])


def test_a_transient_dispatch_failure_schedules_the_next_attempt_after_the_pause(svc, vm):
    """A VM agent that does not take the command is asked again by a scheduled task after the retry
    pause (a new taskId), not by an immediate redelivery; the message is settled."""
    task = _task(vm)
    _queue_job(svc, task)
    svc.dispatcher.errors.append(TransientError("VM agent busy"))
    first = _deliver(svc, task, 1)
    assert (first.outcome, first.task_id) == (Outcome.RETRYING, f"{JOB_ID}_2")
    [retry] = svc.task_queue.sent
    assert (retry.attempt, retry.not_before) == (2, NOW + RETRY_BACKOFF[0])
    job = svc.jobs.get(JOB_ID)
    assert (job.status, job.phase, job.attempt) == (JobStatus.IN_PROGRESS, JobPhase.QUEUED, 2)
    [record] = job.attempts
    assert (record.task_id, record.outcome, record.retry_at) == (
        f"{JOB_ID}_1", AttemptOutcome.NOT_DISPATCHED, NOW + RETRY_BACKOFF[0])
    assert "VM agent busy" in job.errors[0].error_string
    assert _deliver(svc, task, 2).outcome is Outcome.DUPLICATE      # a late copy runs nothing early
    assert len(svc.task_queue.sent) == 1 and svc.task_queue.operations == 2   # re-sent, dropped as a duplicate
    assert _deliver(svc, retry).outcome is Outcome.DISPATCHED
    assert [c.task_id for _, c in svc.dispatcher.sent] == [f"{JOB_ID}_2"]
    assert svc.jobs.get(JOB_ID).status_blob == f"{JOB_ID}/2.Status.txt"


def test_dispatch_failing_on_every_attempt_fails_the_job_with_its_reason(svc, vm):
    """After MAX_ATTEMPTS attempts that could not be handed over, the job is Failed with the last error
    and what to do, and no further task is sent."""
    task = _task(vm)
    _queue_job(svc, task)
    svc.dispatcher.errors.extend(TransientError(f"agent busy #{n}") for n in range(1, MAX_ATTEMPTS + 1))
    outcomes = [_deliver(svc, task).outcome]
    while len(outcomes) < MAX_ATTEMPTS:
        outcomes.append(_deliver(svc, svc.task_queue.sent[-1]).outcome)
    assert outcomes == [Outcome.RETRYING] * (MAX_ATTEMPTS - 1) + [Outcome.FAILED]
    assert [t.not_before - NOW for t in svc.task_queue.sent] == list(RETRY_BACKOFF[: MAX_ATTEMPTS - 1])
    job = svc.jobs.get(JOB_ID)
    assert job.status is JobStatus.FAILED and job.end_time == NOW
    error = job.errors[0]
    assert error.error_code == "UserErrorGuestAgentStatusUnavailable" and f"agent busy #{MAX_ATTEMPTS}" in error.error_string
    assert error.recommendations
    assert [r.attempt for r in job.attempts] == list(range(1, MAX_ATTEMPTS + 1))
    assert svc.dispatcher.sent == []


def test_a_pending_retry_runs_only_from_its_own_task(svc, vm):
    """While attempt 2 waits for its pause, a late copy of attempt 1's message dispatches nothing;
    attempt 2's own task then runs it, under attempt 2's taskId."""
    task = _task(vm)
    _queue_job(svc, task)
    svc.jobs.update(JOB_ID, lambda j: dataclasses.replace(j, attempt=2, phase=JobPhase.QUEUED))
    assert _deliver(svc, task, 4).outcome is Outcome.DUPLICATE and svc.dispatcher.sent == []
    assert _deliver(svc, dataclasses.replace(task, attempt=2)).outcome is Outcome.DISPATCHED
    assert [c.task_id for _, c in svc.dispatcher.sent] == [f"{JOB_ID}_2"]


def test_unknown_vm_fails_the_job_clearly(svc, vm):
    """A task for a VM that no longer exists fails its job with a VM-not-found error and advice."""
    task = _task(vm, vm_name="gone-vm")
    _queue_job(svc, task)
    outcome = _deliver(svc, task)
    assert outcome.outcome is Outcome.FAILED
    job = svc.jobs.get(JOB_ID)
    assert job.status is JobStatus.FAILED and job.end_time is not None
    [error] = job.errors
    assert error.error_code == "UserErrorVmNotFound" and "gone-vm" in error.error_string
    assert any("stop protection" in r for r in error.recommendations)
    assert svc.dispatcher.sent == []


def test_duplicate_message_for_a_finished_job_dispatches_nothing(svc, vm):
    """A message delivered again after the job finished does not snapshot the VM again."""
    task = _task(vm)
    _queue_job(svc, task)
    svc.jobs.update(JOB_ID, lambda j: dataclasses.replace(j, status=JobStatus.COMPLETED, phase=JobPhase.DONE))
    assert _deliver(svc, task).outcome is Outcome.DUPLICATE
    assert svc.dispatcher.sent == []
    assert not svc.blob_service.get_container_client(svc.settings.status_container).exists()


def test_malformed_message_is_kept_with_its_reason(svc):
    """A message that can never succeed is settled and kept, redacted, where an operator finds it."""
    body = b'{"schema": "vmsnap.snapshot-task/1", "jobId": "j", "note": "https://a/b?sp=r&sig=LEAKED"}'
    outcome = handle_snapshot_task(svc, body, message_id="msg-1", delivery_count=1)
    assert outcome.outcome is Outcome.REJECTED and "vmName" in outcome.reason
    stored = json.loads(svc.blob_service.get_blob_client(
        f"{svc.settings.status_container}-rejected", "msg-1.json").download_blob().readall())
    assert stored["messageId"] == "msg-1" and "vmName" in stored["reason"]
    assert "LEAKED" not in stored["body"] and '"jobId": "j"' in stored["body"]


def test_oversized_message_is_kept_capped(svc):
    """A huge message is rejected and only its first 64 KiB are kept."""
    body = b"x" * 200_000
    assert handle_snapshot_task(svc, body, message_id="big", delivery_count=1).outcome is Outcome.REJECTED
    stored = json.loads(svc.blob_service.get_blob_client(
        f"{svc.settings.status_container}-rejected", "big.json").download_blob().readall())
    assert stored["truncated"] and stored["bodyBytes"] == 200_000 and len(stored["body"]) == 64 * 1024


def test_refused_dispatch_fails_the_job_with_the_reason(svc, vm):
    """When the VM's control plane refuses for good, the job fails with its code and advice."""
    svc.dispatcher.errors.append(DispatchRefused("no rights on VM x", error_code="UserErrorExtensionDispatchNotAuthorized",
                                                 recommendation="Grant 'Virtual Machine Contributor'."))
    task = _task(vm)
    _queue_job(svc, task)
    assert _deliver(svc, task).outcome is Outcome.FAILED
    [error] = svc.jobs.get(JOB_ID).errors
    assert error.error_code == "UserErrorExtensionDispatchNotAuthorized"
    assert error.recommendations == ["Grant 'Virtual Machine Contributor'."]


def test_a_disk_outside_the_storage_account_fails_the_job(svc, vm):
    """A VM whose disk cannot get a SAS fails before anything is sent to it."""
    bad = dataclasses.replace(vm, disks=vm.disks + (dataclasses.replace(
        vm.disks[0], lun=5, blob_url="https://other.blob.core.windows.net/vhds/x.vhd"),))
    svc.inventory.vms[vm.name.lower()] = bad
    task = _task(vm)
    _queue_job(svc, task)
    assert _deliver(svc, task).outcome is Outcome.FAILED
    assert "other.blob.core.windows.net" in svc.jobs.get(JOB_ID).errors[0].error_string
    assert svc.dispatcher.sent == []


def test_logs_exceptions_and_records_hold_no_secret(svc, vm, caplog):
    """Whatever happens during dispatch, the captured logs and the error never show a SAS."""
    task = _task(vm)
    _queue_job(svc, task)
    svc.dispatcher.errors.append(TransientError("PUT https://a/b?sv=1&sig=SECRETSIG timed out"))
    with caplog.at_level(logging.DEBUG):
        assert _deliver(svc, task, 1).outcome is Outcome.RETRYING
        _deliver(svc, task, 2)
        _deliver(svc, svc.task_queue.sent[-1], 1)
        _deliver(svc, _task(vm, vm_name="nope", job_id="other"), 1)
    [(_, command)] = svc.dispatcher.sent
    secrets = ["SECRETSIG", command.protected_settings["objectStr"]]
    secrets += [parse_qs(urlsplit(u).query)["sig"][0] for u in
                decode_object_str(command.protected_settings["objectStr"])["blobSASUri"]]
    secrets += [parse_qs(urlsplit(command.protected_settings[k]).query)["sig"][0]
                for k in ("statusBlobUri", "logsBlobUri")]
    text = caplog.text + _job_text(svc)
    assert [s for s in secrets if s in text] == []
    assert all(JOB_ID in r.getMessage() or "other" in r.getMessage() for r in caplog.records
               if r.name == "shared.services.dispatch")


def test_preview_shows_the_command_without_creating_anything(svc, vm):
    """The dry run shows every public setting and no protected value, and creates no blob or job."""
    resource = preview_extension_resource(svc, vm.name)
    props = resource["properties"]
    assert props["type"] == "VMSnapshotLinux" and props["settings"]["commandToExecute"] == "snapshot"
    assert props["settings"]["commandStartTimeUTCTicks"].isdigit()
    assert decode_object_str(props["settings"]["objectStr"])["includedDisks"]["dataDiskLunList"] == [0, 1]
    assert set(props["protectedSettings"].values()) == {"<redacted>"}
    assert "sig=" not in json.dumps(resource)
    assert not svc.blob_service.get_container_client(svc.settings.status_container).exists()
    assert svc.jobs.jobs == {} and svc.dispatcher.sent == []


@pytest.mark.parametrize("job_id", ["a/b", "a#b", "job?x", "tab\there", "x" * 129])
def test_a_job_id_the_table_refuses_is_rejected_at_once(svc, vm, job_id):
    """A task whose jobId cannot be a table key or blob name is a permanent error: kept with its reason
    and settled, never redelivered, no job created."""
    body = json.loads(_task(vm).to_json())
    body["jobId"] = job_id
    outcome = handle_snapshot_task(svc, json.dumps(body).encode(), message_id="bad-id", delivery_count=1)
    assert outcome.outcome is Outcome.REJECTED and "jobId" in outcome.reason
    assert svc.jobs.jobs == {} and svc.dispatcher.sent == []


def test_a_job_store_outage_is_ridden_out_inside_the_delivery(svc, vm):
    """Tables down for 3 minutes: the same delivery keeps trying with growing pauses and dispatches,
    instead of ten quick redeliveries that end in the dead-letter queue."""
    from shared.services.dispatch import dispatch_with_retries

    task = _task(vm)
    _queue_job(svc, task)
    pauses = []

    def sleep(seconds):
        pauses.append(seconds)
        svc.clock.advance(timedelta(seconds=seconds))

    svc.jobs = OutageJobStore(svc.jobs, svc.clock, NOW + timedelta(minutes=3))
    outcome = dispatch_with_retries(svc, task.to_json().encode(), message_id=task.message_id, delivery_count=1,
                                    sleep=sleep)
    assert outcome.outcome is Outcome.DISPATCHED and len(svc.dispatcher.sent) == 1
    assert pauses[:3] == [1.0, 2.0, 4.0] and timedelta(minutes=3) <= timedelta(seconds=sum(pauses))


class _AnswerLostOnClaim:
    """A job store whose write of the attempt's claim (Queued -> Dispatched) is stored, but whose answer is
    lost in an outage: the caller gets TransientError although the row changed."""

    def __init__(self, inner) -> None:
        self.inner, self.lost = inner, 0

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def update(self, job_id, change):
        before = self.inner.get(job_id)
        after = self.inner.update(job_id, change)
        if self.lost == 0 and before.phase is JobPhase.QUEUED and after.phase is JobPhase.DISPATCHED:
            self.lost += 1
            raise TransientError("the connection was reset before the answer came")
        return after


def test_a_claim_stored_before_an_outage_cut_its_answer_is_resumed_by_the_same_delivery(svc, vm):
    """The claim reached the table but its answer was lost: the delivery's next try finds its own claim and
    hands the command over, instead of leaving the job Dispatched with nothing sent until the timeout."""
    from shared.services.dispatch import dispatch_with_retries

    task = _task(vm)
    _queue_job(svc, task)
    svc.jobs = _AnswerLostOnClaim(svc.jobs)
    outcome = dispatch_with_retries(svc, task.to_json().encode(), message_id=task.message_id, delivery_count=1,
                                    sleep=lambda s: svc.clock.advance(timedelta(seconds=s)))
    assert svc.jobs.lost == 1
    assert outcome.outcome is Outcome.DISPATCHED
    assert [command.task_id for _, command in svc.dispatcher.sent] == [f"{JOB_ID}_1"]


def test_a_first_try_never_takes_over_a_claim_it_did_not_write(svc, vm):
    """Without an earlier failed try, a Dispatched attempt is another delivery's: nothing is sent twice."""
    task = _task(vm)
    _queue_job(svc, task)
    assert _deliver(svc, task).outcome is Outcome.DISPATCHED
    assert _deliver(svc, task).outcome is Outcome.DUPLICATE and len(svc.dispatcher.sent) == 1


def test_an_outage_past_the_budget_gives_the_message_back_within_its_lock(svc, vm):
    """Past the budget the delivery fails (the host abandons it), before the lock renewal's 5 minutes end."""
    from shared.services.dispatch import DISPATCH_RETRY_BUDGET, dispatch_with_retries

    task = _task(vm)
    _queue_job(svc, task)
    svc.jobs = OutageJobStore(svc.jobs, svc.clock, NOW + timedelta(hours=1))
    with pytest.raises(TransientError):
        dispatch_with_retries(svc, task.to_json().encode(), message_id=task.message_id, delivery_count=1,
                              sleep=lambda s: svc.clock.advance(timedelta(seconds=s)))
    assert svc.clock.now() - NOW <= DISPATCH_RETRY_BUDGET < timedelta(minutes=5)
    assert svc.dispatcher.sent == []


def test_a_scheduled_task_of_a_vm_whose_protection_stopped_meanwhile_is_cancelled(svc, vm):
    """Protection stopped after the tick planned the backup: the job is cancelled, nothing reaches the VM."""
    from shared.domain.protection import ProtectedItem, ProtectionState

    svc.protected_items.add(ProtectedItem(vm_name=vm.name, policy_name="DefaultPolicy", protected_since=NOW,
                                          policy_assigned_at=NOW, state=ProtectionState.STOPPED))
    task = _task(vm)
    _queue_job(svc, task)
    outcome = _deliver(svc, task)
    job = svc.jobs.get(JOB_ID)
    assert job.status is JobStatus.CANCELLED and "protection" in " ".join(job.notes)
    assert svc.dispatcher.sent == [] and outcome.outcome is Outcome.DUPLICATE


def test_of_two_scheduled_backups_of_a_vm_the_first_delivered_runs_and_the_other_gives_way(svc, vm):
    """Two scheduled jobs of one VM queued at once: the one whose task comes first holds the VM and runs;
    the other is cancelled naming it (tests/dispatch/test_claims.py races them)."""
    from shared.domain.jobs import job_id_for

    tasks = []
    for minutes in (0, 30):
        slot = NOW + timedelta(minutes=minutes)
        task = _task(vm, job_id=job_id_for(vm.name, slot), slot=slot)
        job = Job.new_backup(vm_name=vm.name, slot=slot, now=slot, policy_name="DefaultPolicy",
                             retain_until=task.retain_until)
        svc.jobs.create_if_absent(job)
        tasks.append(task)
    earlier, later = tasks
    assert _deliver(svc, later).outcome is Outcome.DISPATCHED
    assert _deliver(svc, earlier).outcome is Outcome.DUPLICATE
    assert svc.jobs.get(earlier.job_id).status is JobStatus.CANCELLED
    assert later.job_id in " ".join(svc.jobs.get(earlier.job_id).notes)
    assert [command.task_id for _, command in svc.dispatcher.sent] == [f"{later.job_id}_1"]


@pytest.mark.parametrize("changes, field", [
    ({"slot": "9999-12-31T00:00:00Z"}, "slot"),
    ({"slot": "9999-12-31T23:59:59-14:00"}, "slot"),     # beyond the range once made UTC
    ({"slot": "0001-01-01T00:00:00+14:00"}, "slot"),
    ({"slot": (NOW - timedelta(days=3650)).isoformat()}, "slot"),
    ({"slot": (NOW + timedelta(hours=3)).isoformat()}, "slot"),
    ({"retainUntil": "9999-12-31T00:00:00Z"}, "retainUntil"),
    ({"retainUntil": (NOW - timedelta(days=1)).isoformat()}, "retainUntil"),
])
def test_a_new_job_with_times_out_of_bounds_is_rejected_and_nothing_created(svc, vm, changes, field):
    """A task put on the queue by hand whose slot (or retain-until) no backup can have is kept with the
    reason naming the field and its window, and settled: no job, no command, no recovery point dated 9999."""
    body = json.loads(_task(vm).to_json())
    body.update(changes)
    outcome = handle_snapshot_task(svc, json.dumps(body).encode(), message_id="odd-times", delivery_count=1)
    assert outcome.outcome is Outcome.REJECTED and field in outcome.reason
    assert svc.jobs.jobs == {} and svc.dispatcher.sent == []
    kept = svc.blob_service.get_blob_client(svc.status_blobs.rejected_container, "odd-times.json")
    assert json.loads(kept.download_blob().readall())["reason"] == outcome.reason


@pytest.mark.parametrize("offset", [timedelta(hours=-24 - 71), timedelta(hours=1, minutes=59)])
def test_a_new_job_at_the_edges_of_the_window_still_runs(svc, vm, offset):
    """The window is not tighter than it says: a slot just inside either edge starts its job."""
    assert _deliver(svc, _task(vm, slot=NOW + offset)).outcome is Outcome.DISPATCHED


def test_an_existing_job_is_trusted_whatever_its_slot(svc, vm):
    """The window guards jobs made from a message; a job the service made (an initial backup whose slot
    is the enable time, days ago) runs."""
    task = _task(vm, slot=NOW - timedelta(days=30))
    _queue_job(svc, task)
    assert _deliver(svc, task).outcome is Outcome.DISPATCHED
