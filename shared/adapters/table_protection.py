# Over 400 lines on purpose: four small table stores sharing the lazy-table and error helpers.
"""Policies, protected items and the local VM inventory in Table Storage.

Keys:
- policies table: PartitionKey ``policy``, RowKey = lower-cased policy name; the policy is one JSON
  column (``Document``) in the shape ``Policy.to_document`` prints. ``DefaultPolicy`` is seeded on
  first read, so it exists from the start without a setup step.
- items table: PartitionKey ``b`` + the VM's shard (shared/domain/shards.py), RowKey = lower-cased
  VM name. A shard's planner reads its one partition in pages, in name order (its progress marks
  are names); the few item writes of a tick go out as ETag-guarded transactions of up to 100.
- vms table (local inventory): PartitionKey ``vm``, RowKey = lower-cased VM name, disks as JSON.
"""
from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from itertools import groupby
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.core.paging import ItemPaged
from azure.data.tables import TableEntity, TableServiceClient, TableTransactionError, UpdateMode

from shared.adapters.metering import in_context
from shared.adapters.azure_errors import TABLE_REFUSED_HINT, EtagRetry, Failure, is_failure, table_missing, translate
from shared.clock import utc
from shared.domain.inventory import BackupMethod, Disk, Vm, VmKind
from shared.domain.policy import DEFAULT_POLICY_NAME, Policy, check_name, default_policy
from shared.domain.restore_testing import RestoreTestPlan, plan_from_document
from shared.domain.shards import check_shard, shard_of
from shared.domain.words import Words
from shared.domain.protection import (DiskListSetting, DiskSelection, ProtectedItem, ProtectionState,
                                      SkippedSlot)
from shared.errors import ConflictError, NotFoundError, ValidationError

log = logging.getLogger(__name__)

BATCH_LIMIT = 100        # Table transactions: at most 100 operations, one partition
# A local VM's disk row names the disk's kind, not the method it calls for (rows before the one enum).
DISK_KIND = Words({BackupMethod.EXTENSION_COMMAND: "PageBlob", BackupMethod.RESTORE_POINT: "ManagedDisk"})

_T = TypeVar("_T")


@contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    """Translate SDK failures (shared/adapters/azure_errors.py); let through the ones callers decide on."""
    try:
        yield
    except (ResourceExistsError, ResourceNotFoundError, ResourceModifiedError, TableTransactionError):
        raise
    except AzureError as exc:
        raise translate(exc, what, service="Table Storage", refused_hint=TABLE_REFUSED_HINT) from exc


def _open_table(table_service: TableServiceClient, table_name: str) -> _LazyTable:
    return _LazyTable(table_service, table_name)


