"""``vmsnap alert list|show|resolve``: the alerts of the protected items, in az's output conventions.
Their ``-o json`` documents are the shapes a web API returns as they are (docs/monitoring.md)."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from shared.cli.output import EXIT_OK, choice, emit, emit_table, format_time, Subparsers, add_vm_option
from shared.documents import alert_document
from shared.domain.alerts import Alert, AlertStatus
from shared.services.alerting import list_alerts, resolve_by_operator, show_alert

if TYPE_CHECKING:
    from shared.bootstrap import Services

LIST_HEADERS = ("Name", "Kind", "Severity", "Status", "Item Name", "Count", "Fired UTC", "Last Seen UTC", "Delivery")
STATUSES = [s.value for s in AlertStatus]


def register(subparsers: Subparsers) -> None:
    from shared.cli import add_output_option

    group = subparsers.add_parser("alert", help="alerts of failed, missed and at-risk backups: list, show, resolve")
    sub = group.add_subparsers(dest="command", metavar="<command>")
    list_cmd = sub.add_parser("list", help="alerts, newest fired first")
    list_cmd.add_argument("--status", choices=STATUSES, type=choice(STATUSES), help="Active or Resolved (any case)")
    add_vm_option(list_cmd, "only this VM's alerts")
    add_output_option(list_cmd)
    list_cmd.set_defaults(handler=list_command)
    show = sub.add_parser("show", help="one alert with its occurrences, advice, resolution and delivery")
    show.add_argument("-n", "--name", required=True, help="the alert's name")
    add_output_option(show)
    show.set_defaults(handler=show_command)
    resolve = sub.add_parser("resolve", help="resolve an active alert by hand")
    resolve.add_argument("-n", "--name", required=True, help="the alert's name")
    resolve.add_argument("--note", default="", help="why (kept on the alert)")
    add_output_option(resolve)
    resolve.set_defaults(handler=resolve_command)


def list_command(args: argparse.Namespace, svc: Services) -> int:
    alerts = list_alerts(svc, AlertStatus(args.status) if args.status else None, args.vm)
    emit(args, [alert_document(a) for a in alerts], lambda: emit_table([_row(a) for a in alerts], LIST_HEADERS))
    return EXIT_OK


def show_command(args: argparse.Namespace, svc: Services) -> int:
    alert = show_alert(svc, args.name)
    emit(args, alert_document(alert), lambda: _block(alert))
    return EXIT_OK


def resolve_command(args: argparse.Namespace, svc: Services) -> int:
    alert = resolve_by_operator(svc, args.name, args.note)
    emit(args, alert_document(alert), lambda: print(f"{alert.name} {alert.status.value} {alert.item}"))
    return EXIT_OK


def _row(alert: Alert) -> list[Any]:
    return [alert.name, alert.kind.value, alert.severity, alert.status.value, alert.item, alert.count,
            format_time(alert.fired_at), format_time(alert.last_seen), alert.delivery.state.value]


def _block(alert: Alert) -> None:
    out = sys.stdout
    fields = [("Name", alert.name), ("Kind", alert.kind.value), ("Severity", alert.severity),
              ("Status", alert.status.value), ("Item Name", alert.item), ("Policy", alert.policy_name or ""),
              ("Count", alert.count), ("Fired UTC", format_time(alert.fired_at)),
              ("Last Seen UTC", format_time(alert.last_seen)), ("Summary", alert.summary),
              ("Error", f"{alert.error_code or ''} {alert.error_title}".strip()),
              ("Resolves When", alert.kind.resolved_by), ("Resolved UTC", format_time(alert.resolved_at)),
              ("Resolved By", alert.resolved_by or ""), ("Resolution", alert.resolution or ""),
              ("Delivery", f"{alert.delivery.state.value} (notified: {alert.delivery.notified or '-'}, "
                           f"attempts: {alert.delivery.attempts}{', ' + alert.delivery.last_error if alert.delivery.last_error else ''})")]
    for label, value in fields:
        out.write(f"{label:14} {value}\n")
    if alert.recommendations:
        out.write("\nRecommended actions\n" + "".join(f"  - {r}\n" for r in alert.recommendations))
    out.write("\nOccurrences\n")
    emit_table([[o.key, format_time(o.time), format_time(o.seen_at), o.job_id or "", o.error_code or ""]
                for o in alert.occurrences], ("Occurrence", "About UTC", "Seen UTC", "Job", "Error Code"), out)
