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
_PROTECTED_BLOCK = re.compile(r"""(?i)(["']?protected_?settings["']?\s*[:=]\s*)\{(?:[^{}]|\{[^{}]*\})*\}""")


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
    """Replace the record's message, arguments and traceback text by their redacted rendering.

    It never raises, whatever the record holds (a malformed %-format, bytes that are not UTF-8, an
    object whose ``__str__`` or ``__repr__`` raises): a log call must not take its caller down. The
    message is rendered once; when that fails, the line shows the format and the arguments' safe
    renderings instead, still redacted.
    """
    if getattr(record, "_vmsnap_redacted", False):
        return record
    record.msg, record.args = _redact_text(_render_message(record)), None
    if record.exc_info and not record.exc_text:
        record.exc_text = _format_exception(record.exc_info)
    if record.exc_text:
        record.exc_text = _redact_text(_safe_text(record.exc_text))
    if record.stack_info:
        record.stack_info = _redact_text(_safe_text(record.stack_info))
    record._vmsnap_redacted = True
    return record


def _render_message(record: logging.LogRecord) -> str:
    args = record.args
    if args:
        try:
            # Containers first, structurally: a protectedSettings dict is hidden whole, however deeply
            # it nests. Other arguments keep their own rendering and get the text pass below.
            record.args = (redact(args) if isinstance(args, dict)
                           else tuple(redact(a) if isinstance(a, (dict, list)) else a for a in args))
        except Exception:   # noqa: BLE001 - a hostile argument; the text pass below still applies
            record.args = args
    try:
        return _safe_text(record.getMessage())
    except Exception as exc:    # noqa: BLE001 - the format and its arguments disagree: show both, once
        return (f"{_safe_str(record.msg)} [log arguments could not be formatted "
                f"({type(exc).__name__}): {_safe_repr(record.args)}]")


def _format_exception(exc_info: Any) -> str:
    try:
        return logging.Formatter().formatException(exc_info)
    except Exception as exc:    # noqa: BLE001 - a traceback that cannot be printed must not hide the line
        return f"<traceback could not be formatted: {type(exc).__name__}>"


def _safe_text(value: Any) -> str:
    """Text that encodes: lone surrogates (undecodable bytes smuggled into str) become escapes."""
    text = value if isinstance(value, str) else _safe_str(value)
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def _safe_str(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    try:
        return str(value)
    except Exception:   # noqa: BLE001 - an object whose __str__ raises
        return _safe_repr(value)


def _safe_repr(value: Any) -> str:
    if type(value) is tuple:    # one unprintable argument must not hide the others
        return "(" + ", ".join(_safe_repr(item) for item in value) + ")"
    try:
        return repr(value)
    except Exception:   # noqa: BLE001 - an object whose __repr__ raises too
        return f"<unprintable {type(value).__name__}>"