class _LazyTable:
    """A table client that creates its table on the first write that needs it, never on a read.

    A reader role can list and show without 403s, and reading a table nobody wrote yet finds nothing.
    """

    def __init__(self, table_service: TableServiceClient, table_name: str):
        self._service = table_service
        self._name = table_name
        self._client = table_service.get_table_client(table_name)

    # --- reads: a missing table holds nothing ---------------------------------------------------
    def query_entities(self, query_filter: str, **kwargs: Any) -> _EmptyIfNoTable:
        return _EmptyIfNoTable(self._client.query_entities(query_filter, **kwargs))

    def list_entities(self, **kwargs: Any) -> _EmptyIfNoTable:
        return _EmptyIfNoTable(self._client.list_entities(**kwargs))

    def get_entity(self, partition_key: str, row_key: str, **kwargs: Any) -> TableEntity:
        return self._client.get_entity(partition_key, row_key, **kwargs)

    # --- writes: the first one to find no table creates it ---------------------------------------
    def create_entity(self, entity: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._write(self._client.create_entity, entity, **kwargs)

    def update_entity(self, entity: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._write(self._client.update_entity, entity, **kwargs)

    def upsert_entity(self, entity: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._write(self._client.upsert_entity, entity, **kwargs)

    def delete_entity(self, partition_key: str, row_key: str, **kwargs: Any) -> None:
        self._write(self._client.delete_entity, partition_key, row_key, **kwargs)

    def submit_transaction(self, operations: Iterable[Any], **kwargs: Any) -> list[Mapping[str, Any]]:
        return self._write(self._client.submit_transaction, operations, **kwargs)

    def _write(self, method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        try:
            return method(*args, **kwargs)
        except (ResourceNotFoundError, TableTransactionError) as exc:
            if not table_missing(exc):
                raise
        with _storage_errors(f"creating table {self._name}"):
            self._service.create_table_if_not_exists(self._name)
        return method(*args, **kwargs)


class _EmptyIfNoTable:
    """A query's results (items or pages) where a table that does not exist yet holds nothing."""

    def __init__(self, paged: ItemPaged[TableEntity]):
        self._paged = paged

    def __iter__(self) -> Iterator[TableEntity]:
        try:
            yield from self._paged
        except ResourceNotFoundError:
            return

    def by_page(self, continuation_token: str | None = None) -> Iterator[Iterator[TableEntity]]:
        try:
            yield from self._paged.by_page(continuation_token=continuation_token)
        except ResourceNotFoundError:
            return


def delete_matching(table: _LazyTable, text: str, params: dict[str, Any], *, limit: int, what: str) -> int:
    """Delete the rows ``text`` matches (their keys read a page at a time, up to about ``limit``), a
    transaction per partition and 100 rows: Table Storage has no call that drops a partition. A transaction
    that fails because another deleter was first is redone row by row. Returns how many rows were matched."""
    with _storage_errors(f"listing {what} to delete"):
        keys: list[tuple[str, str]] = []
        for entity in table.query_entities(text, parameters=params, select=["PartitionKey", "RowKey"],
                                           results_per_page=1000):
            keys.append((entity["PartitionKey"], entity["RowKey"]))
            if len(keys) >= limit:
                break
    for _, group in groupby(sorted(keys), key=lambda key: key[0]):
        rows = [{"PartitionKey": pk, "RowKey": rk} for pk, rk in group]
        for start in range(0, len(rows), BATCH_LIMIT):
            chunk = rows[start:start + BATCH_LIMIT]
            try:
                with _storage_errors(f"deleting {what}"):
                    table.submit_transaction([("delete", row) for row in chunk])
            except (TableTransactionError, ResourceNotFoundError):
                for row in chunk:
                    try:
                        with _storage_errors(f"deleting {what}"):
                            table.delete_entity(row["PartitionKey"], row["RowKey"])
                    except ResourceNotFoundError:
                        pass
    return len(keys)


def save_versioned(table: Any, entity: dict[str, Any], version: str | None, what: str) -> str | None:
    """Create the row (``version`` None: it must not exist yet) or replace it only if it still has
    ``version`` (its ETag); returns the new ETag. A lost race raises ResourceExistsError or
    ResourceModifiedError, which the caller's EtagRetry answers by reading again."""
    with _storage_errors(f"saving {what}"):
        if version is None:
            meta = table.create_entity(entity)
        else:
            meta = table.update_entity(entity, mode=UpdateMode.REPLACE, etag=version,
                                       match_condition=MatchConditions.IfNotModified)
    etag: str | None = meta.get("etag")
    return etag


# --- policies -----------------------------------------------------------------------------------
class TablePolicyStore:
    PARTITION = "policy"

    def __init__(self, table_service: TableServiceClient, table_name: str):
        self._table = _open_table(table_service, table_name)

    def get(self, name: str) -> Policy:
        """The named policy; ``DefaultPolicy`` exists before anyone stores it (stored on its first write)."""
        try:
            with _storage_errors(f"reading policy {name}"):
                entity = self._table.get_entity(self.PARTITION, name.lower())
        except ResourceNotFoundError:
            if name.lower() == DEFAULT_POLICY_NAME.lower():
                return default_policy()
            raise NotFoundError(f"policy {name!r} not found; see `vmsnap policy list`") from None
        return _policy_from(entity)

    def create(self, policy: Policy) -> Policy:
        if policy.name.lower() == DEFAULT_POLICY_NAME.lower():
            self._seed_default()
        try:
            with _storage_errors(f"creating policy {policy.name}"):
                self._table.create_entity(self._entity(policy))
        except ResourceExistsError:
            raise ConflictError(f"policy {policy.name!r} already exists; change it with `vmsnap policy set`") \
                from None
        log.info("policy %s created", policy.name)
        return policy

    def replace(self, policy: Policy) -> Policy:
        if policy.name.lower() == DEFAULT_POLICY_NAME.lower():
            self._seed_default()
        self.get(policy.name)     # NotFoundError for an unknown name
        with _storage_errors(f"updating policy {policy.name}"):
            self._table.update_entity(self._entity(policy), mode=UpdateMode.REPLACE)
        log.info("policy %s updated", policy.name)
        return policy

    def list(self) -> list[Policy]:
        with _storage_errors("listing policies"):
            policies = [_policy_from(e) for e in
                        self._table.query_entities("PartitionKey eq @pk", parameters={"pk": self.PARTITION})]
        if not any(p.name.lower() == DEFAULT_POLICY_NAME.lower() for p in policies):
            policies.append(default_policy())
        return sorted(policies, key=lambda p: p.name.lower())

    def _seed_default(self) -> Policy:
        policy = default_policy()
        try:
            with _storage_errors("seeding DefaultPolicy"):
                self._table.create_entity(self._entity(policy))
        except ResourceExistsError:
            return _policy_from(self._table.get_entity(self.PARTITION, policy.name.lower()))
        return policy

    def _entity(self, policy: Policy) -> dict[str, Any]:
        return {"PartitionKey": self.PARTITION, "RowKey": policy.name.lower(), "Name": policy.name,
                "Document": json.dumps(policy.to_document(), separators=(",", ":"))}


def _policy_from(entity: TableEntity) -> Policy:
    return Policy.from_document(json.loads(entity["Document"]))


# --- protected items ----------------------------------------------------------------------------
def item_partition(vm_name: str) -> str:
    return "b" + shard_of(vm_name)


class TableProtectedItemStore:
    def __init__(self, table_service: TableServiceClient, table_name: str, *, workers: int = 8,
                 etag_retry: EtagRetry = EtagRetry(races=(ResourceModifiedError, ResourceNotFoundError))):
        self._table = _open_table(table_service, table_name)
        self._workers = workers
        self._etag_retry = etag_retry

    def get(self, vm_name: str) -> ProtectedItem | None:
        try:
            with _storage_errors(f"reading protected item {vm_name}"):
                entity = self._table.get_entity(item_partition(vm_name), vm_name.lower())
        except ResourceNotFoundError:
            return None
        return _item_from(entity)

    def add(self, item: ProtectedItem) -> ProtectedItem:
        try:
            with _storage_errors(f"protecting {item.vm_name}"):
                meta = self._table.create_entity(_item_entity(item))
        except ResourceExistsError:
            raise ConflictError(f"VM {item.vm_name!r} is already a protected item") from None
        return replace(item, version=meta.get("etag"))

    def add_many(self, items: Sequence[ProtectedItem]) -> int:
        """Insert many items in transactions of up to 100 per partition (seeding); returns transactions."""
        transactions = 0
        entities = sorted((_item_entity(i) for i in items), key=lambda e: (e["PartitionKey"], e["RowKey"]))
        for _, rows in groupby(entities, key=lambda e: e["PartitionKey"]):
            group = list(rows)
            for start in range(0, len(group), BATCH_LIMIT):
                with _storage_errors("adding protected items"):
                    self._table.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE})
                                                    for e in group[start:start + BATCH_LIMIT]])
                transactions += 1
        return transactions

    def update(self, vm_name: str, change: Callable[[ProtectedItem], ProtectedItem | None]) -> ProtectedItem:
        """Read, apply ``change`` (None = no change), write back guarded by the ETag; retry on races."""

        def attempt() -> ProtectedItem:
            current = self.get(vm_name)
            if current is None:
                raise NotFoundError(f"VM {vm_name!r} is not protected; run `vmsnap protection enable-for-vm`")
            changed = change(replace(current))
            if changed is None:
                return current
            with _storage_errors(f"updating protected item {vm_name}"):
                meta = self._table.update_entity(_item_entity(changed), mode=UpdateMode.REPLACE,
                                                 etag=current.version, match_condition=MatchConditions.IfNotModified)
            return replace(changed, version=meta.get("etag"))

        # A 404 on the write means it was deleted meanwhile: re-read, which then says NotFound.
        return self._etag_retry.run(attempt, what=f"protected item {vm_name!r}")

    def save_many(self, items: Sequence[ProtectedItem]) -> tuple[list[ProtectedItem], list[str], int]:
        """ETag-guarded writes in transactions of up to 100 per partition.

        Returns (saved items with new versions, names of items changed or deleted meanwhile, which
        were not written, transactions used). A transaction fails as a whole on one stale ETag: the
        failing item is set aside and the rest sent again.
        """
        ordered = sorted(items, key=lambda i: (item_partition(i.vm_name), i.vm_name.lower()))
        chunks = [group[start:start + BATCH_LIMIT]
                  for _, grouped in groupby(ordered, key=lambda i: item_partition(i.vm_name))
                  for group in [list(grouped)] for start in range(0, len(group), BATCH_LIMIT)]
        saved: list[ProtectedItem] = []
        conflicts: list[str] = []
        transactions = 0
        # Partitions are independent: their transactions go out side by side.
        with ThreadPoolExecutor(max_workers=max(1, min(self._workers, len(chunks)))) as pool:
            futures = [pool.submit(in_context(self._save_chunk), chunk) for chunk in chunks]
            for chunk_saved, chunk_conflicts, chunk_transactions in (f.result() for f in futures):
                saved += chunk_saved
                conflicts += chunk_conflicts
                transactions += chunk_transactions
        return saved, conflicts, transactions

    def _save_chunk(self, chunk: list[ProtectedItem]) -> tuple[list[ProtectedItem], list[str], int]:
        conflicts: list[str] = []
        transactions = 0
        while chunk:
            operations = [("update", _item_entity(i), {"mode": UpdateMode.REPLACE, "etag": i.version,
                                                       "match_condition": MatchConditions.IfNotModified})
                          for i in chunk]
            transactions += 1
            try:
                with _storage_errors("saving protected items"):
                    results = self._table.submit_transaction(operations)
            except TableTransactionError as exc:
                if not is_failure(exc, Failure.NOT_FOUND, Failure.CONFLICT):     # gone, or changed since read
                    raise
                stale = chunk.pop(exc.index if 0 <= exc.index < len(chunk) else 0)
                conflicts.append(stale.vm_name)
                continue
            return [replace(i, version=r.get("etag")) for i, r in zip(chunk, results)], conflicts, transactions
        return [], conflicts, transactions

    def delete(self, vm_name: str) -> None:
        with _storage_errors(f"deleting protected item {vm_name}"):
            self._table.delete_entity(item_partition(vm_name), vm_name.lower())

    def pages(self, page_size: int = BATCH_LIMIT, shard: str | None = None,
              after: str | None = None) -> Iterator[list[ProtectedItem]]:
        """Every item (of one shard, in name order, after the name ``after``), a page at a time:
        memory holds one page, however many VMs there are."""
        clauses, params = [], {}
        if shard is not None:
            clauses.append("PartitionKey eq @pk")
            params["pk"] = "b" + check_shard(shard)
        if after is not None:       # with no shard too: a whole-table listing resumes past the name
            clauses.append("RowKey gt @after")
            params["after"] = after.lower()
        found = (self._table.query_entities(" and ".join(clauses), parameters=params, results_per_page=page_size)
                 if clauses else self._table.list_entities(results_per_page=page_size))
        with _storage_errors("listing protected items"):
            for page in found.by_page():
                items = [_item_from(e) for e in page]
                if items:
                    yield items

    def count_by_policy(self, policy_name: str) -> int:
        count = 0
        with _storage_errors("counting protected items"):
            for _ in self._table.query_entities("PolicyName eq @p and State eq @s", select=["RowKey"],
                                                parameters={"p": policy_name,
                                                            "s": ProtectionState.PROTECTED.value}):
                count += 1
        return count


