"""Time and identifiers as injectable dependencies, so tests are deterministic and can travel in time."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


@dataclass
class FixedClock:
    """A clock for tests: stands still until moved."""

    current: datetime

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current = self.current + delta


IdFactory = Callable[[], str]


def random_id() -> str:
    return str(uuid.uuid4())


@dataclass
class SequentialIds:
    """Predictable ids for tests: ``prefix-0001``, ``prefix-0002``, ..."""

    prefix: str = "id"
    _n: int = field(default=0, init=False)

    def __call__(self) -> str:
        self._n += 1
        return f"{self.prefix}-{self._n:04d}"


# The instants a datetime can hold, as aware UTC: date arithmetic on a stored record is clamped to
# these rather than raising OverflowError on a far-off time (a record's time is checked where it is
# accepted; this keeps an older record from stopping a whole run).
EARLIEST = datetime.min.replace(tzinfo=timezone.utc)
LATEST = datetime.max.replace(tzinfo=timezone.utc)


def shifted(dt: datetime, delta: timedelta) -> datetime:
    """``dt + delta`` in UTC, clamped to [EARLIEST, LATEST] instead of overflowing."""
    try:
        return utc(dt) + delta
    except OverflowError:
        return LATEST if delta > timedelta(0) else EARLIEST


def utc(dt: datetime) -> datetime:
    """Normalise to aware UTC; naive values are taken to be UTC already."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)
