"""Status entries as the extension handler family writes them: the four status words, several entries
in one blob (the most final wins), and a Direct Drive disk's snapshot identifier kept without its token."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.job_transitions import apply_report
from shared.domain.jobs import Consistency, JobPhase, JobStatus
from shared.domain.recovery import point_from_job
from shared.domain.status import ParseError, parse_status_blob
from shared.services.ingestion import IngestResult, ingest_status_blob
from tests.jobs.helpers import DATA_URL, FINAL_AT, OS_URL, corpus, dispatched_job, fake_services
from tests.properties import examples

NOW = FINAL_AT + timedelta(seconds=30)
FINAL_MS = 1740794621000            # FINAL_AT, as the corpus blobs stamp it
TASK = f"{dispatched_job().job_id}_1"
TOKEN = "dd-TOKEN-must-never-be-kept-0123456789"


def element(word: str = "success", code: str | None = "1", *, at_ms: int | None = FINAL_MS, task: str = TASK,
            **status) -> dict:
    """One status element shaped like the corpus' completed run (two disks snapshotted), with its word,
    code, time and taskId as given."""
    base = json.loads(corpus("02-completed-fs-two-disks.txt"))[0]
    base["status"].update(status, status=word, taskId=task)
    if code is None:
        del base["status"]["code"]
    else:
        base["status"]["code"] = code
    if at_ms is None:
        del base["timestampUTC"]
    else:
        base["timestampUTC"] = f"\\/Date({at_ms})\\/"
    return base


def blob(*elements: dict) -> bytes:
    return json.dumps(list(elements)).encode()


def applied(*elements: dict):
    return apply_report(dispatched_job(), parse_status_blob(blob(*elements)), NOW)


# --- the four words -------------------------------------------------------------------------------

def test_transitioning_keeps_the_job_running():
    """A 'transitioning' entry is progress, not a failure saying every disk was snapshotted."""
    job = applied(element("transitioning", "1"))
    assert (job.status, job.phase) == (JobStatus.IN_PROGRESS, JobPhase.RUNNING)
    assert job.errors == [] and job.end_time is None


def test_transitioning_without_a_code_is_progress():
    """The handler schema lets an unfinished status leave its code out: still running, not unreadable."""
    job = applied(element("Transitioning", None))
    assert (job.status, job.phase, job.extension_code) == (JobStatus.IN_PROGRESS, JobPhase.RUNNING, 4)


def test_warning_completes_with_warnings_and_keeps_the_snapshots():
    """A 'warning' run with a success code completes with a warning; its snapshots make a recovery point."""
    job = applied(element("warning", "1"))
    assert (job.status, job.consistency) == (JobStatus.COMPLETED_WITH_WARNINGS, Consistency.FILE_SYSTEM)
    [warning] = job.errors
    assert warning.error_code == "ExtensionReportedWarning" and warning.recommendations
    assert [d.status for d in job.disks] == ["Completed", "Completed"]
    assert len(point_from_job(job).disks) == 2


def test_warning_with_an_error_code_names_that_code_as_the_warning():
    """A 'warning' carrying a failure code (a script error) completes with that code's advice."""
    job = applied(element("warning", "302"))
    assert job.status is JobStatus.COMPLETED_WITH_WARNINGS
    assert [(e.error_code, e.extension_code) for e in job.errors] == [("UserErrorPreScriptNotFound", 302)]


def test_an_error_whose_codes_say_success_is_a_generic_failure():
    """status 'error' with code 1 and health 1: failed as code 2, never 'every disk was snapshotted'."""
    job = applied(element("error", "1"))
    assert job.status is JobStatus.FAILED
    assert [(e.error_code, e.extension_code) for e in job.errors] == [("BackUpOperationFailed", 2)]
    assert "every disk was snapshotted" not in job.errors[0].error_string


