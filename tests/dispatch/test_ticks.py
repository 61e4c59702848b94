"""commandStartTimeUTCTicks: .NET ticks, exact, as an integer string."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.ticks import from_ticks, ticks_string, to_ticks

KNOWN = [
    (datetime(2025, 3, 1, 2, 0, tzinfo=timezone.utc), 638763912000000000),
    (datetime(1970, 1, 1, tzinfo=timezone.utc), 621355968000000000),
    (datetime(1, 1, 1, tzinfo=timezone.utc), 0),
    (datetime(2025, 3, 1, 2, 0, 0, 123456, tzinfo=timezone.utc), 638763912001234560),
]

instants = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
                        timezones=st.just(timezone.utc))


@pytest.mark.parametrize("moment,ticks", KNOWN)
def test_known_values(moment, ticks):
    """The extension sees the same ticks a .NET service would send for the same instant."""
    assert to_ticks(moment) == ticks
    assert from_ticks(ticks) == moment
    assert from_ticks(str(ticks)) == moment


def test_wire_form_is_an_integer_string():
    """The ticks are sent as digits only, never in the doc's 6.36458E+17 display form."""
    assert ticks_string(datetime(2025, 3, 1, 2, tzinfo=timezone.utc)) == "638763912000000000"


def test_offset_and_naive_times_mean_utc():
    """A local-time clock value gives the same ticks as the same instant in UTC."""
    cet = timezone(timedelta(hours=1))
    assert to_ticks(datetime(2025, 3, 1, 3, 0, tzinfo=cet)) == 638763912000000000
    assert to_ticks(datetime(2025, 3, 1, 2, 0)) == 638763912000000000


@given(instants)
def test_round_trip_from_datetime(moment):
    """Any instant survives ticks and back unchanged, to the microsecond."""
    assert from_ticks(ticks_string(moment)) == moment


@given(st.integers(min_value=0, max_value=to_ticks(datetime(9999, 12, 31, tzinfo=timezone.utc))))
def test_round_trip_from_ticks(ticks):
    """A ticks value echoed by the extension maps back to the instant, losing only the 100 ns digit."""
    assert to_ticks(from_ticks(ticks)) == ticks - ticks % 10


@pytest.mark.parametrize("bad", ["6.36458E+17", "", "-5", "abc"])
def test_malformed_ticks_are_refused(bad):
    """A malformed echoed value is an error, not a silently wrong time."""
    with pytest.raises(ValueError):
        from_ticks(bad)
