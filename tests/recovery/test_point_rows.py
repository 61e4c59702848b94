"""The recovery point table keeps the words its rows always had (Method BlobSnapshot/RestorePoint,
DeletedBy a rule's name, Trigger Scheduled/OnDemand) while the domain uses one enum per concept; rows
written before read back."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.table_recovery import TableRecoveryPointStore, point_entity
from shared.domain.inventory import BackupMethod
from shared.domain.recovery import DiskSnapshot, RecoveryPoint, Rule
from shared.domain.task import Trigger

T0 = datetime(2026, 3, 1, 22, 30, tzinfo=timezone.utc)
RP = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/restorePointCollections/c/restorePoints/r"


@pytest.fixture
def store(storage_connection_string, unique_name) -> TableRecoveryPointStore:
    return TableRecoveryPointStore(TableServiceClient.from_connection_string(storage_connection_string),
                                   unique_name("points"))


def _point(name: str, method: BackupMethod) -> RecoveryPoint:
    snapshot = f"{RP}/diskRestorePoints/d" if method is BackupMethod.RESTORE_POINT else "http://a/v/os.vhd?snapshot=t"
    return RecoveryPoint(name=name, vm_name="vm1", created_at=T0, job_id=f"job-{name}", method=method,
                         disks=(DiskSnapshot(-1, "http://a/v/os.vhd", snapshot),),
                         restore_point_id=RP if method is BackupMethod.RESTORE_POINT else None)


def test_a_point_row_names_its_method_and_rule_as_rows_always_did():
    """A page-blob point's row says BlobSnapshot, a managed-disk point's RestorePoint, a claim the rule's name."""
    blob = point_entity(_point("1", BackupMethod.EXTENSION_COMMAND).claimed(Rule.DAILY, T0))
    managed = point_entity(replace(_point("2", BackupMethod.RESTORE_POINT), trigger=Trigger.ON_DEMAND))
    words = (blob["Method"], blob["DeletedBy"], blob["Trigger"], managed["Method"], managed["Trigger"])
    assert words == ("BlobSnapshot", "Daily", "Scheduled", "RestorePoint", "OnDemand")
    assert all(type(word) is str for word in words)


@pytest.mark.parametrize("stored, method, trigger", [
    ("BlobSnapshot", BackupMethod.EXTENSION_COMMAND, "OnDemand"),
    ("RestorePoint", BackupMethod.RESTORE_POINT, "Scheduled"),
    (None, BackupMethod.EXTENSION_COMMAND, None)])      # before managed disks and on-demand points
def test_a_row_written_before_the_one_enum_reads_back(store, stored, method, trigger):
    """An old row's method word, rule name and trigger read back as the enums the domain branches on."""
    row = point_entity(_point("3", method))
    row.update(Method=stored, DeletedBy="Weekly", State="Deleting", Trigger=trigger)
    store._ensure_table()
    store._table.upsert_entity({k: v for k, v in row.items() if v is not None})
    back = store.get("vm1", "3")
    assert back is not None and (back.method, back.deleted_by) == (method, Rule.WEEKLY)
    assert type(back.method) is BackupMethod and type(back.deleted_by) is Rule
    assert back.trigger is Trigger(trigger or "Scheduled") and back.is_on_demand is (trigger == "OnDemand")
    assert json.loads(row["Disks"])[0]["snapshot"] == back.disks[0].snapshot
