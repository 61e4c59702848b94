"""What vmsnap tells an operator when a command fails: one line that says what to do, and the
documented exit code, whichever adapter the failure came through (no traceback; ``--debug`` shows it).

An unreachable endpoint or refused credentials read the same whether Table, Blob or Service Bus code
met them, so the same wrong account key always gives the same message.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from shared.adapters.azure_errors import Failure as Kind, failures_in
from shared.cli.output import EXIT_CONFIG, EXIT_FAILED, exit_code_for
from shared.errors import VmsnapError
from shared.redaction import redact

_LOCAL_HINT = "start the local stack (./dev run) or correct the setting"


@dataclass(frozen=True)
class Failure:
    message: str
    exit_code: int


def describe(exc: BaseException) -> Failure:
    """The one line and exit code for an exception that reached the command line."""
    refused = _find_refusal(exc)
    if refused is not None:
        return refused
    unreachable = _find_unreachable(exc)
    if unreachable is not None:
        return unreachable
    if isinstance(exc, VmsnapError):
        return Failure(redact(str(exc)), exit_code_for(exc))
    return Failure(f"unexpected {type(exc).__name__}: {_first_line(exc)}; run again with --debug for the "
                   f"details and report them", EXIT_FAILED)


def _find_refusal(exc: BaseException) -> Failure | None:
    for failure in failures_in(exc):
        if failure.service_bus and failure.kind is Kind.REFUSED:
            return Failure(f"Service Bus refused the credentials of ServiceBusConnection at "
                           f"{_service_bus_endpoint()}: check the shared access key, or the identity's role",
                           EXIT_CONFIG)
        if failure.kind is Kind.REFUSED or failure.no_credential:
            return Failure(f"storage refused the credentials of BackupStorage ({failure.said or 'refused'}) at "
                           f"{_storage_endpoint()}: check the account key in the connection string, or the "
                           f"identity's role on the account", EXIT_CONFIG)
    return None


def _find_unreachable(exc: BaseException) -> Failure | None:
    for failure in failures_in(exc):
        if failure.unreachable and failure.service_bus:
            return Failure(f"cannot reach Service Bus at {_service_bus_endpoint()} (ServiceBusConnection): "
                           f"{_LOCAL_HINT}", EXIT_CONFIG)
        if failure.unreachable:
            return Failure(f"cannot reach storage at {_storage_endpoint(failure.detail)} (BackupStorage): "
                           f"{_LOCAL_HINT}", EXIT_CONFIG)
    return None


def _storage_endpoint(detail: str = "") -> str:
    """The endpoint an operator would check: named by the failed request, else by the setting."""
    match = re.search(r"host='([^']+)', port=(\d+)", detail)
    if match:
        return f"{match.group(1)}:{match.group(2)}"
    text = os.environ.get("BackupStorage", "")
    parts = _parts(text)
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        return "127.0.0.1:10000 (blob) and 127.0.0.1:10002 (table)"
    for key in ("tableendpoint", "blobendpoint"):
        if parts.get(key):
            return parts[key]
    if parts.get("accountname"):
        return f"account {parts['accountname']}"
    return os.environ.get("BackupStorage__tableServiceUri") or os.environ.get(
        "BackupStorage__blobServiceUri") or "the configured storage account"


def _service_bus_endpoint() -> str:
    parts = _parts(os.environ.get("ServiceBusConnection", ""))
    endpoint = parts.get("endpoint") or os.environ.get("ServiceBusConnection__fullyQualifiedNamespace")
    return endpoint or "the configured namespace"


def _parts(connection_string: str) -> dict[str, str]:
    parts = {}
    for piece in connection_string.split(";"):
        key, sep, value = piece.partition("=")
        if sep:
            parts[key.strip().lower()] = value.strip()
    return parts


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0]) if text else "no detail"
