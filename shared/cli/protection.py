"""`vmsnap protection enable-for-vm|update-for-vm|disable|list|show|backup-now`, `vmsnap item
set-policy|list|show` and the top-level `vmsnap backup-now`, shaped like `az backup protection|item`."""
from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

from shared.cli import add_output_option
from shared.cli.job import LIST_HEADERS, list_row
from shared.cli.output import choice, emit, emit_table, format_time, name, Subparsers, add_vm_option
from shared.documents import item_document, job_document
from shared.domain.protection import DiskListSetting, DiskSelection
from shared.errors import ValidationError

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.services.protection import ItemStatus


def register(subparsers: Subparsers) -> None:
    group = subparsers.add_parser("protection", help="protect VMs with a policy, back them up now")
    sub = group.add_subparsers(dest="command", metavar="<command>", required=True)

    enable = sub.add_parser("enable-for-vm", help="protect a VM with a policy")
    add_vm_option(enable, "VM name", required=True, aliases=())
    enable.add_argument("-p", "--policy-name", default="DefaultPolicy", type=name("policy"),
                        help="policy (default: DefaultPolicy)")
    enable.add_argument("--no-initial-backup", action="store_true",
                        help="do not take a first backup at the next scheduler tick; wait for the first slot")
    add_output_option(enable)
    enable.set_defaults(handler=_enable)

    update = sub.add_parser("update-for-vm", help="choose which data disks a protected VM's backups take "
                                                  "(to change its policy: vmsnap item set-policy)")
    add_vm_option(update, required=True, aliases=())
    update.add_argument("--diskslist", "--disk-list", dest="disks", nargs="+", type=_luns, metavar="LUN",
                        help="data disk LUNs, e.g. 0 1 (or 0,1)")
    update.add_argument("--disk-list-setting", choices=("include", "exclude"),
                        type=choice(("include", "exclude")),
                        help="include: back up only the listed data disks; exclude: all but them")
    update.add_argument("--exclude-all-data-disks", action="store_true", help="back up the OS disk only")
    update.add_argument("--reset-exclusion-settings", action="store_true", help="back up every disk again")
    add_output_option(update)
    update.set_defaults(handler=_update, validate=_disk_arguments)

    disable = sub.add_parser("disable", help="stop protecting a VM (keep or delete its recovery points)")
    add_vm_option(disable, required=True, aliases=())
    disable.add_argument("--delete-backup-data", type=_boolean, nargs="?", const=True, default=False,
                         metavar="{true,false}",
                         help="also delete the recovery points (after 14 days of soft delete); alone it means true")
    disable.add_argument("-y", "--yes", action="store_true", help="do not ask to confirm deleting backup data")
    add_output_option(disable)
    disable.set_defaults(handler=_disable)

    for parent, noun in ((sub, "protected items"), (_item_group(subparsers), "backup items")):
        listing = parent.add_parser("list", help=f"list {noun} with their last backup and next slot")
        add_output_option(listing)
        listing.set_defaults(handler=_list)

        show = parent.add_parser("show", help="show one protected item, with the slots it skipped and why")
        add_vm_option(show, required=True, aliases=("--item-name", "-n", "--name"))
        add_output_option(show)
        show.set_defaults(handler=_show)

    for parent in (sub, subparsers):
        now = parent.add_parser("backup-now", help="back up a protected VM now (on demand)")
        add_vm_option(now, required=True)
        now.add_argument("--retain-until", type=_date, metavar="dd-mm-yyyy",
                         help="keep the recovery point until this date (UTC); default 30 days")
        now.add_argument("--dry-run", action="store_true",
                         help="print the extension resource that would be sent; create no job")
        add_output_option(now)
        now.set_defaults(handler=_backup_now)


def _item_group(subparsers: Subparsers) -> Subparsers:
    """``vmsnap item``, as ``az backup item``: set-policy changes a protected VM's policy."""
    group = subparsers.add_parser("item", help="protected VMs as backup items: show, list, set-policy")
    sub = group.add_subparsers(dest="command", metavar="<command>", required=True)
    set_policy = sub.add_parser("set-policy", help="move a protected VM to another policy")
    add_vm_option(set_policy, required=True, aliases=("--item-name", "-n", "--name"))
    set_policy.add_argument("-p", "--policy-name", required=True, type=name("policy"))
    add_output_option(set_policy)
    set_policy.set_defaults(handler=_set_policy)
    return sub


