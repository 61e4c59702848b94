"""The contract suites can fail: a fake that drifts from its adapter the way the old fakes did is
reported by name, so a unit test can no longer pass on a fake where production differs."""
from __future__ import annotations

import inspect
import itertools
from dataclasses import replace
from types import ModuleType
from typing import Callable

import pytest

from shared.domain.jobs import Job
from shared.ports import JobPage, JobQuery
from shared.domain.claims import BackupClaim
from shared.domain.restore import OWNER_KEY
from tests.contracts import (test_backup_claims, test_disk_copier, test_item_and_policy_stores, test_job_store,
                             test_notifier, test_points_and_snapshots, test_progress_stores, test_restore_points,
                             test_status_archive)
from tests.fakes import FakeDiskCopier, FakeRestorePoints, InMemoryBackupClaims, InMemoryJobStore
from tests.monitoring.fakes import RecordingNotifier
from tests.recovery.fakes import FakeStatusArchive, InMemoryRecoveryPointStore
from tests.scheduling.fakes import InMemoryProtectedItemStore, InMemoryShardProgressStore


class CaseSensitiveJobStore(InMemoryJobStore):
    """Drift: compares VM names as typed, where the Table store ignores case."""

    def query(self, query: JobQuery) -> JobPage:
        page = super().query(query)
        page.jobs = [j for j in page.jobs if query.vm_name is None or j.vm_name == query.vm_name]
        return page


class StartTimeJobStore(InMemoryJobStore):
    """Drift: filters on when the record was written, where the Table store uses the slot."""

    def query(self, query: JobQuery) -> JobPage:
        def by_start(job: Job) -> bool:
            return ((query.since is None or job.start_time >= query.since)
                    and (query.until is None or job.start_time < query.until))
        everything = super().query(replace(query, since=None, until=None, page_size=self.MAX_PAGE))
        return JobPage(jobs=[j for j in everything.jobs if by_start(j)][:query.page_size])


class CaseSensitiveItemStore(InMemoryProtectedItemStore):
    """Drift: looks items up by the name as typed."""

    def get(self, vm_name: str):
        item = super().get(vm_name)
        return item if item is not None and item.vm_name == vm_name else None


class LastWriterWinsClaims(InMemoryBackupClaims):
    """Drift: writes what it changed without checking that the claim is still the one it read."""

    def update(self, vm_name, change):
        changed = change(self.get(vm_name))
        if changed is None:
            return self.get(vm_name)
        self.rows[vm_name.lower()] = replace(changed, version=str(next(self._versions)))
        return self.rows[vm_name.lower()]


class CaseSensitiveClaims(InMemoryBackupClaims):
    """Drift: keeps a claim per spelling of the VM's name."""

    def get(self, vm_name: str) -> BackupClaim:
        return self.rows.get(vm_name) or BackupClaim(vm_name=vm_name)

    def update(self, vm_name, change):
        stored = replace(change(self.get(vm_name)), version=str(next(self._versions)))
        self.rows[vm_name] = stored
        return stored


class ResumeFromStartItemStore(InMemoryProtectedItemStore):
    """Drift: ignores ``after``, so a resumed listing starts over from the first item."""

    def pages(self, page_size: int = 100, shard: str | None = None, after: str | None = None):
        return super().pages(page_size, shard)


class WrittenRowsOnlyProgress(InMemoryShardProgressStore):
    """Drift: ``all`` lists the rows written so far, not every shard."""

    def all(self):
        return [self.rows[key] for key in sorted(self.rows)]


class UncheckedProgress(InMemoryShardProgressStore):
    """Drift: writes the change decided on the caller's read without checking it is still current."""

    def update(self, key, change, *, current=None):
        with self._lock:
            changed = change(current if current is not None else self.get(key))
            self.rows[key] = changed
            return changed


class LastWriterWinsPoints(InMemoryRecoveryPointStore):
    """Drift: saves a point whatever its version, and leaves the version as it was."""

    def save_many(self, points):
        with self._lock:
            for point in points:
                self.points[(point.vm_name.lower(), point.name)] = point
        return list(points), []


