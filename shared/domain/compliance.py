"""RPO and slot compliance, defined once (docs/monitoring.md): pure functions from a policy, one item's
successful backups and its recovery points to its achieved RPO, the slots it met and missed, and its state.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Iterable, Sequence

from shared.clock import EARLIEST, utc
from shared.domain.jobs import JobError
from shared.domain.policy import Policy
from shared.domain.protection import ProtectedItem
from shared.domain.recovery import RecoveryPoint
from shared.domain.schedule import next_slot, slots_between
from shared.errors import ValidationError

# The days a report looks back over, by default and at most (the roll-up keeps its months that long).
DEFAULT_DAYS = 30
MAX_DAYS = 400
# The one tolerance: Azure Backup starts a scheduled backup within 2 hours of its time, and we allow one
# more hour for it to run. A slot with no successful backup by then is missed (its deadline), and an item
# is at risk once its newest restorable point is older than the policy's interval plus this.
SLOT_ALLOWANCE = timedelta(hours=3)
# How far around ``now`` the longest gap between slots is looked for: a week covers every schedule.
_INTERVAL_SPAN = timedelta(days=8)
_JUST_BEFORE = timedelta(microseconds=1)


class ItemState(str, Enum):
    HEALTHY = "Healthy"             # a restorable point within the target RPO
    AT_RISK = "AtRisk"              # its newest restorable point is older than the target RPO
    UNPROTECTED = "Unprotected"     # no restorable point at all


def slot_deadline(slot: datetime) -> datetime:
    """When a slot with no successful backup counts as missed."""
    return utc(slot) + SLOT_ALLOWANCE


def policy_interval(policy: Policy, around: datetime) -> timedelta:
    """The policy's interval: the longest gap between two consecutive slots near ``around`` (24 h for a
    daily policy, 7 days for a weekly one on one day, the overnight gap of an Enhanced window)."""
    slots = slots_between(policy, utc(around) - _INTERVAL_SPAN, utc(around) + _INTERVAL_SPAN)
    return max((b - a for a, b in zip(slots, slots[1:])), default=_INTERVAL_SPAN)


def target_rpo(policy: Policy, now: datetime) -> timedelta:
    """The RPO an item on ``policy`` should never exceed: its interval plus SLOT_ALLOWANCE."""
    return policy_interval(policy, now) + SLOT_ALLOWANCE


def newest_restorable(points: Iterable[RecoveryPoint], now: datetime) -> RecoveryPoint | None:
    """The point a restore would use now: the newest Available point not stamped in the future."""
    restorable = [p for p in points if p.is_available and not p.is_from_the_future(now)]
    return max(restorable, key=lambda p: (utc(p.created_at), p.name), default=None)


def achieved_rpo(points: Iterable[RecoveryPoint], now: datetime) -> timedelta | None:
    """Now minus the time of the newest restorable point (never negative); None without one."""
    newest = newest_restorable(points, now)
    return None if newest is None else max(utc(now) - utc(newest.created_at), timedelta(0))


def applies_from(item: ProtectedItem, policy: Policy) -> datetime:
    """Since when the item's slots are expected: its protection, its current policy, that policy's last
    change (a slot the schedule had before a change was never asked for)."""
    marks = [utc(item.protected_since), utc(item.policy_assigned_at)]
    if policy.modified_at is not None:
        marks.append(utc(policy.modified_at))
    return max(marks)


@dataclass(frozen=True)
class PolicySlots:
    """A policy's slots over a window, computed once for all its items: the slots up to now, the slot that
    follows the last of them, and the target RPO."""

    slots: tuple[datetime, ...]
    following: datetime | None
    target: timedelta


def policy_slots(policy: Policy, *, since: datetime, now: datetime) -> PolicySlots:
    slots = tuple(slots_between(policy, utc(since) - _JUST_BEFORE, utc(now)))
    return PolicySlots(slots=slots, following=next_slot(policy, slots[-1]) if slots else None,
                       target=target_rpo(policy, now))


@dataclass(frozen=True)
class SlotTally:
    """An item's slots in a window: met (a successful backup in the slot's period), missed (none by its
    deadline), pending (deadline still ahead, no success yet: the current period, not counted)."""

    met: tuple[datetime, ...] = ()
    missed: tuple[datetime, ...] = ()
    pending: tuple[datetime, ...] = ()

    @property
    def expected(self) -> int:
        return len(self.met) + len(self.missed)

    @property
    def compliance(self) -> float | None:
        """met / expected; None when no slot is due yet."""
        return len(self.met) / self.expected if self.expected else None

    @classmethod
    def combine(cls, tallies: Iterable["SlotTally"]) -> "SlotTally":
        """Several items' slots as one tally (a policy's, the report's)."""
        met: list[datetime] = []
        missed: list[datetime] = []
        pending: list[datetime] = []
        for tally in tallies:
            met += tally.met
            missed += tally.missed
            pending += tally.pending
        return cls(tuple(met), tuple(missed), tuple(pending))


