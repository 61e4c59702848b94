"""The PolicyStore and ProtectedItemStore contracts: the in-memory fakes the scheduler's property
tests use and the Table stores behave the same."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, time, timezone

import pytest

from shared.domain.policy import DEFAULT_POLICY_NAME, Policy, Retention, StandardSchedule
from shared.domain.protection import ProtectedItem, ProtectionState, SkippedSlot
from shared.errors import ConflictError, NotFoundError
from shared.ports import PolicyStore, ProtectedItemStore

PORTS = (PolicyStore, ProtectedItemStore)

T0 = datetime(2025, 6, 2, 12, 0, tzinfo=timezone.utc)


def item(vm: str = "vm1", **changes) -> ProtectedItem:
    return replace(ProtectedItem(vm_name=vm, policy_name=DEFAULT_POLICY_NAME, protected_since=T0,
                                 policy_assigned_at=T0), **changes)


def policy(name: str = "Nightly") -> Policy:
    return Policy(name=name, schedule=StandardSchedule(time=time(1, 0)), retention=Retention(daily_days=14))


# --- policies ---------------------------------------------------------------------------------------
def test_default_policy_always_exists(policy_store):
    """A fresh store already has DefaultPolicy, found whatever the case of its name."""
    assert policy_store.get("defaultpolicy").name == DEFAULT_POLICY_NAME
    assert [p.name for p in policy_store.list()] == [DEFAULT_POLICY_NAME]


def test_a_policy_name_is_taken_once(policy_store):
    """Creating a policy under a name already used (in any case) is a ConflictError."""
    policy_store.create(policy("Nightly"))
    with pytest.raises(ConflictError):
        policy_store.create(policy("NIGHTLY"))
    assert policy_store.get("nightly").retention.daily_days == 14


def test_an_unknown_policy_is_not_found(policy_store):
    """Reading or replacing a policy that does not exist names it in a NotFoundError."""
    with pytest.raises(NotFoundError, match="Weekly"):
        policy_store.get("Weekly")
    with pytest.raises(NotFoundError):
        policy_store.replace(policy("Weekly"))


def test_policies_are_listed_by_name(policy_store):
    """`policy list` is ordered by name, ignoring case."""
    for name in ("zeta", "Alpha", "mid"):
        policy_store.create(policy(name))
    assert [p.name for p in policy_store.list()] == ["Alpha", DEFAULT_POLICY_NAME, "mid", "zeta"]


# --- protected items -----------------------------------------------------------------------------
def test_items_are_found_whatever_the_case(item_store):
    """`protection show --vm WEB-1` finds web-1; an unknown VM is None."""
    item_store.add(item("web-1"))
    assert item_store.get("WEB-1").vm_name == "web-1"
    assert item_store.get("web-2") is None


def test_a_vm_is_protected_once(item_store):
    """Protecting a VM again (in any case) is a ConflictError."""
    item_store.add(item("web-1"))
    with pytest.raises(ConflictError):
        item_store.add(item("Web-1"))


def test_update_of_an_unknown_item_is_not_found(item_store):
    """Changing the item of a VM that is not protected is a NotFoundError."""
    with pytest.raises(NotFoundError):
        item_store.update("vm9", lambda i: i)


def test_update_round_trips_every_field(item_store):
    """What an update writes is what the next read returns, skipped slots and all."""
    item_store.add(item())
    changed = item_store.update("vm1", lambda i: replace(
        i, state=ProtectionState.STOPPED, last_slot=T0, in_progress_job_id="j-1", in_progress_since=T0,
        initial_backup_pending=False, skipped=[SkippedSlot(T0, "superseded by a later slot")]))
    assert item_store.get("vm1") == changed and changed.version


def test_no_change_keeps_the_version(item_store):
    """A change that returns None writes nothing: the version stays."""
    added = item_store.add(item())
    assert item_store.update("vm1", lambda i: None).version == added.version == item_store.get("vm1").version


def test_concurrent_updates_lose_nothing(item_store):
    """Eight writers changing one item at once: every change is in the result."""
    item_store.add(item())

    def skip(n: int) -> None:
        item_store.update("vm1", lambda i: replace(i, skipped=[*i.skipped, SkippedSlot(T0, f"reason {n}")]))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(skip, range(8)))
    assert sorted(s.reason for s in item_store.get("vm1").skipped) == sorted(f"reason {n}" for n in range(8))


def test_save_many_skips_items_changed_meanwhile(item_store):
    """A batch write keeps what it read unless someone changed it in between: those are named, not written."""
    for name in ("vm1", "vm2", "vm3"):
        item_store.add(item(name))
    seen = [item_store.get(name) for name in ("vm1", "vm2", "vm3")]
    item_store.update("vm2", lambda i: replace(i, last_job_id="someone else"))
    saved, conflicts, transactions = item_store.save_many([replace(i, last_slot=T0) for i in seen])
    assert sorted(i.vm_name for i in saved) == ["vm1", "vm3"] and conflicts == ["vm2"] and transactions >= 1
    assert item_store.get("vm2").last_job_id == "someone else" and item_store.get("vm2").last_slot is None
    assert item_store.get("vm1").last_slot == T0


def test_pages_cover_every_item_once(item_store):
    """Reading items a page at a time sees each item exactly once, no page larger than asked."""
    names = [f"vm{n}" for n in range(7)]
    for name in names:
        item_store.add(item(name))
    pages = list(item_store.pages(page_size=3))
    assert all(len(page) <= 3 for page in pages)
    assert sorted(i.vm_name for page in pages for i in page) == names


def test_items_are_counted_by_policy(item_store):
    """`policy list` counts a policy's protected VMs: stopped ones and other policies' are left out."""
    item_store.add(item("a", policy_name="Nightly"))
    item_store.add(item("b", policy_name="Nightly"))
    item_store.add(item("c", policy_name="Nightly", state=ProtectionState.STOPPED))
    item_store.add(item("d"))
    assert item_store.count_by_policy("Nightly") == 2
    assert item_store.count_by_policy("Weekly") == 0


def test_pages_after_a_name_resume_the_listing_past_it(item_store):
    """A listing resumed ``after`` a name (as a run that failed mid-way resumes) sees only the names past
    it, whatever the case it was given in, and each of them once."""
    names = [f"vm{n}" for n in range(7)]
    for name in names:
        item_store.add(item(name))
    resumed = [i.vm_name for page in item_store.pages(page_size=2, after="VM3") for i in page]
    assert sorted(resumed) == ["vm4", "vm5", "vm6"]
    assert [i.vm_name for page in item_store.pages(after="vm6") for i in page] == []
