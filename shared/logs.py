"""Logging set-up shared by the Function App, the local host and the CLI.

Redaction is installed as a log-record factory, not a filter: a logger's filters do not see
records propagated from child loggers, while the factory redacts every record when it is created,
whichever handler (the Functions worker's, pytest's, a file) later emits it.
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
    from shared.redaction import scrub_record

    base_factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(lambda *args, **kwargs: scrub_record(base_factory(*args, **kwargs)))
    logging.getLogger().addFilter(_no_http_auth_level_warning)
    _installed = True


def _no_http_auth_level_warning(record: logging.LogRecord) -> bool:
    """Drop azure-functions' 'Auth level is not applied to non http function app' warning.

    ``FunctionApp.get_functions()`` logs it on the root logger every time an app without HTTP functions
    is indexed (the host indexes at each start). This app has no HTTP trigger by design, so there is no
    auth level to set and nothing to act on; every other record passes."""
    return not (record.name == "root" and record.getMessage().startswith("Auth level is not applied to non http"))
