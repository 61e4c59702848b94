"""A status report's times are believed only inside the job's window (docs/status-format.md): from the
job's start less clock skew to now plus clock skew. Outside it the blob is unreadable, with the reason,
and the job keeps waiting; no time, however extreme, makes reading or applying a report overflow."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain.jobs import JobStatus
from shared.domain.status import MAX_CLOCK_SKEW, ParseError, parse_status_blob
from shared.domain.ticks import to_ticks
from shared.services.ingestion import IngestResult, ingest_status_blob
from tests.jobs.helpers import FINAL_AT, STARTED, corpus, dispatched_job, fake_services
from tests.properties import examples

NAME = f"{dispatched_job().job_id}/1.Status.txt"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def with_times(name: str = "02-completed-fs-two-disks.txt", *, stamp: object = None, ticks: object = None) -> bytes:
    doc = json.loads(corpus(name))
    if stamp is not None:
        doc[0]["timestampUTC"] = stamp
    if ticks is not None:
        doc[0]["status"]["commandStartTimeUTCTicks"] = ticks
    return json.dumps(doc).encode()


def ms_date(moment: datetime) -> str:
    return f"\\/Date({(moment - _EPOCH) // timedelta(milliseconds=1)})\\/"


@pytest.fixture
def svc():
    services = fake_services()
    services.jobs.create_if_absent(dispatched_job())
    return services


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01",
                                   "0001-01-01T00:00:00+14:00"])
def test_an_iso_time_its_offset_moves_out_of_range_is_unreadable_not_a_crash(svc, stamp):
    """An ISO time at the edge of the calendar whose offset pushes it past year 1 or 9999 is refused
    with a reason; reading it never raises OverflowError."""
    with pytest.raises(ParseError, match="timestampUTC"):
        parse_status_blob(with_times(stamp=stamp))
    outcome = ingest_status_blob(svc, NAME, with_times(stamp=stamp), None)
    assert outcome.result is IngestResult.UNREADABLE and "timestampUTC" in outcome.detail


def test_a_report_stamped_before_its_job_started_is_unreadable(svc):
    """A result stamped two hours before the job existed is not this job's: unreadable, the job waits."""
    outcome = ingest_status_blob(svc, NAME, with_times(stamp=ms_date(STARTED - timedelta(hours=2))), None)
    job = svc.jobs.get(outcome.job_id)
    assert outcome.result is IngestResult.UNREADABLE and "before the job started" in outcome.detail
    assert (job.status, job.end_time) == (JobStatus.IN_PROGRESS, None)
    assert job.errors[0].error_code == "StatusBlobUnreadable" and "before the job started" in job.errors[0].error_string


def test_a_vm_clock_a_little_behind_is_within_the_window(svc):
    """A VM clock half an hour behind ours (less than the skew) does not cost the result."""
    outcome = ingest_status_blob(svc, NAME, with_times(stamp=ms_date(STARTED - MAX_CLOCK_SKEW / 2)), None)
    assert outcome.job.status is JobStatus.COMPLETED


@pytest.mark.parametrize("ticks, words", [
    (str(to_ticks(datetime(9999, 12, 31, tzinfo=timezone.utc))), "in the future"),
    (str(to_ticks(datetime(2001, 1, 1, tzinfo=timezone.utc))), "before the job started"),
])
def test_a_command_start_outside_the_window_is_unreadable(svc, ticks, words):
    """commandStartTimeUTCTicks echoes when the command was issued: one in year 9999 or 2001 is not ours."""
    outcome = ingest_status_blob(svc, NAME, with_times(ticks=ticks), None)
    assert outcome.result is IngestResult.UNREADABLE
    assert "commandStartTimeUTCTicks" in outcome.detail and words in outcome.detail
    assert svc.jobs.get(outcome.job_id).status is JobStatus.IN_PROGRESS


def test_an_untimely_failure_starts_no_retry(svc):
    """A retryable failure stamped far in the future is not believed, so no next attempt is queued."""
    stamp = ms_date(FINAL_AT + timedelta(days=3650))
    outcome = ingest_status_blob(svc, NAME, with_times("06-failed-partial-76-761.txt", stamp=stamp), None)
    assert outcome.result is IngestResult.UNREADABLE and "in the future" in outcome.detail
    assert svc.task_queue.sent == [] and svc.jobs.get(outcome.job_id).attempt == 1


_extreme_ms = st.integers(-(10 ** 15) + 1, 10 ** 15 - 1)
_offset = st.integers(-1439, 1439).map(lambda m: f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}{abs(m) % 60:02d}")
_iso_offset = st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
_stamps = st.one_of(
    st.builds(lambda ms, off: f"\\/Date({ms}{off})\\/", _extreme_ms, st.one_of(st.just(""), _offset)),
    st.builds(lambda moment, tz: moment.replace(tzinfo=tz).isoformat(), st.datetimes(), _iso_offset),
    st.datetimes().map(lambda moment: moment.isoformat() + "Z"),
    st.sampled_from([ms_date(FINAL_AT), "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"]),
)
_ticks = st.one_of(st.integers(-(10 ** 30), 10 ** 30), st.integers(0, 3_155_378_975_999_999_999),
                   st.integers(0, 10 ** 400).map(str), st.sampled_from(["", "6.36458E+17", "-1"]))


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stamp=_stamps, ticks=_ticks, created=_stamps, name=st.sampled_from(
    ["02-completed-fs-two-disks.txt", "06-failed-partial-76-761.txt", "01-running-code4.txt"]))
def test_no_time_makes_reading_or_applying_a_report_overflow(stamp, ticks, created, name):
    """Extreme \\/Date(ms)\\/, ISO and tick values (and a Direct Drive creation time) never raise: the blob
    is applied with times inside the window, or recorded as unreadable."""
    doc = json.loads(with_times(name, stamp=stamp, ticks=ticks))
    for disk in doc[0]["status"].get("snapshotInfo") or []:
        disk["directDriveSnapshotIdentifier"] = {"creationTime": {"DateTime": created}, "id": "dd-1", "token": "t"}
    data = json.dumps(doc).encode()
    try:
        report = parse_status_blob(data)
    except ParseError:
        report = None
    svc = fake_services()
    svc.jobs.create_if_absent(dispatched_job())
    outcome = ingest_status_blob(svc, NAME, data, None)
    job = svc.jobs.get(outcome.job_id)
    if outcome.result is IngestResult.UNREADABLE:
        assert job.errors[0].error_code == "StatusBlobUnreadable" and job.end_time is None
        return
    assert report is not None
    earliest, latest = STARTED - MAX_CLOCK_SKEW, FINAL_AT + MAX_CLOCK_SKEW
    for moment in (report.timestamp, report.command_start):
        assert moment is None or earliest <= moment <= latest
    assert job.end_time is None or STARTED <= job.end_time <= latest
