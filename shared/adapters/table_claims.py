"""Backup claims in Table Storage: one row per VM (PartitionKey its shard, RowKey its lower-cased name), in a
table of their own, created insert-if-absent and replaced only under the ETag that was read."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime
from typing import Any, Callable

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, TableServiceClient, UpdateMode

from shared.adapters.azure_errors import EtagRetry
from shared.adapters.table_protection import _open_table, _storage_errors
from shared.clock import utc
from shared.domain.claims import BackupClaim
from shared.domain.shards import shard_of


class TableBackupClaims:
    def __init__(self, table_service: TableServiceClient, table_name: str, *,
                 etag_retry: EtagRetry = EtagRetry(races=(ResourceModifiedError, ResourceExistsError))):
        self._table = _open_table(table_service, table_name)
        self._etag_retry = etag_retry

    def get(self, vm_name: str) -> BackupClaim:
        try:
            with _storage_errors(f"reading the backup claim of VM {vm_name}"):
                return _from(self._table.get_entity(shard_of(vm_name), vm_name.lower()))
        except ResourceNotFoundError:
            return BackupClaim(vm_name=vm_name)

    def update(self, vm_name: str, change: Callable[[BackupClaim], BackupClaim | None]) -> BackupClaim:
        def attempt() -> BackupClaim:
            current = self.get(vm_name)
            changed = change(current)
            if changed is None:
                return current
            with _storage_errors(f"saving the backup claim of VM {vm_name}"):
                if current.version is None:
                    meta = self._table.create_entity(_entity(changed))
                else:
                    meta = self._table.update_entity(_entity(changed), mode=UpdateMode.REPLACE, etag=current.version,
                                                     match_condition=MatchConditions.IfNotModified)
            return replace(changed, version=meta.get("etag"))

        return self._etag_retry.run(attempt, what=f"backup claim of VM {vm_name}")


def _entity(claim: BackupClaim) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": shard_of(claim.vm_name), "RowKey": claim.vm_name.lower(),
                              "VmName": claim.vm_name, "OnDemand": json.dumps(list(claim.on_demand))}
    if claim.holder is not None:
        entity["Holder"] = claim.holder
    if claim.since is not None:
        entity["HolderSince"] = utc(claim.since)
    if claim.day is not None:
        entity["Day"] = claim.day.isoformat()
    return entity


def _from(entity: TableEntity) -> BackupClaim:
    since = entity.get("HolderSince")
    day = entity.get("Day")
    return BackupClaim(vm_name=entity.get("VmName") or entity["RowKey"], holder=entity.get("Holder"),
                       # The SDK's datetime subclass, made a plain datetime so claims compare as one.
                       since=utc(datetime.fromisoformat(since.isoformat())) if since is not None else None,
                       day=date.fromisoformat(day) if day else None,
                       on_demand=tuple(json.loads(entity.get("OnDemand") or "[]")),
                       version=entity.metadata.get("etag"))
