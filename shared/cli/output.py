"""Output and errors for vmsnap: ``-o table|json`` like az, one-line errors, stable exit codes."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, is_dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Iterable, Sequence

from tabulate import tabulate

from shared.errors import (ConfigurationError, ConflictError, NotFoundError, TransientError,
                           ValidationError, VmsnapError)

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_FAILED = 1          # the operation ran and reports failure (e.g. job wait on a failed job)
EXIT_USAGE = 2           # bad arguments or invalid input
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_CONFIG = 5          # missing setting, unreachable service
EXIT_TRANSIENT = 6       # try again


def exit_code_for(exc: VmsnapError) -> int:
    for kind, code in ((ValidationError, EXIT_USAGE), (NotFoundError, EXIT_NOT_FOUND),
                       (ConflictError, EXIT_CONFLICT), (ConfigurationError, EXIT_CONFIG),
                       (TransientError, EXIT_TRANSIENT)):
        if isinstance(exc, kind):
            return code
    return EXIT_FAILED


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def format_duration(delta: timedelta | None) -> str:
    """az's duration form: ``0:20:23.089669``."""
    if delta is None:
        return ""
    return str(delta)


def format_time(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S") if dt else ""


def emit_json(value: Any, stream=None) -> None:
    stream = stream or sys.stdout
    json.dump(to_jsonable(value), stream, indent=2, sort_keys=False)
    stream.write("\n")


def emit_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], stream=None) -> None:
    stream = stream or sys.stdout
    rows = list(rows)
    stream.write(tabulate(rows, headers=list(headers), tablefmt="simple", disable_numparse=True) + "\n")


def fail(message: str, stream=None) -> None:
    """Print an error the way az does: one line, starting with 'ERROR:'."""
    (stream or sys.stderr).write(f"ERROR: {message}\n")
