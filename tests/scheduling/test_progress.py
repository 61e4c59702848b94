"""The scheduler's per-shard progress: which items a run settled, and how runs that overlap merge."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shared.domain.policy import default_policy
from shared.domain.progress import SEEN_MARGIN, PlanRequest, ShardProgress
from shared.domain.protection import ProtectedItem
from shared.errors import ValidationError

T = datetime(2025, 6, 2, 22, 0, tzinfo=timezone.utc)
POLICY = default_policy()


def item(name: str, assigned: datetime) -> ProtectedItem:
    return ProtectedItem(vm_name=name, policy_name=POLICY.name, protected_since=assigned, policy_assigned_at=assigned)


def test_a_finished_run_settles_the_items_it_saw_and_not_those_added_after_it_started():
    """Items assigned before the run began are settled to its horizon; a newer one keeps its own watermark."""
    done = ShardProgress("a").finished(T, T + timedelta(minutes=5), items=2)
    assert done.settled_for(item("old", T - timedelta(days=1)), POLICY) == T + timedelta(minutes=5)
    assert done.settled_for(item("new", T + timedelta(seconds=30)), POLICY) is None
    assert done.settled_for(item("close", T - SEEN_MARGIN + timedelta(seconds=1)), POLICY) is None


def test_a_policy_changed_after_the_run_began_unsettles_its_items():
    """A policy modified after the run started: its items are planned from their own watermark again."""
    done = ShardProgress("a").finished(T, T + timedelta(minutes=5), items=1)
    changed = POLICY.touched(T + timedelta(minutes=1))
    assert done.settled_for(item("vm", T - timedelta(days=1)), changed) is None


def test_a_run_that_died_settled_only_the_items_of_its_finished_pages():
    """Progress of a run that stopped covers the items up to its last finished page, by name."""
    partial = ShardProgress("a").advanced(T, T + timedelta(minutes=5), "vm0500")
    old = T - timedelta(days=1)
    assert partial.settled_for(item("vm0499", old), POLICY) == T + timedelta(minutes=5)
    assert partial.settled_for(item("VM0500", old), POLICY) == T + timedelta(minutes=5)
    assert partial.settled_for(item("vm0501", old), POLICY) is None


@pytest.mark.parametrize("order", ["older first", "newer first"])
def test_overlapping_runs_never_move_progress_back(order):
    """Whichever of two runs saves last, the later horizon stays and a stale partial run is dropped."""
    older = (T, T + timedelta(minutes=5))
    newer = (T + timedelta(minutes=5), T + timedelta(minutes=10))
    first, second = (older, newer) if order == "older first" else (newer, older)
    progress = ShardProgress("a").advanced(*older, "vm0100").finished(*first, items=3).finished(*second, items=3)
    assert (progress.settled_until, progress.seen_from) == (newer[1], newer[0])
    assert progress.run_horizon is None
    assert progress.advanced(*older, "vm0900") == progress      # an older run's page changes nothing


def test_a_plan_request_round_trips_and_a_bad_one_is_a_validation_error():
    """The planner reads back what the timer sent; anything else is refused with a clear error."""
    request = PlanRequest("f", T, past_due=True)
    assert PlanRequest.from_json(request.to_json()) == request
    assert request.message_id == "plan-f-20250602T220000"
    for body in (b"{}", b'{"shard": "g", "tick": "2025-06-02T22:00:00Z"}', b"\xff", b'{"shard": "a", "tick": 5}'):
        with pytest.raises(ValidationError):
            PlanRequest.from_json(body)
