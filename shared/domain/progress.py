"""How far the scheduler has settled each shard: the watermark it writes once per shard and page,
instead of once per item and job.

A run of the planner over a shard starts at ``started`` and plans every slot up to its ``horizon``
for each item it reads. When it finishes, every item it saw is settled up to the horizon; an item
it did not see (added, re-assigned or resumed after the run began, or whose policy changed since)
keeps its own watermark. While it runs, each page it completes moves ``through`` (the last item,
by lower-cased name, in the store's order), so a run that dies is resumed where it stopped: the
next run plans the items before ``through`` only from that run's horizon on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.clock import utc
from shared.domain.policy import Policy
from shared.domain.protection import ProtectedItem
from shared.domain.shards import check_shard
from shared.errors import ValidationError

# Clocks of the CLI and the planner may differ by seconds: an item changed this close to a run's
# start counts as unseen by it (it is then planned from its own watermark; its jobs' deterministic
# ids make a slot planned twice one job).
SEEN_MARGIN = timedelta(minutes=2)


@dataclass(frozen=True)
class ShardProgress:
    shard: str
    settled_until: datetime | None = None   # the last finished run's horizon ...
    seen_from: datetime | None = None       # ... and its start
    items: int = 0                          # items that run read (decides fan-out)
    run_started: datetime | None = None     # a run still going, or one that died: its start,
    run_horizon: datetime | None = None     # its horizon,
    run_through: str | None = None          # and the last item it settled
    version: str | None = None              # the store's ETag

    def settled_for(self, item: ProtectedItem, policy: Policy) -> datetime | None:
        """Up to when this shard's runs settled ``item``'s slots; None where no run saw it as it is."""
        marks = []
        if self.settled_until is not None and _saw(self.seen_from, item, policy):
            marks.append(utc(self.settled_until))
        if (self.run_horizon is not None and self.run_through is not None
                and item.vm_name.lower() <= self.run_through and _saw(self.run_started, item, policy)):
            marks.append(utc(self.run_horizon))
        return max(marks, default=None)

    def advanced(self, started: datetime, horizon: datetime, through: str) -> "ShardProgress":
        """After a run's page: that run has settled every item up to ``through``."""
        if self.settled_until is not None and horizon <= self.settled_until:
            return self                     # a later run has finished already
        if self.run_horizon is not None and self.run_horizon > horizon:
            return self                     # a later run is under way: its progress counts
        if self.run_horizon == horizon and self.run_started == started and self.run_through is not None:
            through = max(through, self.run_through)
        return replace(self, run_started=started, run_horizon=horizon, run_through=through)

    def finished(self, started: datetime, horizon: datetime, items: int) -> "ShardProgress":
        """After a run's last page: every item it saw is settled up to its horizon."""
        if self.settled_until is not None and horizon <= self.settled_until:
            return self
        done = replace(self, settled_until=horizon, seen_from=started, items=items)
        if done.run_horizon is not None and done.run_horizon <= horizon:
            done = replace(done, run_started=None, run_horizon=None, run_through=None)
        return done


def _saw(started: datetime | None, item: ProtectedItem, policy: Policy) -> bool:
    if started is None:
        return False
    cutoff = utc(started) - SEEN_MARGIN
    changed = [utc(item.policy_assigned_at)] + ([utc(policy.modified_at)] if policy.modified_at else [])
    return max(changed) < cutoff


@dataclass(frozen=True)
class PlanRequest:
    """The timer's message to a planner: plan one shard as of the tick's time."""

    shard: str
    tick: datetime
    past_due: bool = False

    @property
    def message_id(self) -> str:
        # One message per shard and tick: the queue drops a timer's repeat.
        return f"plan-{self.shard}-{utc(self.tick).strftime('%Y%m%dT%H%M%S')}"

    def to_json(self) -> str:
        return json.dumps({"schema": 1, "shard": self.shard, "tick": utc(self.tick).isoformat(),
                           "pastDue": self.past_due})

    @classmethod
    def from_json(cls, text: str | bytes) -> "PlanRequest":
        try:
            data = json.loads(text)
            shard = check_shard(str(data["shard"]))
            tick = utc(datetime.fromisoformat(str(data["tick"]).replace("Z", "+00:00")))
            return cls(shard=shard, tick=tick, past_due=bool(data.get("pastDue", False)))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValidationError(f"not a plan request: {type(exc).__name__}: {exc}", field="body") from exc