def _luns(text: str) -> list[int]:
    try:
        luns = [int(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of data disk LUNs, e.g. 0 1") from None
    if any(not 0 <= lun <= 63 for lun in luns):
        raise argparse.ArgumentTypeError(f"{text!r}: a data disk LUN is 0..63")
    return luns


def _disk_arguments(args: argparse.Namespace) -> None:
    chosen = sum((args.disks is not None, args.exclude_all_data_disks, args.reset_exclusion_settings))
    if chosen != 1 or (args.disks is not None) != (args.disk_list_setting is not None):
        raise ValidationError("give --diskslist with --disk-list-setting include|exclude, or "
                              "--exclude-all-data-disks, or --reset-exclusion-settings", field="diskslist")


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


def _enable(args: argparse.Namespace, services: Services) -> int:
    from shared.services.protection import enable_protection, get_protected_item, record_protection_job

    item = enable_protection(services, args.vm, args.policy_name, initial_backup=not args.no_initial_backup)
    record_protection_job(services, "ConfigureBackup", item)
    _emit_items(args, [get_protected_item(services, args.vm)], single=True)
    return 0


def _update(args: argparse.Namespace, services: Services) -> int:
    from shared.services.protection import get_protected_item, set_disk_selection

    if args.reset_exclusion_settings:
        selection = DiskSelection()
    elif args.exclude_all_data_disks:
        selection = DiskSelection(DiskListSetting.INCLUDE, ())
    else:
        luns = tuple(sorted({lun for group in args.disks for lun in group}))
        selection = DiskSelection(DiskListSetting(args.disk_list_setting.capitalize()), luns)
    set_disk_selection(services, args.vm, selection)
    _emit_items(args, [get_protected_item(services, args.vm)], single=True)
    return 0


def _set_policy(args: argparse.Namespace, services: Services) -> int:
    from shared.services.protection import change_policy, get_protected_item

    change_policy(services, args.vm, args.policy_name)
    _emit_items(args, [get_protected_item(services, args.vm)], single=True)
    return 0


def _disable(args: argparse.Namespace, services: Services) -> int:
    from shared.services.protection import disable_protection, get_protected_item, record_protection_job

    if args.delete_backup_data and not args.yes:
        raise ValidationError("--delete-backup-data true deletes the VM's recovery points after 14 days; "
                              "add --yes to confirm", field="yes")
    item = disable_protection(services, args.vm, delete_backup_data=args.delete_backup_data)
    record_protection_job(services, "DeleteBackupData" if args.delete_backup_data else "DisableBackup", item)
    _emit_items(args, [get_protected_item(services, args.vm)], single=True)
    return 0


def _list(args: argparse.Namespace, services: Services) -> int:
    from shared.services.protection import list_protected_items

    _emit_items(args, list_protected_items(services))
    return 0


def _show(args: argparse.Namespace, services: Services) -> int:
    from shared.services.protection import get_protected_item

    _emit_items(args, [get_protected_item(services, args.vm)], single=True)
    return 0


def _backup_now(args: argparse.Namespace, services: Services) -> int:
    if args.dry_run:
        from shared.services.dispatch import preview_extension_resource

        emit(args, preview_extension_resource(services, args.vm, retain_until=args.retain_until))
        return 0
    from shared.services.protection import backup_now

    job = backup_now(services, args.vm, retain_until=args.retain_until)
    now = services.clock.now()
    # The same document as `job show -o json`, as az returns the job of a trigger.
    emit(args, job_document(job, now), lambda: emit_table([list_row(job, now)], LIST_HEADERS))
    return 0


def _emit_items(args: argparse.Namespace, statuses: Iterable[ItemStatus], *, single: bool = False) -> None:
    listed = list(statuses)
    docs = [item_document(s) for s in listed]
    emit(args, docs[0] if single else docs, lambda: _items_table(listed))


def _items_table(statuses: list[ItemStatus]) -> None:
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
