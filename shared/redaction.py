"""The one place secrets are scrubbed: SAS signatures, storage keys and protected settings never
reach a log line, an exception message, a job record or the CLI.

``redact(value)`` cleans text and JSON-like values; ``scrub_record`` / ``RedactingFilter`` clean log
records (``shared.logs.configure_logging`` applies them to every record of the process).
"""
from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "<redacted>"
PROTECTED_KEYS = frozenset({"protectedsettings", "protected_settings"})

# sig=... in a URL or text, also URL-encoded (sig%3D...) when a SAS URL sits inside another URL.
_SIGNATURE = re.compile(r"(?i)(sig(?:=|%3D))[^&\s\"'<>;,)\]}]+")
_ACCOUNT_KEYS = re.compile(r"(?i)\b(AccountKey|SharedAccessKey)=[^;\s\"']+")
# A protected-settings object printed as JSON or as a Python dict (its values are plain strings).
_PROTECTED_BLOCK = re.compile(r"""(?i)(["']?protected_?settings["']?\s*[:=]\s*)\{[^{}]*\}""")


def redact(value: Any) -> Any:
    """``value`` with every secret replaced; text stays text, dicts and lists keep their shape.

    Dict entries named ``protectedSettings`` become ``"<redacted>"`` wholesale. Exceptions become
    their redacted message text. Other values (numbers, None, ...) are returned unchanged.
    """
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, (bytes, bytearray)):
        return _redact_text(bytes(value).decode("utf-8", errors="replace"))
    if isinstance(value, dict):
        return {key: (REDACTED if str(key).lower() in PROTECTED_KEYS else redact(item))
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(item) for item in value)
    if isinstance(value, BaseException):
        return _redact_text(f"{type(value).__name__}: {value}")
    return value


def _redact_text(text: str) -> str:
    text = _PROTECTED_BLOCK.sub(lambda m: f'{m.group(1)}"{REDACTED}"', text)
    text = _SIGNATURE.sub(r"\1REDACTED", text)
    return _ACCOUNT_KEYS.sub(r"\1=REDACTED", text)


class RedactingFilter(logging.Filter):
    """Formats each record's message and traceback, redacted, before any handler sees it.

    On a handler it covers everything that handler emits. On a logger it covers only records
    logged *to that logger* (Python does not run a parent logger's filters for propagated
    records); for the whole process, wrap the log-record factory with ``scrub_record``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True


def scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    """Replace the record's message, arguments and traceback text by their redacted rendering."""
    if getattr(record, "_vmsnap_redacted", False):
        return record
    try:
        message = record.getMessage()
    except Exception:   # a malformed %-format: keep what we can, redacted
        message = f"{record.msg} {record.args}"
    record.msg, record.args = _redact_text(str(message)), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = _redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = _redact_text(record.stack_info)
    record._vmsnap_redacted = True
    return record
