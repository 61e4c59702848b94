"""In-memory policy, protected-item and shard-progress stores with the Table adapters' semantics (ETag
versions, partial batch writes, a shard's items in name order), for fast property tests of the scheduler."""
from __future__ import annotations

import copy
import itertools
import threading
from dataclasses import replace
from typing import Callable, Sequence

from shared.domain.policy import DEFAULT_POLICY_NAME, Policy, default_policy
from shared.domain.progress import ShardProgress
from shared.domain.protection import ProtectedItem
from shared.domain.shards import SHARDS, check_shard, shard_of
from shared.errors import ConflictError, NotFoundError

_versions = itertools.count(1)


class InMemoryPolicyStore:
    def __init__(self) -> None:
        self.policies: dict[str, Policy] = {DEFAULT_POLICY_NAME.lower(): default_policy()}

    def get(self, name: str) -> Policy:
        try:
            return self.policies[name.lower()]
        except KeyError:
            raise NotFoundError(f"policy {name!r} not found") from None

    def create(self, policy: Policy) -> Policy:
        if policy.name.lower() in self.policies:
            raise ConflictError(f"policy {policy.name!r} already exists")
        self.policies[policy.name.lower()] = policy
        return policy

    def replace(self, policy: Policy) -> Policy:
        self.get(policy.name)
        self.policies[policy.name.lower()] = policy
        return policy

    def list(self) -> list[Policy]:
        return sorted(self.policies.values(), key=lambda p: p.name.lower())


class InMemoryProtectedItemStore:
    def __init__(self) -> None:
        self.items: dict[str, ProtectedItem] = {}
        # Updates are read-modify-write as in the Table store; the lock stands in for its ETag check.
        self._lock = threading.RLock()

    def get(self, vm_name: str) -> ProtectedItem | None:
        item = self.items.get(vm_name.lower())
        return copy.deepcopy(item) if item else None

    def add(self, item: ProtectedItem) -> ProtectedItem:
        if item.vm_name.lower() in self.items:
            raise ConflictError(f"VM {item.vm_name!r} is already a protected item")
        return self._put(item)

    def update(self, vm_name: str, change: Callable[[ProtectedItem], ProtectedItem | None]) -> ProtectedItem:
        with self._lock:
            current = self.get(vm_name)
            if current is None:
                raise NotFoundError(f"VM {vm_name!r} is not protected")
            changed = change(copy.deepcopy(current))
            return current if changed is None else self._put(changed)

    def save_many(self, items: Sequence[ProtectedItem]) -> tuple[list[ProtectedItem], list[str], int]:
        saved, conflicts = [], []
        for item in items:
            stored = self.items.get(item.vm_name.lower())
            if stored is None or stored.version != item.version:
                conflicts.append(item.vm_name)
            else:
                saved.append(self._put(item))
        return saved, conflicts, 1 if items else 0

    def pages(self, page_size: int = 100, shard: str | None = None, after: str | None = None):
        names = sorted(n for n in self.items if (shard is None or shard_of(n) == shard)
                       and (after is None or n > after.lower()))
        for start in range(0, len(names), page_size):
            yield [copy.deepcopy(self.items[n]) for n in names[start:start + page_size]]

    def _put(self, item: ProtectedItem) -> ProtectedItem:
        stored = replace(copy.deepcopy(item), version=str(next(_versions)))
        self.items[item.vm_name.lower()] = stored
        return copy.deepcopy(stored)


class InMemoryShardProgressStore:
    """The scheduler's per-shard progress; ``update`` is read-modify-write, atomic under threads."""

    def __init__(self) -> None:
        self.rows: dict[str, ShardProgress] = {}
        self._lock = threading.RLock()

    def get(self, shard: str) -> ShardProgress:
        return self.rows.get(check_shard(shard)) or ShardProgress(shard=shard)

    def all(self) -> list[ShardProgress]:
        return [self.get(shard) for shard in SHARDS]

    def update(self, shard: str, change: Callable[[ShardProgress], ShardProgress], *,
               current: ShardProgress | None = None) -> ShardProgress:
        with self._lock:
            stored = self.get(shard)
            changed = change(stored)
            if changed == stored:
                return stored
            self.rows[shard] = replace(changed, version=str(next(_versions)))
            return self.rows[shard]