def _item_entity(item: ProtectedItem) -> dict[str, Any]:
    entity = {
        "PartitionKey": item_partition(item.vm_name),
        "RowKey": item.vm_name.lower(),
        "VmName": item.vm_name,
        "PolicyName": item.policy_name,
        "ProtectedSince": utc(item.protected_since),
        "PolicyAssignedAt": utc(item.policy_assigned_at),
        "VmKind": item.vm_kind,
        "ResourceId": item.resource_id,
        "DiskLuns": ",".join(str(lun) for lun in item.disk_luns),
        "State": item.state.value,
        "InitialBackupPending": item.initial_backup_pending,
        "LastSlot": utc(item.last_slot) if item.last_slot else None,
        "InProgressJobId": item.in_progress_job_id,
        "InProgressSince": utc(item.in_progress_since) if item.in_progress_since else None,
        "LastJobId": item.last_job_id,
        "Skipped": json.dumps([{"slot": utc(s.slot).isoformat(), "reason": s.reason} for s in item.skipped])
        if item.skipped else None,
        "DeletedAt": utc(item.deleted_at) if item.deleted_at else None,
        "DiskListSetting": item.disk_selection.setting.value,
        "DiskList": ",".join(str(lun) for lun in item.disk_selection.luns),
    }
    return {k: v for k, v in entity.items() if v is not None}


