"""``vmsnap status show``: read one status blob (a file, or a blob URL) and print what the service
understands of it: the job status it leads to, consistency, codes, each disk, errors and what to do."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit


from shared.cli.job import write_disks, write_errors
from shared.cli.output import EXIT_OK, emit, format_time, to_jsonable, Subparsers, table_text
from shared.documents import describe_code, format_size
from shared.domain.job_reports import ReportOutcome, interpret
from shared.domain.status import ParseError, StatusReport, parse_status_blob
from shared.errors import NotFoundError, ValidationError

if TYPE_CHECKING:
    from shared.bootstrap import Services

MAX_READ = 16 * 1024 * 1024
# What `job show` prints as Status Blob / Log Blob: a name in the status container.
STATUS_BLOB_NAME = re.compile(r"[A-Za-z0-9._-]+/\d+\.(Status|Logs)\.txt")


def register(subparsers: Subparsers) -> None:
    from shared.cli import add_output_option

    group = subparsers.add_parser("status", help="inspect status blobs written by the VMSnapshot extension")
    sub = group.add_subparsers(dest="command", metavar="<command>")
    show = sub.add_parser("show", help="parse one status blob and show the job result it leads to")
    show.add_argument("source", metavar="PATH_OR_URL",
                      help="a local file; a blob URL (with a SAS, or read with the configured storage "
                           "identity); or the Status Blob name `job show` prints (<job>/<n>.Status.txt)")
    add_output_option(show)
    # A local file needs no settings; a blob name or URL builds the services when it is read.
    show.set_defaults(handler=show_status, needs_services=False)


def show_status(args: argparse.Namespace, svc: Services) -> int:
    data = _read(args.source.strip())
    try:
        report = parse_status_blob(data)
    except ParseError as exc:
        raise ValidationError(f"cannot read the status blob: {exc.reason}") from None
    outcome = interpret(report)
    document = {"report": _report_document(report),
                "result": {"jobStatus": outcome.status.value, "phase": outcome.phase.value,
                           "consistency": outcome.consistency.value if outcome.consistency else None,
                           "backupSizeInBytes": outcome.backup_size_bytes,
                           "disks": outcome.disks, "errorDetails": outcome.errors}}
    emit(args, document, lambda: _write_table(report, outcome))
    return EXIT_OK


def _write_table(report: StatusReport, outcome: ReportOutcome) -> None:
    out = sys.stdout
    fields = [
        ("Job Status", outcome.status.value), ("Phase", outcome.phase.value),
        ("Consistency", outcome.consistency.value if outcome.consistency else ""),
        ("Extension Code", describe_code(report.code)), ("Health Code", describe_code(report.health_code)),
        ("Status Word", report.status), ("Form", "agent status file (substatus)" if report.source == "file" else "status blob"),
        ("Task Id", report.task_id or ""), ("Reported At UTC", format_time(report.timestamp)),
        ("Command Issued UTC", format_time(report.command_start)),
        ("Backup Size", format_size(outcome.backup_size_bytes)), ("Message", report.message),
    ]
    out.write(table_text(fields, fmt="plain") + "\n")
    write_disks(outcome.disks, out, by_position=True)
    write_errors(outcome.errors, out, heading="Warnings" if outcome.status.value == "CompletedWithWarnings" else "Errors")


def _report_document(report: StatusReport) -> dict[str, Any]:
    doc: dict[str, Any] = to_jsonable(report)
    doc["telemetry"] = dict(report.telemetry)
    return doc


def _read(source: str) -> bytes:
    if urlsplit(source).scheme in ("http", "https"):
        return _download(source)
    path = Path(source)
    if not path.exists() and STATUS_BLOB_NAME.fullmatch(source):
        return _download_status_blob(source)
    try:
        with path.open("rb") as handle:
            return handle.read(MAX_READ)
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {source}") from None
    except IsADirectoryError:
        raise ValidationError(f"{source} is a directory; give a status blob file") from None
    except OSError as exc:
        raise ValidationError(f"cannot read {source}: {exc.strerror}") from None


def _download_status_blob(name: str) -> bytes:
    """The Status Blob (or Log Blob) name `job show` prints, read from the configured status container."""
    from shared.bootstrap import services

    return services().status_blobs.read(name)


def _download(url: str) -> bytes:
    """Read a blob by URL: its own SAS if it has one, else the configured storage credential."""
    from shared.bootstrap import blob_urls

    return blob_urls().read(url, max_bytes=MAX_READ)
