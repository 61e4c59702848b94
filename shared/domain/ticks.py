""".NET ``DateTime.Ticks`` (100 ns units since 0001-01-01T00:00:00 UTC), the unit of the extension's
``commandStartTimeUTCTicks``; converted with integer arithmetic so no value is ever rounded."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from shared.clock import utc

TICKS_PER_SECOND = 10_000_000
TICKS_PER_MICROSECOND = 10
DOTNET_EPOCH = datetime(1, 1, 1, tzinfo=timezone.utc)
UNIX_EPOCH_TICKS = 621_355_968_000_000_000


def to_ticks(moment: datetime) -> int:
    """The .NET ticks of an instant (naive values are taken as UTC)."""
    delta = utc(moment) - DOTNET_EPOCH
    return ((delta.days * 86_400 + delta.seconds) * TICKS_PER_SECOND
            + delta.microseconds * TICKS_PER_MICROSECOND)


def from_ticks(ticks: int | str) -> datetime:
    """The UTC instant of a ticks value (an int or the decimal string the extension echoes).

    Python keeps microseconds, so the last decimal digit (100 ns) is dropped, as the handler does.
    """
    if isinstance(ticks, str):
        if not ticks.strip().isdigit():
            raise ValueError(f"ticks must be a decimal integer, got {ticks!r}")
        ticks = int(ticks)
    if ticks < 0:
        raise ValueError(f"ticks must not be negative, got {ticks}")
    return DOTNET_EPOCH + timedelta(microseconds=ticks // TICKS_PER_MICROSECOND)


def ticks_string(moment: datetime) -> str:
    """The wire form: an integer as a decimal string, never ``6.36458E+17``."""
    return str(to_ticks(moment))