@pytest.mark.parametrize("word", ["failed", "succeeded", "ok", "unknown"])
def test_a_word_outside_the_schema_is_unreadable(word):
    """A status word the handler schema does not have is refused with a reason, not read as a failure."""
    with pytest.raises(ParseError) as caught:
        parse_status_blob(blob(element(word, "1")))
    assert caught.value.kind == "shape" and repr(word) in caught.value.reason and "transitioning" in caught.value.reason


# --- several entries ------------------------------------------------------------------------------

def test_a_final_entry_wins_over_a_newer_unfinished_one():
    """[success, then a later 'transitioning'] is the completed run, whichever comes first in the blob."""
    later = FINAL_MS + 60_000
    for entries in ([element("success", "1"), element("transitioning", "4", at_ms=later)],
                    [element("transitioning", "4", at_ms=later), element("success", "1")],
                    [element("success", "4", at_ms=later), element("success", "1")]):
        assert applied(*entries).status is JobStatus.COMPLETED


def test_among_final_entries_the_newest_wins():
    """An error followed by a newer success is the success, and the other way round."""
    later = FINAL_MS + 60_000
    assert applied(element("error", "76"), element("success", "1", at_ms=later)).status is JobStatus.COMPLETED
    assert applied(element("error", "76", at_ms=later), element("success", "1")).status is JobStatus.FAILED


def test_final_entries_stamped_alike_resolve_to_the_most_severe():
    """Same time (or none): error over warning over success, so a twin success never hides an error."""
    assert applied(element("success", "1"), element("error", "76")).status is JobStatus.FAILED
    assert applied(element("warning", "1"), element("success", "1")).status is JobStatus.COMPLETED_WITH_WARNINGS
    assert applied(element("success", "1", at_ms=None), element("error", "76", at_ms=None)).status is \
        JobStatus.FAILED
    # A stamped entry is believed over an unstamped one.
    assert applied(element("error", "76", at_ms=None), element("success", "1")).status is JobStatus.COMPLETED


def test_the_file_form_payload_takes_part_in_the_choice():
    """An agent file element carries its blob payload; its entries are ranked with the others."""
    file_form = json.loads(corpus("12-file-form-substatus.status"))[0]         # inside: error 76
    later = element("success", "1", at_ms=FINAL_MS + 60_000)
    assert applied(file_form, later).status is JobStatus.COMPLETED
    assert applied(file_form, element("transitioning", "4", at_ms=FINAL_MS + 60_000)).status is JobStatus.FAILED


def test_entries_of_different_tasks_are_refused():
    """A blob reports on one task: entries naming two taskIds are unreadable, not picked from."""
    with pytest.raises(ParseError, match="different taskIds"):
        parse_status_blob(blob(element("error", "76"), element("success", "1", task="other-task_1")))


def test_a_broken_entry_among_good_ones_is_named():
    """One malformed entry makes the blob unreadable, naming which entry is wrong."""
    with pytest.raises(ParseError, match="status element 2 of 2: status.code"):
        parse_status_blob(blob(element("success", "1"), element("error", "seventy-six")))
    with pytest.raises(ParseError, match="status element 1 of 2 is not a JSON object"):
        parse_status_blob(json.dumps([7, element()]).encode())


def test_too_many_entries_are_refused():
    """A blob of thousands of entries is refused before each is read."""
    with pytest.raises(ParseError, match="over the limit"):
        parse_status_blob(blob(*[element()] * 65))


_WORDS = st.sampled_from(["transitioning", "success", "warning", "error"])
_entry_specs = st.lists(st.tuples(_WORDS, st.sampled_from(["0", "1", "4", "76", "402"]),
                                  st.one_of(st.none(), st.integers(0, 120).map(lambda s: FINAL_MS + s * 1000))),
                        min_size=1, max_size=8)


