"""TableJobStore on a real Azurite: batched creation, point reads, ETag-guarded updates, and the
queries users need (one VM newest first, a time range, a status) with paging."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.table_jobs import TableJobStore, job_to_entity
from shared.domain.job_transitions import mark_failed
from shared.domain.inventory import BackupMethod
from shared.domain.jobs import DiskResult, Job, JobError, JobStatus
from shared.domain.task import Trigger
from shared.ports import JobQuery

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(storage_connection_string, unique_name):
    service = TableServiceClient.from_connection_string(storage_connection_string)
    return TableJobStore(service, unique_name("jobs"))


def tick(hour: int, vms: range, trigger: str = "Scheduled") -> list[Job]:
    slot = T0 + timedelta(hours=hour)
    return [Job.new_backup(vm_name=f"vm{i}", slot=slot, now=slot + timedelta(seconds=2), trigger=trigger,
                           policy_name="DefaultPolicy") for i in vms]


def test_create_many_inserts_once_and_reports_which_were_new(store):
    """A tick of 250 jobs is stored; re-firing the tick creates nothing twice and says so."""
    jobs = tick(0, range(250))
    assert store.create_many_if_absent(jobs) == [True] * 250
    again = store.create_many_if_absent(jobs[:120] + tick(0, range(250, 260)) + [jobs[0]])
    assert again == [False] * 120 + [True] * 10 + [False]
    assert store.get(jobs[199].job_id) == jobs[199]
    assert store.create_if_absent(jobs[3]) is False


def test_job_round_trips_every_field(store):
    """Every field of a finished job (disks, errors, notes, codes) reads back as written, without SAS."""
    job = tick(0, range(1))[0]
    job.disks = [DiskResult(-1, "https://a/v/os.vhd?sv=1&sig=SECRET", "Completed",
                            "https://a/v/os.vhd?snapshot=2025-03-01T02:03:40Z&sig=SECRET", None),
                 DiskResult(0, "https://a/v/d.vhd", "Failed", None, "BlobNotFound")]
    job.backup_size_bytes = 5 * 1024 ** 3
    job.extension_code, job.health_code, job.attempt, job.task_id = 76, 761, 2, f"{job.job_id}_2"
    job.notes = ["n1"]
    job = mark_failed(job, JobError("ExtensionSnapshotFailedNoNetwork", "s", "t", ["r1", "r2"], True, 76),
                      T0 + timedelta(minutes=3))
    store.create_if_absent(job)
    back = store.get(job.job_id)
    assert back.disks[0].blob_url == "https://a/v/os.vhd"
    assert back.disks[0].snapshot_uri == "https://a/v/os.vhd?snapshot=2025-03-01T02:03:40Z"
    back.disks[0] = job.disks[0]
    assert back == job
    assert "SECRET" not in str(job_to_entity(job))


def test_a_direct_drive_snapshot_round_trips_through_job_and_point_records(store, storage_connection_string,
                                                                         unique_name):
    """A Direct Drive disk's snapshot identifier survives the job record and the recovery point record
    (id, creation time, instant access), and the token it came with is in neither."""
    from shared.adapters.table_recovery import TableRecoveryPointStore, point_entity
    from shared.domain.job_transitions import apply_report
    from shared.domain.recovery import point_from_job
    from shared.domain.status import parse_status_blob
    from tests.jobs.helpers import dispatched_job
    from tests.jobs.test_status_entries import NOW, TOKEN, direct_drive_blob

    job = apply_report(dispatched_job(), parse_status_blob(direct_drive_blob()), NOW)
    store.create_if_absent(job)
    back = store.get(job.job_id)
    assert back.disks == job.disks and back.disks[1].direct_drive.id == "dd-snapshot-7f3a"
    points = TableRecoveryPointStore(TableServiceClient.from_connection_string(storage_connection_string),
                                     unique_name("points"))
    point = point_from_job(back)
    assert points.add_if_absent(point)
    stored = points.get(point.vm_name, point.name)
    assert stored.disks == point.disks and stored.disks[1].direct_drive == job.disks[1].direct_drive
    assert TOKEN not in str(job_to_entity(job)) + str(point_entity(point))


def test_huge_error_text_is_capped_to_fit_an_entity(store):
    """A job with many disks and long errors is still stored (text is shortened, not rejected)."""
    job = tick(0, range(1))[0]
    job.disks = [DiskResult(i, f"https://a/v/disk{i}.vhd", "Failed", None, "x" * 512) for i in range(64)]
    job.notes = ["n" * 300] * 20
    assert store.create_if_absent(job)
    back = store.get(job.job_id)
    assert len(back.disks) == 64 and all(d.error for d in back.disks)


def test_rows_keep_their_strings_and_rows_from_before_the_enums_still_read(store, storage_connection_string):
    """A job's trigger and backup method are enums, stored as the strings rows always had; a row written
    before (no Trigger column, the method as text) reads back as the enums."""
    job = tick(0, range(1), trigger=Trigger.ON_DEMAND)[0]
    job.backup_method = BackupMethod.RESTORE_POINT
    entity = job_to_entity(job)
    assert [(type(entity[k]), entity[k]) for k in ("Trigger", "BackupMethod")] == [(str, "OnDemand"),
                                                                                   (str, "RestorePoint")]
    old = {k: v for k, v in entity.items() if k != "Trigger"}
    old["BackupMethod"] = "ExtensionCommand"
    service = TableServiceClient.from_connection_string(storage_connection_string)
    service.create_table_if_not_exists(store._name).upsert_entity(old)
    back = store.get(job.job_id)
    assert (back.trigger, back.backup_method) == (Trigger.SCHEDULED, BackupMethod.EXTENSION_COMMAND)
    assert type(back.trigger) is Trigger and type(back.backup_method) is BackupMethod


def test_update_retries_a_lost_race_instead_of_overwriting(store, storage_connection_string):
    """Two writers updating the same job both land: the loser re-reads and re-applies (ETag)."""
    job = tick(0, range(1))[0]
    store.create_if_absent(job)
    other = TableJobStore(TableServiceClient.from_connection_string(storage_connection_string), store._name)
    calls = []

    def add_note(text):
        def change(j):
            calls.append(text)
            if text == "first" and len(calls) == 1:     # someone else writes while we think
                other.update(job.job_id, add_note("second"))
            j.notes = j.notes + [text]
            return j
        return change

    result = store.update(job.job_id, add_note("first"))
    assert result.notes == ["second", "first"]
    assert store.get(job.job_id).notes == ["second", "first"]


def test_concurrent_updates_from_threads_all_apply(store):
    """Ten threads each adding a note to one job: all ten notes are kept."""
    job = tick(0, range(1))[0]
    store.create_if_absent(job)
    threads = [threading.Thread(target=store.update, args=(job.job_id, lambda j, n=n: _note(j, f"n{n}")))
               for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(store.get(job.job_id).notes) == sorted(f"n{n}" for n in range(10))


def _note(job, text):
    job.notes = job.notes + [text]
    return job


def test_update_of_a_missing_job_says_not_found(store):
    """Updating a job that does not exist raises NotFoundError, not a storage error."""
    from shared.errors import NotFoundError
    with pytest.raises(NotFoundError):
        store.update(tick(0, range(1))[0].job_id, lambda j: j)
    assert store.get("nonsense") is None


def test_queries_by_vm_time_and_status_newest_first_with_paging(store):
    """Jobs of one VM come newest first; a time range and a status filter return exactly their jobs."""
    for hour in range(5):
        store.create_many_if_absent(tick(hour, range(30)))
    on_demand = Job.new_backup(vm_name="vm7", slot=T0 + timedelta(hours=2, minutes=30), now=T0, trigger="OnDemand")
    store.create_if_absent(on_demand)
    store.update(tick(3, range(30))[5].job_id, lambda j: mark_failed(j, JobError("X", "y"), T0))

    vm7 = store.query(JobQuery(vm_name="VM7"))
    assert [j.slot for j in vm7.jobs] == sorted([T0 + timedelta(hours=h) for h in range(5)]
                                                + [on_demand.slot], reverse=True)
    ranged = store.query(JobQuery(vm_name="vm7", since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3)))
    assert [j.slot for j in ranged.jobs] == [T0 + timedelta(hours=2, minutes=30), T0 + timedelta(hours=2),
                                             T0 + timedelta(hours=1)]

    window = store.query(JobQuery(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3), page_size=1000))
    assert len(window.jobs) == 61 and window.continuation is None
    assert [j.slot for j in window.jobs] == sorted((j.slot for j in window.jobs), reverse=True)

    failed = store.query(JobQuery(status=JobStatus.FAILED))
    assert [(j.vm_name, j.slot) for j in failed.jobs] == [("vm5", T0 + timedelta(hours=3))]

    pages, token = [], None
    while True:
        page = store.query(JobQuery(page_size=40, continuation=token))
        pages.append(page.jobs)
        token = page.continuation
        if not token:
            break
    everything = [j.job_id for p in pages for j in p]
    assert len(everything) == len(set(everything)) == 151
    assert max(len(p) for p in pages) == 40

    vm_pages = store.query(JobQuery(vm_name="vm7", page_size=4))
    rest = store.query(JobQuery(vm_name="vm7", page_size=4, continuation=vm_pages.continuation))
    assert [j.job_id for j in vm_pages.jobs + rest.jobs] == [j.job_id for j in vm7.jobs]


def test_job_ids_without_a_slot_still_work(store):
    """A job whose id was not made by job_id_for can still be created, read and updated."""
    job = Job(job_id="legacy-42", vm_name="old", slot=T0, start_time=T0)
    assert store.create_if_absent(job) and not store.create_if_absent(job)
    assert store.update("legacy-42", lambda j: _note(j, "x")).notes == ["x"]
    assert store.query(JobQuery(vm_name="old")).jobs[0].job_id == "legacy-42"
