"""The first step of reading a queue message's body: a JSON object carrying the schema its reader expects."""
from __future__ import annotations

import json
from typing import Any

from shared.errors import ValidationError


def schema_object(body: bytes | str, schema: str, what: str) -> dict[str, Any]:
    """The body as a JSON object whose ``schema`` is ``schema``; ValidationError naming ``what`` otherwise."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{what} must be JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != schema:
        raise ValidationError(f"{what} has schema {schema!r}", field="schema")
    return data
