"""Shards of the fleet: every VM belongs to one of 16, by the first hex digit of sha256 of its
lower-cased name. Items, job rows and the scheduler's progress are keyed by shard, so a planner of one
shard reads one item partition and writes one job partition per slot hour; the digit is also carried
inside each job id, so a job's shard is known from its id alone."""
from __future__ import annotations

import hashlib

SHARDS: tuple[str, ...] = tuple("0123456789abcdef")


def shard_of(vm_name: str) -> str:
    return hashlib.sha256(vm_name.lower().encode()).hexdigest()[0]


def check_shard(shard: str) -> str:
    if shard not in SHARDS:
        raise ValueError(f"shard {shard!r} is not one of {''.join(SHARDS)}")
    return shard
