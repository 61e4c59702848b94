"""The JobStore contract: the in-memory fake and the Table store behave the same, so a unit test on
the fake means what it says about production."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from shared.domain.jobs import DiskResult, Job, JobStatus
from shared.errors import NotFoundError, ValidationError
from shared.ports import JobQuery, JobStore

PORTS = (JobStore,)
T0 = datetime(2025, 6, 2, 12, 0, tzinfo=timezone.utc)


def job(vm: str = "vm1", slot: datetime = T0, *, started: datetime | None = None, **changes) -> Job:
    made = Job.new_backup(vm_name=vm, slot=slot, now=started or slot)
    return replace(made, **changes)


def all_pages(store: JobStore, query: JobQuery) -> list[Job]:
    jobs, page = [], store.query(query)
    jobs += page.jobs
    while page.continuation:
        page = store.query(replace(query, continuation=page.continuation))
        jobs += page.jobs
    return jobs


def test_a_job_is_created_once(job_store):
    """Creating a job twice (a re-fired timer) keeps the first and reports the second as not created."""
    first = job(policy_name="DefaultPolicy")
    assert job_store.create_if_absent(first) is True
    assert job_store.create_if_absent(replace(first, policy_name="Other")) is False
    assert job_store.get(first.job_id) == first


def test_a_batch_creates_each_id_once(job_store):
    """A batch that repeats an id and names an existing job creates only the new ones."""
    existing, new = job("vm1"), job("vm2")
    job_store.create_if_absent(existing)
    assert job_store.create_many_if_absent([existing, new, new]) == [False, True, False]
    assert job_store.get(new.job_id) == new


def test_an_unknown_job_is_none_and_cannot_be_updated(job_store):
    """Reading a job that does not exist gives None; changing it is a NotFoundError."""
    assert job_store.get(job().job_id) is None
    with pytest.raises(NotFoundError):
        job_store.update(job().job_id, lambda j: j)


def test_update_writes_the_change_and_no_change_writes_nothing(job_store):
    """An update returns the stored job; a change that returns None leaves the job as it was."""
    stored = job()
    job_store.create_if_absent(stored)
    done = job_store.update(stored.job_id, lambda j: replace(j, attempt=2))
    assert done.attempt == 2 and job_store.get(stored.job_id).attempt == 2
    assert job_store.update(stored.job_id, lambda j: None) == done


def test_update_cannot_change_the_id(job_store):
    """A change that swaps the job id is refused instead of writing the job under another key."""
    stored = job()
    job_store.create_if_absent(stored)
    with pytest.raises(ValidationError):
        job_store.update(stored.job_id, lambda j: replace(j, job_id=job("other").job_id))


def test_concurrent_updates_lose_nothing(job_store):
    """Eight writers changing one job at once: every change is in the result (ETag retry)."""
    stored = job()
    job_store.create_if_absent(stored)

    def add_note(n: int) -> None:
        job_store.update(stored.job_id, lambda j: replace(j, notes=[*j.notes, f"note {n}"]))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add_note, range(8)))
    assert sorted(job_store.get(stored.job_id).notes) == sorted(f"note {n}" for n in range(8))


def test_no_sas_survives_a_write(job_store):
    """URLs are kept without their query: a SAS handed in with a disk or blob is not stored."""
    secret = "?sv=2024&sp=c&sig=SECRET"
    stored = job(status_blob="j/1.Status.txt" + secret,
                 disks=[DiskResult(lun=0, blob_url="http://acct/disks/d.vhd" + secret, status="Pending",
                                   snapshot_uri="http://acct/disks/d.vhd?snapshot=2025-06-02T12:00:00Z&sig=S")])
    job_store.create_if_absent(stored)
    kept = job_store.get(stored.job_id)
    assert "sig=" not in repr(kept)
    assert kept.disks[0].snapshot_uri == "http://acct/disks/d.vhd?snapshot=2025-06-02T12:00:00Z"


def test_vm_names_match_whatever_their_case(job_store):
    """`job list --vm WEB-1` finds the jobs of web-1."""
    mine, other = job("web-1"), job("web-2")
    job_store.create_many_if_absent([mine, other])
    assert [j.job_id for j in all_pages(job_store, JobQuery(vm_name="WEB-1"))] == [mine.job_id]


def test_time_filters_apply_to_the_slot(job_store):
    """A job belongs to the time of its slot, not to when its record was written."""
    late = job("vm1", T0, started=T0 + timedelta(hours=3))     # written long after its slot
    job_store.create_if_absent(late)
    window = JobQuery(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=4))
    assert all_pages(job_store, window) == []
    assert [j.job_id for j in all_pages(job_store, JobQuery(since=T0, until=T0 + timedelta(hours=1)))] == [
        late.job_id]
    for vm_window in (replace(window, vm_name="vm1"),):
        assert all_pages(job_store, vm_window) == []


def test_newest_slot_comes_first(job_store):
    """Lists show the newest backup first, across VMs and hours."""
    jobs = [job(f"vm{n % 3}", T0 + timedelta(minutes=37 * n)) for n in range(7)]
    job_store.create_many_if_absent(jobs)
    listed = all_pages(job_store, JobQuery())
    assert [j.slot for j in listed] == sorted((j.slot for j in jobs), reverse=True)


def test_pages_cover_every_job_exactly_once(job_store):
    """Paging through a long list with the continuation shows each job once, in order."""
    jobs = [job(f"vm{n}", T0 + timedelta(minutes=n)) for n in range(7)]
    job_store.create_many_if_absent(jobs)
    first = job_store.query(JobQuery(page_size=3))
    assert len(first.jobs) == 3 and first.continuation
    listed = all_pages(job_store, JobQuery(page_size=3))
    assert [j.job_id for j in listed] == [j.job_id for j in sorted(jobs, key=lambda j: j.slot, reverse=True)]


def test_status_and_operation_filter(job_store):
    """`job list --status Failed` shows only failed jobs."""
    failed, running = job("vm1", status=JobStatus.FAILED), job("vm2")
    job_store.create_many_if_absent([failed, running])
    assert [j.job_id for j in all_pages(job_store, JobQuery(status=JobStatus.FAILED))] == [failed.job_id]
    assert all_pages(job_store, JobQuery(operation="Restore")) == []


def test_a_foreign_continuation_is_refused(job_store):
    """A continuation token the store did not issue is a clear ValidationError."""
    with pytest.raises(ValidationError):
        job_store.query(JobQuery(continuation="not-a-token"))


def test_get_many_returns_the_jobs_that_exist(job_store):
    """A tick that finds its jobs already there reads them in one go; ids with no job are left out."""
    jobs = [job(f"vm{n}", T0 + timedelta(minutes=n)) for n in range(30)]
    job_store.create_many_if_absent(jobs[:20])
    found = job_store.get_many([j.job_id for j in jobs])
    assert found == {j.job_id: j for j in jobs[:20]}


def test_pages_of_many_vms_across_shards_and_hours_are_newest_first_and_complete(job_store):
    """Paging across VMs in every shard and several hours shows each job once, newest first."""
    from shared.domain.shards import shard_of

    jobs = [job(f"vm{n:03d}", T0 + timedelta(minutes=23 * (n % 9), milliseconds=n)) for n in range(80)]
    assert len({shard_of(j.vm_name) for j in jobs}) == 16
    job_store.create_many_if_absent(jobs)
    listed = all_pages(job_store, JobQuery(page_size=7, since=T0 + timedelta(minutes=20)))
    expected = sorted((j for j in jobs if j.slot >= T0 + timedelta(minutes=20)), key=lambda j: j.slot, reverse=True)
    assert [j.job_id for j in listed] == [j.job_id for j in expected]
    one_shard = all_pages(job_store, JobQuery(shard=shard_of("vm005"), page_size=5))
    assert one_shard and {shard_of(j.vm_name) for j in one_shard} == {shard_of("vm005")}
    assert sorted(j.job_id for j in one_shard) == sorted(j.job_id for j in jobs if shard_of(j.vm_name) == shard_of("vm005"))
    mine = all_pages(job_store, JobQuery(vm_name="VM005", page_size=1))
    assert [j.job_id for j in mine] == [j.job_id for j in jobs if j.vm_name == "vm005"]


def test_a_page_of_a_shard_s_vms_reads_their_jobs_and_no_others(job_store):
    """Retention reads a shard a page of VMs at a time: the jobs of the VMs after one name and up to
    another (names compared case-insensitively), each job in exactly one page."""
    from shared.domain.shards import shard_of

    shard = shard_of("vm005")
    names = sorted(n for n in (f"VM{n:03d}" for n in range(200)) if shard_of(n) == shard)[:9]
    jobs = [job(name, T0 + timedelta(hours=h)) for name in names for h in range(3)]
    job_store.create_many_if_absent(jobs)
    bounds = [None, names[2].lower(), names[5], None]          # the last page has no upper bound
    pages = [all_pages(job_store, JobQuery(shard=shard, vms_after=after, vms_through=through, page_size=4))
             for after, through in zip(bounds[:-1], [names[2], names[5].lower(), None])]
    assert [sorted({j.vm_name for j in page}) for page in pages] == [names[:3], names[3:6], names[6:]]
    assert sorted(j.job_id for page in pages for j in page) == sorted(j.job_id for j in jobs)