@settings(max_examples=examples(300), deadline=None)
@given(specs=_entry_specs, data=st.data())
def test_the_chosen_entry_is_the_most_final_whatever_the_order(specs, data):
    """Over any mix of words, codes and times: a final entry is chosen when there is one, the newest of
    them, and (ties apart) the choice does not depend on the order the entries were written in."""
    report = parse_status_blob(blob(*[element(w, c, at_ms=t) for w, c, t in specs]))
    finals = [(w, c, t) for w, c, t in specs if w != "transitioning" and c != "4"]
    assert report.in_progress == (not finals)
    pool = finals or specs
    stamps = [t for _, _, t in pool if t is not None]
    expected_ms = max(stamps) if stamps else None
    assert report.timestamp == (None if expected_ms is None else
                                datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=expected_ms))
    shuffled = data.draw(st.permutations(specs))
    again = parse_status_blob(blob(*[element(w, c, at_ms=t) for w, c, t in shuffled]))
    assert (again.in_progress, again.timestamp, again.succeeded) == (report.in_progress, report.timestamp,
                                                                      report.succeeded)


# --- Direct Drive ---------------------------------------------------------------------------------

def direct_drive_blob() -> bytes:
    """The host path's result for a Direct Drive data disk: snapshotUri null, the identifier with its token."""
    doc = element("success", "1")
    data_disk = doc["status"]["snapshotInfo"][1]
    data_disk.update(isSuccessful="true", snapshotUri=None, blobUri=DATA_URL, directDriveSnapshotIdentifier={
        "creationTime": {"DateTime": f"\\/Date({FINAL_MS - 1000})\\/", "OffsetMinutes": 0},
        "id": "dd-snapshot-7f3a", "token": TOKEN, "instantAccessDurationMinutes": 1440})
    return blob(doc)


def test_a_direct_drive_disk_counts_as_snapshotted_with_its_identifier():
    """The Direct Drive identifier (id, creation time, instant access) is kept on the disk and the point."""
    job = apply_report(dispatched_job(), parse_status_blob(direct_drive_blob()), NOW)
    assert job.status is JobStatus.COMPLETED and job.errors == []
    disk = job.disks[1]
    assert (disk.status, disk.snapshot_uri) == ("Completed", None)
    assert (disk.direct_drive.id, disk.direct_drive.instant_access_minutes) == ("dd-snapshot-7f3a", 1440)
    assert disk.direct_drive.created_at == FINAL_AT - timedelta(seconds=1)
    point = point_from_job(job)
    assert [(d.lun, d.source) for d in point.disks] == [(-1, OS_URL), (0, DATA_URL)]
    assert point.disks[1].snapshot == "dd-snapshot-7f3a" and point.disks[1].direct_drive == disk.direct_drive
    assert point.artifacts == (point.disks[0].snapshot,)      # retention deletes blob snapshots only


def test_the_direct_drive_token_is_never_kept():
    """The token, an access credential, is in no report, job record, point or log line."""
    svc = fake_services(now=NOW)
    svc.jobs.create_if_absent(dispatched_job())
    outcome = ingest_status_blob(svc, f"{dispatched_job().job_id}/1.Status.txt", direct_drive_blob(), None)
    assert outcome.result is IngestResult.APPLIED
    kept = [repr(parse_status_blob(direct_drive_blob())), repr(svc.jobs.get(outcome.job_id)),
            repr(svc.recovery_points.points)]
    assert all(TOKEN not in text for text in kept)


def test_status_show_names_the_direct_drive_snapshot_and_never_its_token(tmp_path, capsys):
    """`vmsnap status show` on such a blob lists the disk's Direct Drive snapshot by id; no token anywhere."""
    from shared.cli import main

    path = tmp_path / "direct-drive.Status.txt"
    path.write_bytes(direct_drive_blob())
    assert main(["status", "show", str(path)]) == 0
    assert main(["status", "show", str(path), "-o", "json"]) == 0
    out = capsys.readouterr().out
    assert "Direct Drive snapshot dd-snapshot-7f3a" in out and TOKEN not in out