def tally_slots(policy: Policy, *, since: datetime, now: datetime, successes: Sequence[datetime],
                start: datetime = EARLIEST, computed: PolicySlots | None = None) -> SlotTally:
    """The slots ``s`` with ``max(since, start) <= s <= now``, each judged by ``successes`` (the slots of
    the item's successful backup jobs, any trigger): met when one lies in ``[s, next slot)``. ``computed``:
    the policy's slots over ``[since, now]``, when already known."""
    now = utc(now)
    computed = computed or policy_slots(policy, since=since, now=now)
    slots = computed.slots[bisect_left(computed.slots, max(utc(since), utc(start))):]
    done = sorted(utc(s) for s in successes)
    met: list[datetime] = []
    missed: list[datetime] = []
    pending: list[datetime] = []
    for index, slot in enumerate(slots):
        following = slots[index + 1] if index + 1 < len(slots) else computed.following or next_slot(policy, slot)
        found = bisect_left(done, slot)
        if found < len(done) and done[found] < following:
            met.append(slot)
        elif now >= slot_deadline(slot):
            missed.append(slot)
        else:
            pending.append(slot)
    return SlotTally(tuple(met), tuple(missed), tuple(pending))


@dataclass(frozen=True)
class LastError:
    """The newest failed backup of an item: which job, for which slot, and its first error."""

    job_id: str
    slot: datetime
    error: JobError | None


@dataclass(frozen=True)
class ItemCompliance:
    vm_name: str
    policy_name: str
    state: ItemState
    achieved_rpo: timedelta | None
    target_rpo: timedelta
    newest_point: RecoveryPoint | None
    slots: SlotTally
    last_error: LastError | None


def assess_item(item: ProtectedItem, policy: Policy, *, now: datetime, since: datetime,
                successes: Sequence[datetime], points: Iterable[RecoveryPoint],
                last_error: LastError | None = None, computed: PolicySlots | None = None) -> ItemCompliance:
    """One item's figures as of ``now`` over the window starting at ``since`` (``computed``: its policy's
    ``policy_slots`` over that window, shared by the policy's items)."""
    computed = computed or policy_slots(policy, since=since, now=now)
    newest = newest_restorable(points, now)
    rpo = None if newest is None else max(utc(now) - utc(newest.created_at), timedelta(0))
    target = computed.target
    state = (ItemState.UNPROTECTED if rpo is None else ItemState.AT_RISK if rpo > target else ItemState.HEALTHY)
    slots = tally_slots(policy, since=since, now=now, successes=successes, start=applies_from(item, policy),
                        computed=computed)
    return ItemCompliance(vm_name=item.vm_name, policy_name=policy.name, state=state, achieved_rpo=rpo,
                          target_rpo=target, newest_point=newest, slots=slots, last_error=last_error)


@dataclass(frozen=True)
class PolicyCompliance:
    name: str
    items: int
    states: dict[ItemState, int]
    slots: SlotTally


def by_policy(items: Sequence[ItemCompliance]) -> list[PolicyCompliance]:
    """Each policy's roll-up: its items by state, and its slots summed (Veeam's ratio, per slot)."""
    groups: dict[str, list[ItemCompliance]] = {}
    for item in items:
        groups.setdefault(item.policy_name, []).append(item)
    rolled = []
    for name in sorted(groups, key=str.lower):
        members = groups[name]
        rolled.append(PolicyCompliance(name=name, items=len(members),
                                       states={s: sum(m.state is s for m in members) for s in ItemState},
                                       slots=SlotTally.combine(m.slots for m in members)))
    return rolled


def check_days(days: int) -> None:
    """Refuse a report window outside 1..MAX_DAYS days."""
    if isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
        raise ValidationError(f"--days must be from 1 to {MAX_DAYS}, not {days}", field="days")
