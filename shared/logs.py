"""Logging set-up shared by the Function App, the local host and the CLI.

Redaction is installed as a log-record factory, not a filter: a logger's filters do not see
records propagated from child loggers, while the factory redacts every record when it is created,
whichever handler (the Functions worker's, pytest's, a file) later emits it.
"""
from __future__ import annotations

import logging
import os
from typing import Mapping

_installed = False

SDK_LOG_SETTING = "SDK_LOG_LEVEL"
# The Azure SDKs log every HTTP request and AMQP link at INFO; the Functions worker forwards every record
# at INFO to the host, where they were 60-80 % of all records (docs/monitoring.md, "Logs").
SDK_LOGGERS = ("azure", "msal", "urllib3")
DEFAULT_SDK_LEVEL = "WARNING"


def sdk_log_level(env: Mapping[str, str] = os.environ) -> int:
    """The level of the Azure SDKs' loggers: ``SDK_LOG_LEVEL`` (a level name), WARNING by default."""
    name = (env.get(SDK_LOG_SETTING) or DEFAULT_SDK_LEVEL).strip().upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.WARNING


def configure_logging(level: int | None = None, env: Mapping[str, str] | None = None) -> None:
    """Install SAS/protected-settings redaction on every log record (idempotent), and keep the SDKs'
    per-request records out unless ``SDK_LOG_LEVEL`` asks for them."""
    global _installed
    if level is not None:
        logging.getLogger().setLevel(level)
    sdk_level = sdk_log_level(os.environ if env is None else env)
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(sdk_level)
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
