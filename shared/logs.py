"""Logging set-up shared by the Function App, the local host and the CLI.

Redaction is installed as a log-record factory, not a handler filter: every record is redacted
when it is created, whichever handler (the Functions worker's, pytest's, a file) later emits it.
"""
from __future__ import annotations

import logging

_installed = False


def configure_logging(level: int | None = None) -> None:
    """Install SAS/protected-settings redaction on every log record (idempotent)."""
    global _installed
    if level is not None:
        logging.getLogger().setLevel(level)
    if _installed:
        return
    from shared.redaction import redact

    base_factory = logging.getLogRecordFactory()

    def redacting_factory(*args, **kwargs):
        record = base_factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not hide the record; keep it as it is
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return record

    logging.setLogRecordFactory(redacting_factory)
    _installed = True