def _item_from(entity: TableEntity) -> ProtectedItem:
    def when(key: str) -> datetime | None:
        value = entity.get(key)
        return utc(value) if value is not None else None

    luns = entity.get("DiskLuns") or ""
    skipped = [SkippedSlot(slot=utc(datetime.fromisoformat(s["slot"])), reason=s["reason"])
               for s in json.loads(entity.get("Skipped") or "[]")]
    return ProtectedItem(
        vm_name=entity["VmName"],
        policy_name=entity["PolicyName"],
        protected_since=utc(entity["ProtectedSince"]),
        policy_assigned_at=utc(entity["PolicyAssignedAt"]),
        vm_kind=entity.get("VmKind", "local"),
        resource_id=entity.get("ResourceId"),
        disk_luns=tuple(int(x) for x in luns.split(",") if x),
        state=ProtectionState(entity.get("State", ProtectionState.PROTECTED.value)),
        initial_backup_pending=bool(entity.get("InitialBackupPending", False)),
        last_slot=when("LastSlot"),
        in_progress_job_id=entity.get("InProgressJobId"),
        in_progress_since=when("InProgressSince"),
        last_job_id=entity.get("LastJobId"),
        skipped=skipped,
        deleted_at=when("DeletedAt"),
        disk_selection=DiskSelection(
            DiskListSetting(entity.get("DiskListSetting", DiskListSetting.ALL.value)),
            tuple(int(x) for x in (entity.get("DiskList") or "").split(",") if x)),
        version=entity.metadata.get("etag") if hasattr(entity, "metadata") else None,
    )


