"""The BackupClaims contract: the in-memory fake the worker's unit tests use and the Table adapter keep
one claim per VM whatever the case of its name, write nothing unless asked, and let exactly one of
many racing writers take a VM (threads at once, each change decided on what it read)."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import date, datetime, timezone

import pytest

from shared.domain.claims import BackupClaim
from shared.ports import BackupClaims

PORTS = (BackupClaims,)

T0 = datetime(2025, 6, 2, 12, 0, 0, 123456, tzinfo=timezone.utc)
RACERS = 8


def _racing(claims, vm: str, change_of):
    """``RACERS`` threads each updating ``vm`` with ``change_of(n)``; every first change waits until all
    have read, so their writes really race. Returns what each update returned."""
    everyone_read = threading.Barrier(RACERS)
    seen = threading.local()

    def run(n: int) -> BackupClaim:
        change = change_of(n)

        def once_read_by_all(current: BackupClaim) -> BackupClaim | None:
            if not getattr(seen, "waited", False):
                seen.waited = True
                everyone_read.wait(timeout=60)     # bounds a store that runs changes one at a time
            return change(current)

        return claims.update(vm, once_read_by_all)

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(run, range(RACERS)))


def _take_if_free(n: int):
    return lambda current: None if current.holder else replace(current, holder=f"job-{n}", since=T0)


def test_an_unclaimed_vm_has_an_empty_claim(backup_claims):
    """A VM no backup has claimed reads as held by nobody, with nothing accepted and no version."""
    claim = backup_claims.get("web-1")
    assert (claim.vm_name, claim.holder, claim.since, claim.on_demand, claim.version) == ("web-1", None, None, (),
                                                                                          None)


def test_an_update_round_trips_every_field(backup_claims):
    """What an update writes (the first one creates the row) is what the next read returns."""
    written = backup_claims.update("web-1", lambda c: replace(c, holder="job-1", since=T0, day=date(2025, 6, 2),
                                                               on_demand=("job-0", "job-1")))
    assert written.version is not None
    assert backup_claims.get("web-1") == written
    again = backup_claims.update("web-1", lambda c: replace(c, holder="job-2", on_demand=()))
    assert backup_claims.get("web-1") == again and again.version != written.version
    assert (again.holder, again.since, again.day, again.on_demand) == ("job-2", T0, date(2025, 6, 2), ())


def test_claims_are_found_whatever_the_case(backup_claims):
    """WEB-1 and web-1 are one VM: one claim, seen under either spelling."""
    backup_claims.update("WEB-1", lambda c: replace(c, holder="job-1", since=T0))
    assert backup_claims.get("web-1").holder == "job-1"
    backup_claims.update("web-1", lambda c: replace(c, on_demand=("job-1",)))
    assert (backup_claims.get("Web-1").holder, backup_claims.get("WEB-1").on_demand) == ("job-1", ("job-1",))


def test_no_change_writes_nothing(backup_claims):
    """A change that returns None creates no row and keeps an existing row's version."""
    assert backup_claims.update("web-1", lambda c: None).version is None
    assert backup_claims.get("web-1").version is None
    written = backup_claims.update("web-1", lambda c: replace(c, holder="job-1"))
    assert backup_claims.update("web-1", lambda c: None) == written == backup_claims.get("web-1")


def test_a_change_that_raises_writes_nothing(backup_claims):
    """What the change raises reaches the caller, and the claim stays as it was."""
    written = backup_claims.update("web-1", lambda c: replace(c, holder="job-1"))

    def refuse(current):
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        backup_claims.update("web-1", refuse)
    assert backup_claims.get("web-1") == written


def test_of_racing_takers_of_a_new_vm_exactly_one_holds_it(backup_claims):
    """Eight writers take a VM nobody claimed yet, at once: one creates the claim, the others find it held."""
    results = _racing(backup_claims, "web-1", _take_if_free)
    winners = [n for n, claim in enumerate(results) if claim.holder == f"job-{n}"]
    assert len(winners) == 1 and backup_claims.get("web-1").holder == f"job-{winners[0]}"
    assert {claim.holder for claim in results} == {f"job-{winners[0]}"}


def test_of_racing_takers_of_a_claimed_vm_exactly_one_holds_it(backup_claims):
    """Eight writers take a VM whose holder has finished, at once: one replaces it, the others see that one."""
    backup_claims.update("web-1", lambda c: replace(c, holder="done", since=T0))

    def take_from_done(n: int):
        return lambda current: None if current.holder != "done" else replace(current, holder=f"job-{n}")

    results = _racing(backup_claims, "web-1", take_from_done)
    winners = [n for n, claim in enumerate(results) if claim.holder == f"job-{n}"]
    assert len(winners) == 1 and backup_claims.get("web-1").holder == f"job-{winners[0]}"


def test_concurrent_updates_lose_nothing(backup_claims):
    """Eight writers each add a job to one claim at once: every job is in the result."""
    results = _racing(backup_claims, "web-1",
                      lambda n: lambda current: replace(current, on_demand=(*current.on_demand, f"job-{n}")))
    assert sorted(backup_claims.get("web-1").on_demand) == sorted(f"job-{n}" for n in range(RACERS))
    assert all(claim.version is not None for claim in results)
