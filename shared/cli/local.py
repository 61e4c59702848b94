"""`vmsnap local vm add|list|delete`: register LOCAL VMs (disks = page blobs in Azurite) in the local
inventory; `add --create-disks SIZE` makes the page blobs too."""
from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from shared.cli import add_output_option
from shared.cli.output import Subparsers, emit, emit_table, vm_name
from shared.domain.inventory import LOCAL_DISK_CONTAINER, OS_DISK_LUN, PAGE_BYTES, Disk, Vm, VmKind
from shared.errors import ValidationError

if TYPE_CHECKING:
    from shared.bootstrap import Services

_SIZE = re.compile(r"(?i)\s*(\d+)\s*([kmgt]?)i?b?\s*")


def register(subparsers: Subparsers) -> None:
    group = subparsers.add_parser("local", help="the local stack: simulated VMs")
    sub = group.add_subparsers(dest="command", metavar="<command>", required=True)
    vm = sub.add_parser("vm", help="local VMs in the inventory")
    vm_sub = vm.add_subparsers(dest="vm_command", metavar="<command>", required=True)

    add = vm_sub.add_parser("add", help="add (or replace) a local VM and its disk blobs")
    add.add_argument("--name", required=True, type=vm_name)
    add.add_argument("--os-disk", metavar="URL", help="page blob URL of the OS disk (LUN -1)")
    add.add_argument("--data-disk", metavar="LUN=URL", action="append", default=[], type=_data_disk,
                     help="a data disk: LUN 0..63 and its page blob URL; repeat for more")
    add.add_argument("--create-disks", metavar="SIZE", type=_size,
                     help=f"create the disks as page blobs of SIZE (e.g. 4MiB, 1G) in container "
                          f"{LOCAL_DISK_CONTAINER!r}: an OS disk and --data-disks data disks")
    add.add_argument("--data-disks", type=int, default=1, metavar="N",
                     help="with --create-disks: how many data disks (LUN 0..N-1, default 1)")
    add_output_option(add)
    add.set_defaults(handler=_add, validate=_add_arguments)

    listing = vm_sub.add_parser("list", help="list local VMs")
    add_output_option(listing)
    listing.set_defaults(handler=_list)

    delete = vm_sub.add_parser("delete", help="remove a local VM from the inventory (its blobs stay)")
    delete.add_argument("--name", required=True, type=vm_name)
    add_output_option(delete)
    delete.set_defaults(handler=_delete)


def _data_disk(text: str) -> Disk:
    lun, _, url = text.partition("=")
    if not lun.strip().isdigit() or not 0 <= int(lun) <= 63 or not re.match(r"https?://", url.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not LUN=URL with a LUN 0..63, e.g. "
                                         f"0=http://127.0.0.1:10000/devstoreaccount1/vhds/disk0.vhd")
    return Disk(lun=int(lun), blob_url=url.strip(), name=f"datadisk{int(lun)}")


def _size(text: str) -> int:
    match = _SIZE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: use bytes or e.g. 4MiB, 512K, 1G")
    size: int = int(match.group(1)) * 1024 ** " kmgt".index((match.group(2) or " ").lower())
    if size <= 0 or size % PAGE_BYTES:
        raise argparse.ArgumentTypeError(f"{text!r}: a page blob is a whole number of {PAGE_BYTES}-byte pages")
    return size


def _add_arguments(args: argparse.Namespace) -> None:
    if args.create_disks is not None and (args.os_disk or args.data_disk):
        raise ValidationError("give either --create-disks or the disks' URLs (--os-disk, --data-disk)",
                              field="create_disks")
    if not 0 <= args.data_disks <= 64:
        raise ValidationError("--data-disks is 0..64", field="data_disks")


def _add(args: argparse.Namespace, services: Services) -> int:
    disks = list(args.data_disk)
    if args.os_disk:
        disks.insert(0, Disk(lun=OS_DISK_LUN, blob_url=args.os_disk, name="osdisk"))
    if args.create_disks is not None:
        disks = services.local_vms.create_disks(args.name, args.create_disks, args.data_disks)
    vm = services.local_vms.put_vm(Vm(name=args.name, kind=VmKind.LOCAL, disks=tuple(disks)))
    _emit(args, [vm])
    return 0


def _list(args: argparse.Namespace, services: Services) -> int:
    _emit(args, list(services.local_vms.list_vms()))
    return 0


def _delete(args: argparse.Namespace, services: Services) -> int:
    services.local_vms.delete_vm(args.name)
    return 0


def _emit(args: argparse.Namespace, vms: list[Vm]) -> None:
    emit(args, [{"name": vm.name, "kind": vm.kind.value, "location": vm.location,
                 "disks": [{"lun": d.lun, "blobUrl": d.blob_url, "name": d.name} for d in vm.disks]}
                for vm in vms], lambda: _table(vms))


def _table(vms: list[Vm]) -> None:
    emit_table([[vm.name, vm.kind.value, str(len(vm.disks)),
                 " ".join(f"{'os' if d.lun == OS_DISK_LUN else d.lun}={d.blob_url}" for d in vm.disks)]
                for vm in vms], ["Name", "Kind", "Disks", "Blobs"])