# --- the local VM inventory -----------------------------------------------------------------------
class TableInventory:
    """The Inventory port for LOCAL VMs: names and their disks (page blobs, or managed disks behind the
    local Compute endpoint) with each disk's kind."""

    PARTITION = "vm"

    def __init__(self, table_service: TableServiceClient, table_name: str):
        self._table = _open_table(table_service, table_name)

    def get_vm(self, name: str) -> Vm:
        if name.lower().startswith("/subscriptions/"):
            name = name.rstrip("/").rsplit("/", 1)[-1]     # an ARM id: local VMs are keyed by name
        try:
            with _storage_errors(f"reading VM {name}"):
                entity = self._table.get_entity(self.PARTITION, name.lower())
        except ResourceNotFoundError:
            raise NotFoundError(f"VM {name!r} is not in the local inventory; add it with "
                                f"`vmsnap local vm add`") from None
        return _vm_from(entity)

    def list_vms(self) -> Iterator[Vm]:
        with _storage_errors("listing VMs"):
            for page in self._table.query_entities("PartitionKey eq @pk", parameters={"pk": self.PARTITION},
                                                   results_per_page=BATCH_LIMIT).by_page():
                for entity in page:
                    yield _vm_from(entity)

    def put_vm(self, vm: Vm) -> Vm:
        """Add or replace a local VM; its disks must be page blob URLs without a query string."""
        check_name(vm.name, "name", "VM")
        if not vm.disks:
            raise ValidationError(f"VM {vm.name!r} needs at least one disk", field="disks")
        luns = [d.lun for d in vm.disks]
        if len(set(luns)) != len(luns):
            raise ValidationError(f"VM {vm.name!r} lists a LUN twice", field="disks")
        for disk in vm.disks:
            if disk.method is BackupMethod.RESTORE_POINT:
                if not disk.managed_disk_id or not disk.managed_disk_id.startswith("/subscriptions/"):
                    raise ValidationError(f"managed disk {disk.lun} of {vm.name!r} needs its ARM id "
                                          f"(/subscriptions/...)", field="disks")
            elif not disk.blob_url.startswith(("http://", "https://")) or "?" in disk.blob_url:
                raise ValidationError(f"disk {disk.lun} of {vm.name!r} must be a blob URL without a query "
                                      f"string (never a SAS)", field="disks")
            if disk.lun < -1 or disk.lun > 63:
                raise ValidationError(f"LUN {disk.lun} is out of range (-1 for the OS disk, 0..63)",
                                      field="disks")
        entity = {"PartitionKey": self.PARTITION, "RowKey": vm.name.lower(), "Name": vm.name,
                  "Kind": VmKind.LOCAL.value,
                  "Disks": json.dumps([{"lun": d.lun, "blobUrl": d.blob_url, "name": d.name,
                                        "sizeBytes": d.size_bytes, "kind": DISK_KIND.word(d.method),
                                        "managedDiskId": d.managed_disk_id} for d in vm.disks]),
                  "Location": vm.location or "local"}
        if vm.resource_id:
            entity["ResourceId"] = vm.resource_id
        if vm.tags:
            entity["Tags"] = json.dumps(vm.tags)    # e.g. powerState: what OriginalLocation restores check
        with _storage_errors(f"saving VM {vm.name}"):
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        return replace(vm, kind=VmKind.LOCAL, location=entity["Location"])

    def delete_vm(self, name: str) -> None:
        self.get_vm(name)
        with _storage_errors(f"deleting VM {name}"):
            self._table.delete_entity(self.PARTITION, name.lower())


