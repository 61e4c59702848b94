"""`vmsnap protection enable-for-vm|update-for-vm|disable|list|show|backup-now` and the top-level
`vmsnap backup-now`, shaped like `az backup protection`."""
from __future__ import annotations

import argparse
from datetime import datetime, timezone

from shared.cli import add_output_option
from shared.cli.output import emit_json, emit_table, format_duration, format_time
from shared.domain.jobs import Job
from shared.errors import ValidationError


def register(subparsers) -> None:
    group = subparsers.add_parser("protection", help="protect VMs with a policy, back them up now")
    sub = group.add_subparsers(dest="command", metavar="<command>", required=True)

    enable = sub.add_parser("enable-for-vm", help="protect a VM with a policy")
    enable.add_argument("--vm", required=True, help="VM name")
    enable.add_argument("-p", "--policy-name", default="DefaultPolicy", help="policy (default: DefaultPolicy)")
    enable.add_argument("--no-initial-backup", action="store_true",
                        help="do not take a first backup at the next scheduler tick; wait for the first slot")
    add_output_option(enable)
    enable.set_defaults(handler=_enable)

    update = sub.add_parser("update-for-vm", help="move a protected VM to another policy")
    update.add_argument("--vm", required=True)
    update.add_argument("-p", "--policy-name", required=True)
    add_output_option(update)
    update.set_defaults(handler=_update)

    disable = sub.add_parser("disable", help="stop protecting a VM (keep or delete its recovery points)")
    disable.add_argument("--vm", required=True)
    disable.add_argument("--delete-backup-data", type=_boolean, default=False, metavar="{true,false}",
                         help="also delete the recovery points (after 14 days of soft delete); default false")
    disable.add_argument("-y", "--yes", action="store_true", help="do not ask to confirm deleting backup data")
    add_output_option(disable)
    disable.set_defaults(handler=_disable)

    listing = sub.add_parser("list", help="list protected items with their last backup and next slot")
    add_output_option(listing)
    listing.set_defaults(handler=_list)

    show = sub.add_parser("show", help="show one protected item, with the slots it skipped and why")
    show.add_argument("--vm", required=True)
    add_output_option(show)
    show.set_defaults(handler=_show)

    for parent in (sub, subparsers):
        now = parent.add_parser("backup-now", help="back up a protected VM now (on demand)")
        now.add_argument("--vm", required=True)
        now.add_argument("--retain-until", type=_date, metavar="dd-mm-yyyy",
                         help="keep the recovery point until this date (UTC); default 30 days")
        now.add_argument("--dry-run", action="store_true",
                         help="print the extension resource that would be sent; create no job")
        add_output_option(now)
        now.set_defaults(handler=_backup_now)


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _date(text: str) -> datetime:
    try:
        return datetime.strptime(text.strip(), "%d-%m-%Y").replace(tzinfo=timezone.utc)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date in the form dd-mm-yyyy") from None


def _enable(args, services) -> int:
    from shared.services.protection import enable_protection, get_protected_item

    enable_protection(services, args.vm, args.policy_name, initial_backup=not args.no_initial_backup)
    _emit_items(args, [get_protected_item(services, args.vm)], single=True)
    return 0


def _update(args, services) -> int:
    from shared.services.protection import change_policy, get_protected_item

    change_policy(services, args.vm, args.policy_name)
    _emit_items(args, [get_protected_item(services, args.vm)], single=True)
    return 0


def _disable(args, services) -> int:
    from shared.services.protection import disable_protection, get_protected_item

    if args.delete_backup_data and not args.yes:
        raise ValidationError("--delete-backup-data true deletes the VM's recovery points after 14 days; "
                              "add --yes to confirm", field="yes")
    disable_protection(services, args.vm, delete_backup_data=args.delete_backup_data)
    _emit_items(args, [get_protected_item(services, args.vm)], single=True)
    return 0


def _list(args, services) -> int:
    from shared.services.protection import list_protected_items

    _emit_items(args, list_protected_items(services))
    return 0


def _show(args, services) -> int:
    from shared.services.protection import get_protected_item

    _emit_items(args, [get_protected_item(services, args.vm)], single=True)
    return 0


def _backup_now(args, services) -> int:
    if args.dry_run:
        from shared.services.dispatch import preview_extension_resource

        emit_json(preview_extension_resource(services, args.vm, retain_until=args.retain_until))
        return 0
    from shared.services.protection import backup_now

    job = backup_now(services, args.vm, retain_until=args.retain_until)
    if args.output == "json":
        emit_json(_job_document(job))
    else:
        emit_table([[job.job_id, job.operation, job.status.value, job.vm_name, format_time(job.start_time),
                     format_duration(job.duration)]],
                   ["Name", "Operation", "Status", "Item Name", "Start Time UTC", "Duration"])
    return 0


def _job_document(job: Job) -> dict:
    return {"name": job.job_id, "operation": job.operation, "status": job.status.value,
            "entityFriendlyName": job.vm_name, "trigger": job.trigger, "startTime": job.start_time,
            "retainUntil": job.retain_until, "policyName": job.policy_name}


def _item_document(status) -> dict:
    item, job = status.item, status.last_job
    return {
        "name": item.vm_name,
        "policyName": item.policy_name,
        "protectionState": item.state.value,
        "protectedSince": item.protected_since,
        "vmKind": item.vm_kind,
        "diskLuns": list(item.disk_luns),
        "initialBackupPending": item.initial_backup_pending,
        "lastBackupJobId": item.last_job_id,
        "lastBackupStatus": job.status.value if job else None,
        "lastBackupTime": job.start_time if job else None,
        "inProgressJobId": item.in_progress_job_id,
        "lastScheduledSlot": item.last_slot,
        "nextScheduledBackup": status.next_slot,
        "skippedSlots": [{"slot": s.slot, "reason": s.reason} for s in item.skipped],
        "purgeAfter": item.purge_after,
    }


def _emit_items(args, statuses, *, single: bool = False) -> None:
    if args.output == "json":
        docs = [_item_document(s) for s in statuses]
        emit_json(docs[0] if single else docs)
        return
    rows = []
    for status in statuses:
        item, job = status.item, status.last_job
        last_skip = item.skipped[-1] if item.skipped else None
        rows.append([item.vm_name, item.policy_name, item.state.value,
                     job.status.value if job else ("Initial backup pending" if item.initial_backup_pending else ""),
                     format_time(job.start_time) if job else "", format_time(status.next_slot),
                     f"{format_time(last_skip.slot)}: {last_skip.reason}" if last_skip else ""])
    emit_table(rows, ["Name", "Policy", "Protection State", "Last Backup Status", "Last Backup Time UTC",
                      "Next Backup UTC", "Last Skipped Slot"])
