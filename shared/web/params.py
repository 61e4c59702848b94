"""Query strings of the dashboard and its API, read strictly: each route names the parameters it takes, and
anything else (an unknown name, a value of the wrong form, too long, a control character) is a
ValidationError whose one-line message says what is accepted. Hostile input never reaches a store."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Mapping, Sequence

from shared.domain.policy import check_name
from shared.domain.task import validate_job_id
from shared.domain.when import parse_when
from shared.errors import ValidationError

MAX_VALUE = 200                 # characters of one value (a continuation token may be longer)
MAX_TOKEN = 2000
_TOKEN = re.compile(r"[A-Za-z0-9_=\-]+")       # the stores' continuations are URL-safe base64


def shown(value: str, limit: int = 60) -> str:
    """A user's value as an error message quotes it: on one line (repr escapes control characters), short."""
    text = repr(value[:limit])
    return text + ("..." if len(value) > limit else "")


class Params:
    """The query parameters of one request, checked against the names the route takes."""

    def __init__(self, raw: Mapping[str, str], allowed: Sequence[str]) -> None:
        unknown = sorted(name for name in raw if name not in allowed and name != "code")    # code: a function key
        if unknown:
            takes = ", ".join(allowed) if allowed else "none"
            raise ValidationError(f"unknown query parameter {shown(unknown[0])}; this address takes: {takes}",
                                  field=unknown[0])
        self._raw = {name: value for name, value in raw.items() if name != "code"}

    def given(self) -> dict[str, str]:
        """The parameters as given (those the route takes), to build the address of another page."""
        return dict(self._raw)

    def text(self, name: str, limit: int = MAX_VALUE) -> str | None:
        value = self._raw.get(name)
        if value is None or value == "":
            return None
        if len(value) > limit:
            raise ValidationError(f"{name} has {len(value)} characters; at most {limit}", field=name)
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValidationError(f"{name} {shown(value)} contains a control character", field=name)
        return value

    def name(self, name: str, what: str) -> str | None:
        value = self.text(name)
        return None if value is None else check_name(value.strip(), name, what)

    def choice(self, name: str, values: Sequence[str]) -> str | None:
        """One of ``values``, in any case (as ``vmsnap --status failed``)."""
        value = self.text(name)
        if value is None:
            return None
        canonical = {v.lower(): v for v in values}.get(value.strip().lower())
        if canonical is None:
            raise ValidationError(f"{name} {shown(value)} is not one of {', '.join(values)}", field=name)
        return canonical

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        if not re.fullmatch(r"\d{1,7}", value.strip()):
            raise ValidationError(f"{name} {shown(value)} is not a whole number from {low} to {high}", field=name)
        number = int(value)
        if not low <= number <= high:
            raise ValidationError(f"{name} must be from {low} to {high}, not {number}", field=name)
        return number

    def when(self, name: str, *, end: bool = False) -> datetime | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            return parse_when(value, end=end)
        except ValidationError as exc:
            raise ValidationError(f"{name}: {exc}", field=name) from None

    def token(self, name: str) -> str | None:
        """An opaque continuation from an earlier page (the store checks it was one it issued)."""
        value = self.text(name, limit=MAX_TOKEN)
        if value is not None and not _TOKEN.fullmatch(value):
            raise ValidationError(f"{name} is not a continuation this API issued; start from the first page",
                                  field=name)
        return value


def route_name(value: str, what: str) -> str:
    """A VM, policy or alert name taken from the path."""
    if len(value) > 256 or any(ord(c) < 32 for c in value):
        raise ValidationError(f"{what} name {shown(value)} is invalid", field="name")
    return check_name(value, "name", what)


def route_job_id(value: str) -> str:
    return validate_job_id(value, field="job id")