class EverythingTransientNotifier(RecordingNotifier):
    """Drift: takes a receiver's refusal (a 4xx) for a passing outage, so a wrong URL is retried forever."""

    def send(self, document: dict) -> None:
        from shared.errors import PermanentError, TransientError

        try:
            super().send(document)
        except PermanentError as exc:
            raise TransientError(str(exc)) from None


class UrlInErrorsNotifier(RecordingNotifier):
    """Drift: names the whole webhook URL, its secret query too, when the receiver is unreachable."""

    def __init__(self, url: str = "http://127.0.0.1:9/alerts") -> None:
        super().__init__(url=url)
        self.endpoint = url


class StartOverArchive(FakeStatusArchive):
    """Drift: ignores the marker, so a retention run cut short lists the container from the start again."""

    def list_pages(self, marker=None):
        return super().list_pages(None)


class LastNameTooArchive(FakeStatusArchive):
    """Drift: resumes at the marker's blob, not after it, so the last blob of a page is listed twice."""

    def list_pages(self, marker=None):
        return super().list_pages(None if marker is None else marker[:-1])


class OverwritingCopier(FakeDiskCopier):
    """Drift: copies over an existing blob whether or not it was asked to replace it."""

    def start_copy(self, snapshot_url, container, blob_name, *, owner, replace=False):
        super().start_copy(snapshot_url, container, blob_name, owner=owner, replace=True)


class AnyoneDeletesCopier(FakeDiskCopier):
    """Drift: deletes a restored blob for whoever asks, not only for the job whose metadata it carries."""

    def delete_owned(self, container, blob_name, owner):
        found = self.blobs.get((container, blob_name))
        return super().delete_owned(container, blob_name, found[1].get(OWNER_KEY, owner) if found else owner)


class SecondPointRestorePoints(FakeRestorePoints):
    """Drift: a create of a name that exists makes another restore point instead of returning that one."""

    def begin_create(self, vm_resource_id, name, *, consistency, exclude_disk_ids=()):
        taken = self.get(vm_resource_id, name) is not None
        return super().begin_create(vm_resource_id, f"{name}-{next(self._seq)}" if taken else name,
                                    consistency=consistency, exclude_disk_ids=exclude_disk_ids)


_PARAM = type(pytest.param(None))       # what pytest.param(...) makes: its ``values`` are one case's arguments


