"""The RestoreTestPlanStore contract on Table Storage (no fake: no unit test replaces the store; drills read
plans from Azurite): a plan is found whatever the case of its name, a name is taken once, a write
from a stale read is refused, a deleted plan is gone, and plans list by name."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from shared.adapters.table_protection import TableRestoreTestPlanStore
from shared.domain.restore_testing import RestoreTestPlan
from shared.errors import ConflictError, NotFoundError
from shared.ports import RestoreTestPlanStore

PORTS = (RestoreTestPlanStore,)
pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 1, 22, 30, tzinfo=timezone.utc)


@pytest.fixture
def plans(table_service, unique_name) -> RestoreTestPlanStore:
    return TableRestoreTestPlanStore(table_service, unique_name("plans"))


def test_a_plan_round_trips_under_any_case_and_its_name_is_taken_once(plans):
    created = plans.create(RestoreTestPlan(name="Nightly", every_hours=12, probe_file="/etc/hostname"))
    assert created.version and plans.get("nightly") == created
    with pytest.raises(ConflictError):
        plans.create(RestoreTestPlan(name="NIGHTLY"))


def test_a_write_from_a_stale_read_is_refused(plans):
    read = plans.create(RestoreTestPlan(name="weekly"))
    newer = plans.replace(replace(read, last_run_at=T0))
    assert newer.version != read.version and plans.get("weekly").last_run_at == T0
    with pytest.raises(ConflictError):
        plans.replace(replace(read, every_hours=48))
    assert plans.get("weekly").every_hours == 24


def test_a_deleted_plan_is_gone_and_plans_list_by_name(plans):
    for name in ("b-plan", "A-plan", "c-plan"):
        plans.create(RestoreTestPlan(name=name))
    plans.delete("B-PLAN")
    assert [p.name for p in plans.list()] == ["A-plan", "c-plan"]
    with pytest.raises(NotFoundError):
        plans.get("b-plan")
    with pytest.raises(NotFoundError):
        plans.delete("b-plan")
