"""``vmsnap restore-test``: restore drills. ``plan create|list|show|delete`` keep restore test plans (which
items, how often, which point, how long to keep what was restored, what to probe); ``run --vm VM`` starts
one drill now and prints its RestoreTest job (``job wait`` follows it)."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from shared.cli.job import write_job_block
from shared.cli.output import EXIT_OK, choice, emit, emit_table, Subparsers, add_vm_option
from shared.documents import job_document
from shared.domain.restore_testing import DEFAULT_SCRATCH, PointChoice, RestoreTestPlan, Selection
from shared.services.restore_testing import start_drill

if TYPE_CHECKING:
    from shared.bootstrap import Services

SELECTIONS = [s.value for s in Selection]
CHOICES = [c.value for c in PointChoice]


def register(subparsers: Subparsers) -> None:
    from shared.cli import add_output_option

    group = subparsers.add_parser("restore-test", help="restore drills: plans, and a drill now (restore testing)")
    sub = group.add_subparsers(dest="command", metavar="<command>")
    run = sub.add_parser("run", help="restore a point of the VM into a scratch target now, validate it; prints "
                                     "the RestoreTest job")
    add_vm_option(run, required=True)
    run.add_argument("--rp-name", help="the point to test (default: as the VM's plan picks, else the latest)")
    add_output_option(run)
    run.set_defaults(handler=run_command)

    plans = sub.add_parser("plan", help="restore test plans")
    plan_sub = plans.add_subparsers(dest="vm_command", metavar="<command>")
    create = plan_sub.add_parser("create", help="create a plan")
    create.add_argument("--name", required=True)
    create.add_argument("--selection", default=Selection.ALL.value, choices=SELECTIONS, type=choice(SELECTIONS),
                        help="All protected items, those of the policies named, or the VMs named (--members)")
    create.add_argument("--members", nargs="*", default=[], help="policy names or VM names")
    create.add_argument("--every-hours", type=int, default=24, help="how often the plan's drills run (default 24)")
    create.add_argument("--point", default=PointChoice.LATEST.value, choices=CHOICES, type=choice(CHOICES),
                        help="the latest point, or a random one, within --window-days")
    create.add_argument("--window-days", type=int, default=30, help="points of the last N days (1-365, default 30)")
    create.add_argument("--keep-hours", type=float, default=1.0,
                        help="how long what a drill restored stays before it is deleted (0-168, default 1)")
    create.add_argument("--probe-file", help="a file the restored OS disk must hold, written by the VM before "
                                             "the backup (its content names the backup's job)")
    create.add_argument("--scratch", default=DEFAULT_SCRATCH,
                        help=f"scratch container prefix / resource group (default {DEFAULT_SCRATCH})")
    add_output_option(create)
    create.set_defaults(handler=create_plan)
    for name, helptext, handler in (("show", "one plan", show_plan), ("delete", "delete a plan", delete_plan)):
        cmd = plan_sub.add_parser(name, help=helptext)
        cmd.add_argument("--name", required=True)
        add_output_option(cmd)
        cmd.set_defaults(handler=handler)
    listing = plan_sub.add_parser("list", help="every plan")
    add_output_option(listing)
    listing.set_defaults(handler=list_plans)


def run_command(args: argparse.Namespace, svc: Services) -> int:
    job = start_drill(svc, args.vm, args.rp_name)
    now = svc.clock.now()
    emit(args, job_document(job, now), lambda: write_job_block(job, now, sys.stdout))
    return EXIT_OK


def create_plan(args: argparse.Namespace, svc: Services) -> int:
    plan = RestoreTestPlan(name=args.name, selection=Selection(args.selection), members=tuple(args.members),
                           every_hours=args.every_hours, point=PointChoice(args.point), window_days=args.window_days,
                           keep_hours=args.keep_hours, probe_file=args.probe_file, scratch=args.scratch).validated()
    created = svc.restore_tests.create(plan)
    emit(args, created.as_document(), lambda: print(f"restore test plan {created.name} created"))
    return EXIT_OK


def show_plan(args: argparse.Namespace, svc: Services) -> int:
    plan = svc.restore_tests.get(args.name)
    doc = plan.as_document()
    emit(args, doc, lambda: emit_table([[k, str(v)] for k, v in doc.items()], ("Field", "Value")))
    return EXIT_OK


def delete_plan(args: argparse.Namespace, svc: Services) -> int:
    svc.restore_tests.delete(args.name)
    emit(args, {"name": args.name, "deleted": True}, lambda: print(f"restore test plan {args.name} deleted"))
    return EXIT_OK


def list_plans(args: argparse.Namespace, svc: Services) -> int:
    plans = svc.restore_tests.list()
    rows = [[p.name, p.selection.value, " ".join(p.members), p.every_hours, p.point.value, p.window_days,
             p.keep_hours, p.probe_file or ""] for p in plans]
    emit(args, [p.as_document() for p in plans],
         lambda: emit_table(rows, ("Name", "Selection", "Members", "Every Hours", "Point", "Window Days",
                                   "Keep Hours", "Probe File")))
    return EXIT_OK
