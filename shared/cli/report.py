"""``vmsnap report compliance``: achieved RPO, slot compliance and state per item and per policy, with the
evidence (docs/monitoring.md). Its ``-o json`` document (shared/documents.py) is what the dashboard's API returns.
``vmsnap report rebuild``: the roll-up that report reads, folded again from the jobs table."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from shared.cli.output import (EXIT_OK, REPORT_FORMATS, Subparsers, add_vm_option, emit, emit_table, format_duration,
                               format_time)
from shared.documents import report_document
from shared.domain.compliance import DEFAULT_DAYS, MAX_DAYS, SLOT_ALLOWANCE, ItemCompliance, ItemState
from shared.services.compliance import ComplianceReport, compliance_report
from shared.services.rollup import rebuild_rollup

ITEM_HEADERS = ("Item", "Policy", "State", "RPO", "Target RPO", "Newest Point UTC", "Slots Met", "Compliance",
                "Last Error")

if TYPE_CHECKING:
    from shared.bootstrap import Services
POLICY_HEADERS = ("Policy", "Items", "Healthy", "AtRisk", "Unprotected", "Slots Met", "Missed", "Compliance")


def register(subparsers: Subparsers) -> None:
    from shared.cli import add_output_option

    group = subparsers.add_parser("report", help="reports computed from the tables (compliance: RPO and slots)")
    sub = group.add_subparsers(dest="command", metavar="<command>")
    compliance = sub.add_parser("compliance", help="per item and per policy: achieved RPO, slots met and missed, "
                                                   "Healthy/AtRisk/Unprotected, with the evidence")
    compliance.add_argument("--policy", "--policy-name", dest="policy", help="only the items of this policy")
    add_vm_option(compliance, "only this VM")
    compliance.add_argument("--days", type=int, default=DEFAULT_DAYS,
                            help=f"the window: slots of the last N days, the current period included "
                                 f"(default {DEFAULT_DAYS})")
    add_output_option(compliance, formats=REPORT_FORMATS)
    compliance.set_defaults(handler=compliance_command)
    rebuild = sub.add_parser("rebuild", help="fold the backup jobs of the last N days from the jobs table into the "
                                             "roll-up the compliance report reads (after an upgrade, or a repair)")
    rebuild.add_argument("--days", type=int, default=DEFAULT_DAYS,
                         help=f"how far back (default {DEFAULT_DAYS}; {MAX_DAYS} covers any report)")
    add_output_option(rebuild)
    rebuild.set_defaults(handler=rebuild_command)


def compliance_command(args: argparse.Namespace, svc: Services) -> int:
    report = compliance_report(svc, policy=args.policy, vm=args.vm, days=args.days)
    document = report_document(report)
    if args.output in ("tsv", "csv") and getattr(args, "compiled_query", None) is None:
        emit(args, [item_row(item) for item in document["items"]])     # one line per item
    else:
        emit(args, document, lambda: _print(report))
    return EXIT_OK


def rebuild_command(args: argparse.Namespace, svc: Services) -> int:
    done = rebuild_rollup(svc, days=args.days)
    document = {"since": done.since, "jobsRead": done.jobs_read, "rowsChanged": done.rows_changed,
                "coveredFrom": done.state.covered_from, "foldedThrough": done.state.folded_through}
    emit(args, document, lambda: print(f"{done.jobs_read} backup job(s) since {format_time(done.since)} read, "
                                       f"{done.rows_changed} roll-up row(s) changed; the roll-up covers slots from "
                                       f"{format_time(done.state.covered_from)}"))
    return EXIT_OK


def item_row(item: dict[str, Any]) -> dict[str, Any]:
    """One item's figures flat, for tsv and csv."""
    newest = item["newestPoint"] or {}
    error = item["lastError"] or {}
    return {"name": item["name"], "policyName": item["policyName"], "state": item["state"],
            "achievedRpoSeconds": item["achievedRpoSeconds"], "targetRpoSeconds": item["targetRpoSeconds"],
            "newestPointTime": newest.get("recoveryPointTime"), "slotsExpected": item["slots"]["expected"],
            "slotsMet": item["slots"]["met"], "slotsMissed": item["slots"]["missed"],
            "slotsPending": item["slots"]["pending"], "compliance": item["slots"]["compliance"],
            "lastErrorCode": error.get("errorCode")}


def _print(report: ComplianceReport) -> None:
    rows = []
    for item in report.items:
        point = item.newest_point
        rows.append([item.vm_name, item.policy_name, item.state.value,
                     format_duration(item.achieved_rpo) if item.achieved_rpo is not None else "-",
                     format_duration(item.target_rpo), format_time(point.created_at) if point else "-",
                     f"{len(item.slots.met)}/{item.slots.expected}", _percent(item.slots.compliance),
                     _error(item)])
    emit_table(rows, ITEM_HEADERS)
    print()
    emit_table([[p.name, p.items, p.states[ItemState.HEALTHY], p.states[ItemState.AT_RISK],
                 p.states[ItemState.UNPROTECTED], f"{len(p.slots.met)}/{p.slots.expected}", len(p.slots.missed),
                 _percent(p.slots.compliance)] for p in report.policies], POLICY_HEADERS)
    print(f"\nslots of the last {report.days} day(s), the current period included; a slot is missed once "
          f"{format_duration(SLOT_ALLOWANCE)} pass without a successful backup; AtRisk: newest restorable point "
          f"older than the policy's interval plus that allowance", file=sys.stdout)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _error(item: ItemCompliance) -> str:
    error = item.last_error
    if error is None:
        return ""
    code = error.error.error_code if error.error else "Failed"
    return f"{code} ({format_time(error.slot)})"