def _cases(check: Callable[..., object], fixture: str,
           others: frozenset[str] = frozenset()) -> list[dict[str, object]]:
    """The arguments of each case of a contract test that needs ``fixture`` and at most ``others`` (one case per
    combination of its ``parametrize`` marks); none when it needs another fixture."""
    wanted = list(inspect.signature(check).parameters)
    if not wanted or wanted[0] != fixture:
        return []
    cases: list[dict[str, object]] = [{}]
    for mark in getattr(check, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        names = [n.strip() for n in mark.args[0].split(",")] if isinstance(mark.args[0], str) else list(mark.args[0])
        values = [v.values if isinstance(v, _PARAM) else v if len(names) > 1 else (v,) for v in mark.args[1]]
        cases = [{**case, **dict(zip(names, value))} for case in cases for value in values]
    return cases if set(wanted[1:]) <= set(cases[0]) | others else []


def failing_checks(module: ModuleType, fixture: str, make: Callable[[], object],
                   also: Callable[[object], dict[str, object]] | None = None) -> set[str]:
    """Run every contract test of ``module`` that needs only ``fixture`` (each of its cases) against ``make()``;
    ``also`` gives the other fixtures a test may ask for, from what ``make()`` made."""
    failed = set()
    others = frozenset(also(make())) if also else frozenset()
    for name, check in inspect.getmembers(module, inspect.isfunction):
        if not name.startswith("test_"):
            continue
        wanted = set(inspect.signature(check).parameters)
        for case in _cases(check, fixture, others):
            made = make()
            extra = {k: v for k, v in (also(made) if also else {}).items() if k in wanted}
            try:
                check(made, **case, **extra)
            # Any way a check fails counts (pytest.raises that saw nothing raises pytest's Failed, no Exception).
            except (Exception, pytest.fail.Exception):  # noqa: BLE001
                failed.add(name)
    return failed


@pytest.mark.parametrize(("broken", "caught_by"), [
    (CaseSensitiveJobStore, {"test_vm_names_match_whatever_their_case"}),
    (StartTimeJobStore, {"test_time_filters_apply_to_the_slot"}),
])
def test_a_drifted_job_store_fake_fails_the_contract(broken, caught_by):
    """A job-store fake with the old drift fails the contract test that names that drift."""
    assert caught_by <= failing_checks(test_job_store, "job_store", broken)


def test_the_honest_job_store_fake_passes_every_check():
    """The fake unit tests use passes the whole job-store contract."""
    assert failing_checks(test_job_store, "job_store", InMemoryJobStore) == set()


def test_a_case_sensitive_item_store_fake_fails_the_contract():
    """A protected-item fake that compares VM names as typed is reported."""
    assert "test_items_are_found_whatever_the_case" in failing_checks(
        test_item_and_policy_stores, "item_store", CaseSensitiveItemStore)


@pytest.mark.parametrize(("broken", "caught_by"), [
    (LastWriterWinsClaims, {"test_of_racing_takers_of_a_new_vm_exactly_one_holds_it",
                            "test_of_racing_takers_of_a_claimed_vm_exactly_one_holds_it",
                            "test_concurrent_updates_lose_nothing"}),
    (CaseSensitiveClaims, {"test_claims_are_found_whatever_the_case"}),
])
def test_a_drifted_backup_claims_fake_fails_the_contract(broken, caught_by):
    """A claims fake that lets racing writers all win, or keeps a claim per spelling, is reported."""
    assert caught_by <= failing_checks(test_backup_claims, "backup_claims", broken)


def test_the_honest_backup_claims_fake_passes_every_check():
    """The fake the worker's unit tests use passes the whole claims contract."""
    assert failing_checks(test_backup_claims, "backup_claims", InMemoryBackupClaims) == set()


def test_a_resume_ignoring_item_store_fake_fails_the_contract():
    """An item-store fake whose ``pages(after=)`` starts over is reported."""
    assert "test_pages_after_a_name_resume_the_listing_past_it" in failing_checks(
        test_item_and_policy_stores, "item_store", ResumeFromStartItemStore)


@pytest.mark.parametrize(("broken", "caught_by"), [
    (WrittenRowsOnlyProgress, {"test_all_lists_every_key_in_order_with_what_was_written"}),
    (UncheckedProgress, {"test_each_write_has_a_new_version_and_reads_back",
                         "test_a_change_decided_on_a_stale_read_is_decided_again_on_the_stored_row"}),
])
def test_a_drifted_progress_fake_fails_the_contract(broken, caught_by):
    """A progress fake listing only written shards, or writing on a stale read, is reported."""
    assert caught_by <= failing_checks(test_progress_stores, "progress",
                                       lambda: (test_progress_stores.SHARD, broken()))


def test_the_honest_progress_fakes_pass_every_check():
    for kind, fake, _ in test_progress_stores._BUILD.values():
        assert failing_checks(test_progress_stores, "progress", lambda: (kind, fake())) == set()


def test_a_recovery_point_fake_without_etags_fails_the_contract():
    """A point-store fake that saves whatever version it is given is reported by both ETag checks."""
    assert {"test_a_write_from_a_stale_read_is_not_saved", "test_each_saved_write_gives_the_point_a_new_version",
            "test_of_writers_racing_from_one_read_exactly_one_saves"} <= failing_checks(
        test_points_and_snapshots, "point_store", LastWriterWinsPoints)


def test_the_honest_recovery_point_fake_passes_every_check():
    assert failing_checks(test_points_and_snapshots, "point_store", InMemoryRecoveryPointStore) == set()


def _notifier_rig(fake: RecordingNotifier) -> test_notifier.Rig:
    def unreachable():
        fake.down = True
        return fake

    return test_notifier.Rig(fake, lambda: fake.sent, lambda status: setattr(fake, "answer", status), unreachable)


@pytest.mark.parametrize(("broken", "caught_by"), [
    (EverythingTransientNotifier, {"test_a_refusal_is_permanent"}),
    (UrlInErrorsNotifier, {"test_no_failure_shows_the_secret_of_the_webhook_url"}),
])
def test_a_drifted_notifier_fake_fails_the_contract(broken, caught_by):
    """A notifier fake that retries a refusal forever, or shows the webhook's secret, is reported."""
    make = lambda: _notifier_rig(broken(url=f"http://127.0.0.1:9/alerts?{test_notifier.SECRET}"))  # noqa: E731
    assert caught_by <= failing_checks(test_notifier, "notifier_rig", make)


def test_the_honest_notifier_fake_passes_every_check():
    assert failing_checks(test_notifier, "notifier_rig", test_notifier._fake) == set()


def _archive(fake: FakeStatusArchive):
    from datetime import datetime, timezone

    return fake, lambda name: fake.blobs.__setitem__(name, datetime.now(timezone.utc))


@pytest.mark.parametrize(("broken", "caught_by"), [
    (StartOverArchive, {"test_a_page_s_marker_resumes_the_listing_right_after_that_page"}),
    (LastNameTooArchive, {"test_a_page_s_marker_resumes_the_listing_right_after_that_page"}),
])
def test_a_drifted_status_archive_fake_fails_the_contract(broken, caught_by):
    """An archive fake whose marker starts over, or resumes one blob early, is reported."""
    assert caught_by <= failing_checks(test_status_archive, "archive",
                                       lambda: _archive(broken(page_size=test_status_archive.PAGE)))


def test_the_honest_status_archive_fake_passes_every_check():
    assert failing_checks(test_status_archive, "archive",
                          lambda: _archive(FakeStatusArchive(page_size=test_status_archive.PAGE))) == set()


class _NamedUnique:
    """``unique_name`` outside pytest's fixtures: names of this process's own."""

    def __init__(self) -> None:
        self._count = itertools.count(1)

    def __call__(self, stem: str) -> str:
        return f"{stem}{next(self._count)}"


@pytest.mark.parametrize(("broken", "caught_by"), [
    (OverwritingCopier, {"test_an_existing_blob_is_replaced_only_when_asked",
                         "test_of_racing_first_copies_into_one_blob_exactly_one_starts"}),
    (AnyoneDeletesCopier, {"test_only_the_job_that_made_a_blob_deletes_it"}),
])
def test_a_drifted_disk_copier_fake_fails_the_contract(broken, caught_by, monkeypatch):
    """A copier fake that overwrites a restored blob unasked, or deletes another job's blob, is reported."""
    monkeypatch.setattr(test_disk_copier, "FakeDiskCopier", broken)
    assert caught_by <= failing_checks(test_disk_copier, "copier_rig", lambda: test_disk_copier._fake(_NamedUnique()))


def test_the_honest_disk_copier_fake_passes_every_check():
    assert failing_checks(test_disk_copier, "copier_rig", lambda: test_disk_copier._fake(_NamedUnique())) == set()


def _restore_point_fixtures(restore_points) -> dict[str, object]:
    rig = _RIGS[id(restore_points)]
    return {"vm": rig.add_vm("contract-vm"), "rig": rig, "unique_name": _NamedUnique()}


_RIGS: dict[int, object] = {}


def _restore_points_of(make_rig):
    """The port of a fresh rig (the contract's first fixture), its rig kept for the other fixtures."""
    rig = make_rig()
    _RIGS[id(rig.restore_points)] = rig
    return rig.restore_points


def test_a_restore_point_fake_that_makes_a_second_of_a_name_fails_the_contract(monkeypatch):
    """A redelivered task must find its restore point, not make another: a fake that makes one is reported."""
    monkeypatch.setattr(test_restore_points, "FakeRestorePoints", SecondPointRestorePoints)
    assert {"test_a_restore_point_is_made_once_and_finishes_with_a_disk_restore_point_per_disk",
            "test_of_racing_creates_of_one_name_every_racer_gets_the_one_restore_point"} <= failing_checks(
        test_restore_points, "restore_points", lambda: _restore_points_of(test_restore_points._fake),
        also=_restore_point_fixtures)


def test_the_honest_restore_point_fake_passes_every_check():
    assert failing_checks(test_restore_points, "restore_points", lambda: _restore_points_of(test_restore_points._fake),
                          also=_restore_point_fixtures) == set()
