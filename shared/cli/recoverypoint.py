"""``vmsnap recoverypoint list|show``, shaped like ``az backup recoverypoint``: name, time, consistency,
tier and expiry of each restorable point of a VM."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from shared.cli.output import EXIT_OK, emit, emit_table, format_time, Subparsers, add_vm_option
from shared.documents import point_document
from shared.domain.when import parse_when
from shared.services.recovery import PointView, list_points, show_point

if TYPE_CHECKING:
    from shared.bootstrap import Services

LIST_HEADERS = ("Name", "Time", "State", "Consistency", "Tier", "Expiry", "Job")


def register(subparsers: Subparsers) -> None:
    from shared.cli import add_output_option

    group = subparsers.add_parser("recoverypoint", help="list and show the restorable points of a VM "
                                                         "(like az backup recoverypoint)")
    sub = group.add_subparsers(dest="command", metavar="<command>")
    list_cmd = sub.add_parser("list", help="a VM's recovery points, newest first")
    add_vm_option(list_cmd, "the VM", required=True)
    list_cmd.add_argument("--start-date", dest="since", type=parse_when,
                          help="points at or after this UTC time (ISO 8601 or d-m-Y)")
    list_cmd.add_argument("--end-date", dest="until", type=lambda v: parse_when(v, end=True),
                          help="points before this UTC time (a bare date includes that day)")
    add_output_option(list_cmd)
    list_cmd.set_defaults(handler=list_command)

    show = sub.add_parser("show", help="one recovery point with its disk snapshots")
    add_vm_option(show, "the VM", required=True)
    show.add_argument("-n", "--name", required=True, help="the recovery point's name")
    add_output_option(show)
    show.set_defaults(handler=show_command)


def list_command(args: argparse.Namespace, svc: Services) -> int:
    views = list_points(svc, args.vm, since=args.since, until=args.until)
    emit(args, [point_document(v) for v in views], lambda: emit_table(
        [[v.point.name, format_time(v.point.created_at), v.point.state.value, _consistency(v), _tiers(v),
          format_time(v.expires_at), v.point.job_id] for v in views], LIST_HEADERS))
    return EXIT_OK


def show_command(args: argparse.Namespace, svc: Services) -> int:
    doc = point_document(show_point(svc, args.vm, args.name))
    emit(args, doc, lambda: _show_table(doc))
    return EXIT_OK


def _show_table(doc: dict[str, Any]) -> None:
    out = sys.stdout
    for key in ("name", "vmName", "recoveryPointTime", "state", "unavailableReason", "consistency", "tiers",
                "expiryTime", "jobId", "policyName", "trigger", "retainUntil", "sizeBytes", "method", "deletedBy"):
        value = doc.get(key)
        if value not in (None, "", []):
            out.write(f"{key:18} {', '.join(value) if isinstance(value, list) else value}\n")
    emit_table([[d["lun"], d["source"], d["snapshot"]] for d in doc["disks"]], ("LUN", "Disk", "Snapshot"), out)


def _consistency(view: PointView) -> str:
    return view.point.consistency.value if view.point.consistency else ""


def _tiers(view: PointView) -> str:
    return ", ".join(t.value for t in view.tiers)
