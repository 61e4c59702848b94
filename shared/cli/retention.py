"""``vmsnap retention plan|run``: what retention deletes now and why (plan changes nothing), or do it."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from shared.cli.output import EXIT_OK, emit, emit_table, format_time, to_jsonable, Subparsers, add_vm_option
from shared.services.retention import RetentionPlan, plan_retention, run_retention

if TYPE_CHECKING:
    from shared.bootstrap import Services

HEADERS = ("What", "VM", "Name", "Created", "Rule", "Reason")


def register(subparsers: Subparsers) -> None:
    from shared.cli import add_output_option

    group = subparsers.add_parser("retention", help="enforce the policies' retention (plan: a dry run)")
    sub = group.add_subparsers(dest="command", metavar="<command>")
    plan = sub.add_parser("plan", help="what a retention run would delete now, and which rule removes it")
    add_vm_option(plan, "only this VM (default: every VM)")
    add_output_option(plan)
    plan.set_defaults(handler=plan_command)
    run = sub.add_parser("run", help="delete what retention says has expired (safe to run twice at once)")
    add_vm_option(run, "only this VM (default: every VM)")
    add_output_option(run)
    run.set_defaults(handler=run_command)


def plan_command(args: argparse.Namespace, svc: Services) -> int:
    plan = plan_retention(svc, args.vm)
    emit(args, plan_document(plan), lambda: _print_plan(plan))
    return EXIT_OK


def run_command(args: argparse.Namespace, svc: Services) -> int:
    result = run_retention(svc, args.vm)
    document = {"plan": plan_document(result.plan), "pointsDeleted": result.points_deleted,
                "snapshotsDeleted": result.snapshots_deleted, "snapshotsAlreadyGone": result.snapshots_gone,
                "claimsLostToAnotherRun": result.lost_claims, "statusBlobsDeleted": result.blobs_deleted,
                "backfilled": result.backfilled, "markedUnavailable": result.marked_unavailable}

    def table() -> None:
        _print_plan(result.plan)
        print(f"deleted {len(result.points_deleted)} recovery point(s), {result.snapshots_deleted} snapshot(s) "
              f"({result.snapshots_gone} already gone), {result.blobs_deleted} status/log blob(s); "
              f"recorded {len(result.backfilled)} missing point(s), found {len(result.marked_unavailable)} "
              f"point(s) Unavailable")

    emit(args, document, table)
    return EXIT_OK


def plan_document(plan: RetentionPlan) -> dict[str, Any]:
    document: dict[str, Any] = to_jsonable({
        "examined": plan.examined, "kept": plan.kept,
        "points": [{"vmName": a.vm_name, "name": a.point_name, "recoveryPointTime": a.created_at,
                    "rule": a.rule, "reason": a.reason, "snapshots": list(a.snapshots)} for a in plan.points],
        "attemptSnapshots": [{"vmName": a.vm_name, "jobId": a.job_id, "snapshot": a.snapshot, "rule": a.rule}
                             for a in plan.attempt_snapshots],
        "statusBlobs": [{"name": b.name, "jobId": b.job_id, "rule": b.rule} for b in plan.status_blobs],
        "backfill": plan.backfill,
        "problems": [{"vmName": p.vm_name, "kind": p.kind, "pointName": p.point_name, "reason": p.reason,
                      "errorCode": p.kind.error_code} for p in plan.problems],
    })
    return document


def _print_plan(plan: RetentionPlan) -> None:
    rows = [["point", a.vm_name, a.point_name, format_time(a.created_at), a.rule.value, a.reason]
            for a in plan.points]
    rows += [["snapshot", a.vm_name, a.snapshot, "", a.rule.value, f"left by job {a.job_id}"]
             for a in plan.attempt_snapshots]
    rows += [["status blob", "", b.name, "", b.rule.value, "its job is final"] for b in plan.status_blobs]
    if rows:
        emit_table(rows, HEADERS)
    if plan.problems:
        print()
        emit_table([[p.vm_name, p.kind.value, p.point_name or "", p.reason] for p in plan.problems],
                   ("VM", "Problem", "Point", "Reason"))
    print(f"{plan.examined} point(s) examined, {plan.kept} kept, {len(plan.points)} to delete; "
          f"{len(plan.attempt_snapshots)} attempt snapshot(s), {len(plan.status_blobs)} status/log blob(s); "
          f"{len(plan.backfill)} point(s) to record; {len(plan.problems)} problem(s)")