def _vm_from(entity: TableEntity) -> Vm:
    disks = tuple(sorted((Disk(lun=d["lun"], blob_url=d["blobUrl"], name=d.get("name", ""),
                               size_bytes=d.get("sizeBytes", 0),
                               method=DISK_KIND.member(d.get("kind", "PageBlob")),
                               managed_disk_id=d.get("managedDiskId")) for d in json.loads(entity["Disks"])),
                         key=lambda d: d.lun))
    return Vm(name=entity["Name"], kind=VmKind(entity.get("Kind", VmKind.LOCAL.value)), disks=disks,
              location=entity.get("Location"), resource_id=entity.get("ResourceId"),
              tags=json.loads(entity.get("Tags") or "{}"))


class TableRestoreTestPlanStore:
    """Restore test plans, one row each (partition ``plan``), like policies; writes guarded by the ETag."""

    PARTITION = "plan"

    def __init__(self, table_service: TableServiceClient, table_name: str):
        self._table = _open_table(table_service, table_name)

    def get(self, name: str) -> RestoreTestPlan:
        try:
            with _storage_errors(f"reading restore test plan {name}"):
                entity = self._table.get_entity(self.PARTITION, name.lower())
        except ResourceNotFoundError:
            raise NotFoundError(f"restore test plan {name!r} not found; see `vmsnap restore-test plan list`") \
                from None
        return _plan_from(entity)

    def create(self, plan: RestoreTestPlan) -> RestoreTestPlan:
        try:
            with _storage_errors(f"creating restore test plan {plan.name}"):
                written = self._table.create_entity(_plan_entity(plan))
        except ResourceExistsError:
            raise ConflictError(f"restore test plan {plan.name!r} already exists") from None
        return replace(plan, version=written.get("etag"))

    def replace(self, plan: RestoreTestPlan) -> RestoreTestPlan:
        try:
            with _storage_errors(f"updating restore test plan {plan.name}"):
                written = self._table.update_entity(_plan_entity(plan), mode=UpdateMode.REPLACE, etag=plan.version,
                                                    match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError:
            raise ConflictError(f"restore test plan {plan.name!r} changed meanwhile") from None
        except ResourceNotFoundError:
            raise NotFoundError(f"restore test plan {plan.name!r} not found") from None
        return replace(plan, version=written.get("etag"))

    def delete(self, name: str) -> None:
        self.get(name)
        with _storage_errors(f"deleting restore test plan {name}"):
            self._table.delete_entity(self.PARTITION, name.lower())

    def list(self) -> list[RestoreTestPlan]:
        with _storage_errors("listing restore test plans"):
            plans = [_plan_from(e) for e in
                     self._table.query_entities("PartitionKey eq @pk", parameters={"pk": self.PARTITION})]
        return sorted(plans, key=lambda p: p.name.lower())


def _plan_entity(plan: RestoreTestPlan) -> dict[str, Any]:
    return {"PartitionKey": TableRestoreTestPlanStore.PARTITION, "RowKey": plan.name.lower(), "Name": plan.name,
            "Document": json.dumps(plan.as_document(), separators=(",", ":"))}


def _plan_from(entity: TableEntity) -> RestoreTestPlan:
    return replace(plan_from_document(json.loads(entity["Document"])), version=entity.metadata.get("etag"))
