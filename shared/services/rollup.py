"""Use cases of the compliance report's roll-up (shared/domain/rollup.py) and the job feed it is folded from:
the fold the alert evaluator runs over the feed, the rebuild from the jobs table (``vmsnap report rebuild``),
and the retention of both (docs/monitoring.md, "The roll-up" and "Retention of the feed and the roll-up")."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Mapping, Protocol

from shared.clock import EARLIEST
from shared.domain.compliance import DEFAULT_DAYS, MAX_DAYS, check_days
from shared.domain.jobs import Job
from shared.domain.rollup import MonthRollup, RollupState, advanced, job_rollup, month_of, of_job
from shared.domain.shards import SHARDS
from shared.ports import FeedEntry, JobQuery
from shared.services.needs import HasAlerts, HasClock, HasJobFeed, HasJobs, HasRollup
from shared.services.outcomes import FEED_MARGIN

log = logging.getLogger(__name__)


class RebuildNeeds(HasClock, HasJobs, HasRollup, Protocol):
    """What rebuild_rollup() reads."""


class PruneNeeds(HasAlerts, HasJobFeed, HasRollup, Protocol):
    """What prune_history() reads."""


# A feed entry outlives the evaluator's reading of it by a day (for whoever looks into what it saw); the
# evaluator itself needs only FEED_MARGIN of it.
FEED_KEEP = timedelta(days=1)
# Rows deleted per evaluator run at most: the first run over a feed that was never pruned works through
# it a run at a time instead of outlasting its timer.
PRUNE_LIMIT = 10_000


def fold_jobs(svc: HasRollup, jobs: Iterable[Job]) -> int:
    """Fold the final backup jobs among ``jobs`` into the roll-up; returns how many rows changed."""
    rows = [row for job in jobs if (row := of_job(job)) is not None]
    return svc.rollup.merge_many(rows) if rows else 0


def fold_feed(svc: HasRollup, entries: Iterable[FeedEntry], jobs: Mapping[str, Job], state: RollupState, *,
              after: datetime, through: datetime) -> int:
    """Fold the jobs of the feed entries in ``(after, through]`` (read back at least FEED_MARGIN after their
    entry: written by then) and record that the fold has read the feed that far. The first fold also
    records what the roll-up covers from then on: every job whose slot is later than its start. ``state``:
    the roll-up's, as read before."""
    if through <= after:
        return 0
    chosen = dict.fromkeys(e.job_id for e in entries if after < e.at <= through)
    if not chosen and state.covered_from is not None:
        return 0        # nothing new: the next fold starts from the same place, and reads the same (nothing)
    changed = fold_jobs(svc, [jobs[job_id] for job_id in chosen if job_id in jobs])
    svc.rollup.update_state(lambda current: advanced(current, covered_from=after + FEED_MARGIN, folded_through=through))
    return changed


@dataclass(frozen=True)
class Rebuild:
    since: datetime
    jobs_read: int
    rows_changed: int
    state: RollupState


def rebuild_rollup(svc: RebuildNeeds, *, days: int = DEFAULT_DAYS) -> Rebuild:
    """Fold every final backup job of the last ``days`` days from the jobs table into the roll-up (a union:
    what is there stays, racing folds are harmless), a shard at a time; then the roll-up covers them."""
    check_days(days)
    started = svc.clock.now()
    since = started - timedelta(days=days)
    read = changed = 0
    for shard in SHARDS:
        rows: list[MonthRollup] = []
        for outcome in svc.jobs.outcomes(JobQuery(operation="Backup", shard=shard, since=since)):
            read += 1
            row = job_rollup(outcome.vm_name, outcome.job_id, outcome.slot, outcome.status, outcome.error)
            if row is not None:
                rows.append(row)
        changed += svc.rollup.merge_many(rows) if rows else 0
    # Jobs that end from now on reach the roll-up through the feed: with no fold yet, the report reads the
    # feed from here. A fold already under way keeps its place (moving it on would skip what it has not read).
    state = svc.rollup.update_state(lambda current: advanced(
        current, covered_from=since,
        folded_through=started - FEED_MARGIN if current.folded_through is None else None))
    log.info("roll-up rebuilt from %s: %s backup job(s) read, %s row(s) changed; it covers slots from %s",
             since.isoformat(), read, changed, state.covered_from.isoformat() if state.covered_from else "-")
    return Rebuild(since=since, jobs_read=read, rows_changed=changed, state=state)


@dataclass
class Pruned:
    feed_entries: int = 0
    rollup_rows: int = 0


def prune_history(svc: PruneNeeds, marks: Mapping[str, datetime], now: datetime, *,
                  folded_through: datetime | None) -> Pruned:
    """Retention of the feed and the roll-up, run by the evaluator: feed entries FEED_KEEP past what both the
    evaluator and the fold have read, hour by hour; roll-up months no report can ask for (MAX_DAYS), month by
    month. Whole partitions, once each (marks), at most PRUNE_LIMIT rows a run. ``folded_through``: how far
    the fold has read the feed (an older time only prunes less)."""
    pruned = Pruned()
    read_to = min(marks.get("feed", now), folded_through or now)
    hour = (read_to - FEED_KEEP).replace(minute=0, second=0, microsecond=0)
    if hour > marks.get("feedPruned", EARLIEST):
        pruned.feed_entries = svc.job_feed.prune(hour, limit=PRUNE_LIMIT)
        if pruned.feed_entries < PRUNE_LIMIT:
            svc.alerts.advance_marks({"feedPruned": hour})
    month = month_of(now - timedelta(days=MAX_DAYS))
    if month > marks.get("rollupPruned", EARLIEST):
        pruned.rollup_rows = svc.rollup.prune(month, limit=PRUNE_LIMIT)
        if pruned.rollup_rows < PRUNE_LIMIT:
            svc.alerts.advance_marks({"rollupPruned": month})
    if pruned.feed_entries or pruned.rollup_rows:
        log.info("retention at %s: %s feed entr(ies) before %s and %s roll-up row(s) before %s deleted",
                 now.isoformat(), pruned.feed_entries, hour.isoformat(), pruned.rollup_rows, month.isoformat())
    return pruned

