"""How far the daily retention run got through each part of the fleet (a shard's VMs, or the status
container), so a run cut short resumes where it stopped, and which jobs the next run must read.

A run is named by its start (the timer's time). It takes a part (``begin``), settles it a page at a
time, moving ``cursor`` after each page (the last VM of the page, in the item store's name order; for
the status blobs the listing's marker), and ``finish`` records the run as done. Whatever reads the
part's requests (a redelivery, a continuation, a run started while another stopped half-way) starts
from the cursor of the run that holds the part; a request of an older run than the part's is stale.

The job window: a run reads the jobs whose slot lies in ``[since, run]``. ``settled`` is the instant
before which the last finished run left no job unsettled (none still in progress, none whose clean-up
was deferred), and the next window starts ``margin`` before it (jobs created later for an earlier
slot: the scheduler's catch-up), never further back than the lookback.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.clock import utc
from shared.domain.shards import SHARDS
from shared.errors import ValidationError

BLOBS = "blobs"
PARTS: tuple[str, ...] = SHARDS + (BLOBS,)


@dataclass(frozen=True)
class RetentionProgress:
    part: str
    run: datetime | None = None             # the run holding the part (started, not finished)
    cursor: str | None = None               # where that run stopped: the last VM it settled, or a listing marker
    pages: int = 0                          # pages it settled (numbers its continuations)
    since: datetime | None = None           # its job window's start, fixed when it began
    unsettled: datetime | None = None       # the oldest slot of a job it left unsettled so far
    finished: datetime | None = None        # the last finished run
    settled: datetime | None = None         # ... and before when it left no job unsettled
    version: str | None = None              # the store's ETag

    def window_start(self, run: datetime, *, lookback: timedelta, margin: timedelta) -> datetime:
        """Where the job window of a run starting at ``run`` begins."""
        earliest = utc(run) - lookback
        if self.settled is None:
            return earliest
        return max(earliest, utc(self.settled) - margin)

    def begin(self, run: datetime, since: datetime) -> "RetentionProgress | None":
        """The progress once ``run`` takes the part: resumed where it stopped, or a fresh start (a run
        that stopped half-way is overtaken); None when a later run holds the part or finished it."""
        if self.run == run:
            return self
        if (self.run is not None and self.run > run) or (self.finished is not None and self.finished >= run):
            return None
        return replace(self, run=run, cursor=None, pages=0, since=since, unsettled=None)

    def advanced(self, run: datetime, cursor: str | None, unsettled: datetime | None) -> "RetentionProgress":
        """After a page of ``run``; a run that no longer holds the part changes nothing."""
        if self.run != run:
            return self
        return replace(self, cursor=cursor, pages=self.pages + 1, unsettled=_earliest(self.unsettled, unsettled))

    def done(self, run: datetime) -> "RetentionProgress":
        """After ``run``'s last page: the part is finished and its jobs settled up to the run."""
        if self.run != run:
            return self
        return replace(self, run=None, cursor=None, pages=0, since=None, unsettled=None, finished=run,
                       settled=_earliest(run, self.unsettled))


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return min((t for t in (a, b) if t is not None), default=None)


@dataclass(frozen=True)
class RetentionRequest:
    """A message to a retention worker: settle one part for the run started at ``run``. ``seq`` is 0 for
    the timer's request, and the pages settled so far for a continuation."""

    part: str
    run: datetime
    seq: int = 0

    @property
    def message_id(self) -> str:
        # A continuation sent twice (an invocation redelivered after it sent one) is dropped by the queue.
        return f"retain-{self.part}-{utc(self.run).strftime('%Y%m%dT%H%M%S')}-{self.seq}"

    def to_json(self) -> str:
        return json.dumps({"schema": 1, "part": self.part, "run": utc(self.run).isoformat(), "seq": self.seq})

    @classmethod
    def from_json(cls, text: str | bytes) -> "RetentionRequest":
        try:
            data = json.loads(text)
            part = str(data["part"])
            if part not in PARTS:
                raise ValueError(f"part {part!r} is not a shard digit or {BLOBS!r}")
            run = utc(datetime.fromisoformat(str(data["run"]).replace("Z", "+00:00")))
            seq = int(data.get("seq", 0))
            if seq < 0:
                raise ValueError(f"seq {seq} is negative")
            return cls(part=part, run=run, seq=seq)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValidationError(f"not a retention request: {type(exc).__name__}: {exc}", field="body") from exc
