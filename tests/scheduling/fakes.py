"""In-memory policy, protected-item and shard-progress stores with the Table adapters' semantics (ETag
versions, partial batch writes, a shard's items in name order), for fast property tests of the scheduler."""
from __future__ import annotations

import copy
import itertools
import threading
from dataclasses import replace
from typing import Callable, Generic, Sequence, TypeVar

from shared.domain.policy import DEFAULT_POLICY_NAME, Policy, default_policy
from shared.domain.progress import ShardProgress
from shared.domain.protection import ProtectedItem, ProtectionState
from shared.domain.retention_progress import PARTS, RetentionProgress
from shared.domain.shards import SHARDS, check_shard, shard_of
from shared.errors import ConflictError, NotFoundError

_versions = itertools.count(1)
P = TypeVar("P", ShardProgress, RetentionProgress)


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

    def count_by_policy(self, policy_name: str) -> int:
        return sum(1 for item in self.items.values()
                   if item.policy_name == policy_name and item.state is ProtectionState.PROTECTED)

    def _put(self, item: ProtectedItem) -> ProtectedItem:
        stored = replace(copy.deepcopy(item), version=str(next(_versions)))
        self.items[item.vm_name.lower()] = stored
        return copy.deepcopy(stored)


class _InMemoryProgress(Generic[P]):
    """Progress rows; ``update`` is read-modify-write, atomic under threads."""

    def __init__(self, keys: tuple[str, ...], empty: Callable[[str], P]) -> None:
        self.rows: dict[str, P] = {}
        self._keys = keys
        self._empty = empty
        self._lock = threading.RLock()

    def get(self, key: str) -> P:
        if key not in self._keys:
            raise ValueError(f"{key!r} is not one of {', '.join(self._keys)}")
        return self.rows.get(key) or self._empty(key)

    def all(self) -> list[P]:
        return [self.get(key) for key in self._keys]

    def update(self, key: str, change: Callable[[P], P], *, current: P | None = None) -> P:
        with self._lock:
            stored = self.get(key)
            changed = change(stored)
            if changed == stored:
                return stored
            self.rows[key] = replace(changed, version=str(next(_versions)))
            return self.rows[key]


class InMemoryShardProgressStore(_InMemoryProgress[ShardProgress]):
    """The scheduler's per-shard progress."""

    def __init__(self) -> None:
        super().__init__(SHARDS, lambda shard: ShardProgress(shard=check_shard(shard)))


class InMemoryRetentionProgressStore(_InMemoryProgress[RetentionProgress]):
    """Retention's per-part progress."""

    def __init__(self) -> None:
        super().__init__(PARTS, lambda part: RetentionProgress(part=part))
