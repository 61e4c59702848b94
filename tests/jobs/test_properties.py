"""Properties of ingestion: no bytes make it raise or touch a finished job, and the order in which a
job's reports arrive does not change where the job ends up."""
from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain.job_transitions import apply_report
from shared.domain.status import parse_status_blob
from shared.services.ingestion import IngestResult, ingest_status_blob
from tests.jobs.helpers import CORPUS, FINAL_AT, RUNNING_AT, dispatched_job, fake_services
from tests.properties import examples

CORPUS_BLOBS = [p.read_bytes() for p in sorted(CORPUS.iterdir())]
TERMINAL = ["02-completed-fs-two-disks.txt", "03-completed-app-consistent.txt", "05-warning-prescript-failed.txt",
            "06-failed-partial-76-761.txt", "08-failed-too-late-402.txt", "12-file-form-substatus.status"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30)


@st.composite
def mutated_corpus(draw):
    data = bytearray(draw(st.sampled_from(CORPUS_BLOBS)))
    for _ in range(draw(st.integers(1, 5))):
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos:pos + draw(st.integers(1, 50))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=10))
    return bytes(data)


@st.composite
def status_shaped(draw):
    """JSON shaped like a status blob with arbitrary values where the extension puts its fields."""
    import json
    status = draw(st.fixed_dictionaries({}, optional={
        "status": st.sampled_from(["success", "error", "transitioning"]) | json_values,
        "code": st.sampled_from(["0", "1", "4", "76", "402", 2, " 7 "]) | json_values,
        "taskId": st.just(f"{dispatched_job().job_id}_1") | json_values,
        "formattedMessage": st.fixed_dictionaries({"message": st.text() | json_values}) | json_values,
        "snapshotInfo": st.lists(st.fixed_dictionaries({}, optional={
            "isSuccessful": st.sampled_from([True, False, "true", "False", None]),
            "snapshotUri": st.text(max_size=30) | json_values, "blobUri": json_values,
            "errorMessage": json_values}), max_size=4) | json_values,
        "vmHealthInfo": st.fixed_dictionaries({}, optional={"vmHealthStatusCode": json_values}) | json_values,
        "storageDetails": st.fixed_dictionaries({}, optional={"totalUsedSizeInBytes": json_values}) | json_values,
        "substatus": st.lists(st.fixed_dictionaries({"name": st.text() | json_values}), max_size=2) | json_values,
    }))
    element = {"version": "1.0", "timestampUTC": draw(st.sampled_from(
        ["\\/Date(1740794621000)\\/", "/Date(-1)/", "2025-03-01T02:03:41Z", "9999-99-99", 5])), "status": status}
    return json.dumps([element]).encode()


any_bytes = st.binary(max_size=3000) | mutated_corpus() | status_shaped()


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=any_bytes, terminal=st.sampled_from(TERMINAL))
def test_no_bytes_raise_or_change_a_finished_job(data, terminal):
    """Whatever a status blob contains, ingesting it never raises and never alters a finished job."""
    svc = fake_services()
    job = apply_report(dispatched_job(), parse_status_blob((CORPUS / terminal).read_bytes()), FINAL_AT)
    svc.jobs.create_if_absent(job)
    before = copy.deepcopy(svc.jobs.get(job.job_id))
    outcome = ingest_status_blob(svc, f"{job.job_id}/1.Status.txt", data, '"0x1"')
    assert outcome.result in set(IngestResult)
    assert svc.jobs.get(job.job_id) == before


@settings(max_examples=examples(400), deadline=None)
@given(data=any_bytes)
def test_no_bytes_raise_for_a_running_job(data):
    """Ingesting anything into a running job never raises; the job stays a valid record."""
    svc = fake_services()
    job = dispatched_job()
    svc.jobs.create_if_absent(job)
    ingest_status_blob(svc, f"{job.job_id}/1.Status.txt", data, None)
    after = svc.jobs.get(job.job_id)
    assert after.job_id == job.job_id and len(after.notes) <= 20
    # A retryable failure moves the job to attempt 2 and sends exactly that attempt's task.
    assert [t.task_id for t in svc.task_queue.sent] == ([] if after.attempt == 1 else [f"{job.job_id}_2"])


def _reports(final_name):
    running = parse_status_blob((CORPUS / "01-running-code4.txt").read_bytes())
    return [running, replace(running, timestamp=RUNNING_AT + timedelta(minutes=1)),
            replace(running, timestamp=FINAL_AT + timedelta(minutes=5)),       # a skewed 'running'
            parse_status_blob((CORPUS / final_name).read_bytes())]


@settings(max_examples=examples(300), deadline=None)
@given(final=st.sampled_from(TERMINAL), data=st.data())
def test_any_interleaving_of_a_jobs_reports_ends_in_the_same_record(final, data):
    """However the status blob's writes arrive (reordered, repeated), the job ends the same."""
    reports = _reports(final)
    order = data.draw(st.permutations(reports))
    repeats = data.draw(st.lists(st.sampled_from(reports), max_size=4))
    expected = dispatched_job()
    for report in reports:
        expected = apply_report(expected, report, FINAL_AT) or expected
    job = dispatched_job()
    for report in list(order) + repeats:
        job = apply_report(job, report, FINAL_AT + timedelta(hours=1)) or job
    assert job == expected


@settings(max_examples=examples(200), deadline=None)
@given(final=st.sampled_from(TERMINAL), data=st.data())
def test_any_delivery_order_of_a_jobs_blob_writes_ends_in_the_same_record_and_tasks(final, data):
    """Through ingestion, retries included: reordered and repeated blob writes end the same way."""
    writes = [(CORPUS / "01-running-code4.txt").read_bytes(), (CORPUS / final).read_bytes()]
    name = f"{dispatched_job().job_id}/1.Status.txt"

    def ingest_all(sequence):
        svc = fake_services()
        svc.jobs.create_if_absent(dispatched_job())
        for blob in sequence:
            ingest_status_blob(svc, name, blob, None)
        return svc.jobs.get(dispatched_job().job_id), [(t.task_id, t.not_before) for t in svc.task_queue.sent]

    order = data.draw(st.permutations(writes))
    repeats = data.draw(st.lists(st.sampled_from(writes), max_size=4))
    assert ingest_all(list(order) + repeats) == ingest_all(writes)
