"""The times an operator types (``--since``, ``--until``, the dashboard's query parameters): ISO 8601 or
az's d-m-Y date, read as UTC."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from shared.clock import utc
from shared.errors import ValidationError


def parse_when(value: str, end: bool = False) -> datetime:
    """An ISO 8601 time or az's d-m-Y date, in UTC; with ``end`` a bare date means the end of that day."""
    text = value.strip()
    match = re.fullmatch(r"(\d{1,2})-(\d{1,2})-(\d{4})", text)
    try:
        if match:
            day, month, year = (int(g) for g in match.groups())
            parsed, bare = datetime(year, month, day, tzinfo=timezone.utc), True
        else:
            parsed = utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
            bare = re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) is not None
        return parsed + timedelta(days=1) if end and bare else parsed
    except OverflowError:       # the day after 9999-12-31: no upper bound at all
        return datetime.max.replace(tzinfo=timezone.utc)
    except ValueError:
        raise ValidationError(f"{value!r} is not a date: use ISO 8601 (2025-03-01T02:00:00Z) or d-m-Y "
                              f"(01-03-2025)") from None
