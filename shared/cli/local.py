"""`vmsnap local vm add|list|delete`: register LOCAL VMs (disks = page blobs in Azurite) in the local inventory."""
from __future__ import annotations

import argparse

from shared.cli import add_output_option
from shared.cli.output import emit_json, emit_table
from shared.domain.inventory import OS_DISK_LUN, Disk, Vm, VmKind


def register(subparsers) -> None:
    group = subparsers.add_parser("local", help="the local stack: simulated VMs")
    sub = group.add_subparsers(dest="command", metavar="<command>", required=True)
    vm = sub.add_parser("vm", help="local VMs in the inventory")
    vm_sub = vm.add_subparsers(dest="vm_command", metavar="<command>", required=True)

    add = vm_sub.add_parser("add", help="add (or replace) a local VM and its disk blobs")
    add.add_argument("--name", required=True)
    add.add_argument("--os-disk", metavar="URL", help="page blob URL of the OS disk (LUN -1)")
    add.add_argument("--data-disk", metavar="LUN=URL", action="append", default=[], type=_data_disk,
                     help="a data disk: LUN 0..63 and its page blob URL; repeat for more")
    add_output_option(add)
    add.set_defaults(handler=_add)

    listing = vm_sub.add_parser("list", help="list local VMs")
    add_output_option(listing)
    listing.set_defaults(handler=_list)

    delete = vm_sub.add_parser("delete", help="remove a local VM from the inventory (its blobs stay)")
    delete.add_argument("--name", required=True)
    delete.set_defaults(handler=_delete)


def _data_disk(text: str) -> Disk:
    lun, sep, url = text.partition("=")
    try:
        return Disk(lun=int(lun), blob_url=url.strip(), name=f"datadisk{int(lun)}")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LUN=URL, e.g. 0=http://.../disk0.vhd") from None


def _inventory(services):
    from shared.adapters.table_protection import TableInventory

    return TableInventory(services.table_service, services.settings.table("vms"))


def _add(args, services) -> int:
    disks = list(args.data_disk)
    if args.os_disk:
        disks.insert(0, Disk(lun=OS_DISK_LUN, blob_url=args.os_disk, name="osdisk"))
    vm = _inventory(services).put_vm(Vm(name=args.name, kind=VmKind.LOCAL, disks=tuple(disks)))
    _emit(args, [vm])
    return 0


def _list(args, services) -> int:
    _emit(args, list(_inventory(services).list_vms()))
    return 0


def _delete(args, services) -> int:
    _inventory(services).delete_vm(args.name)
    return 0


def _emit(args, vms: list[Vm]) -> None:
    if args.output == "json":
        emit_json([{"name": vm.name, "kind": vm.kind.value, "location": vm.location,
                    "disks": [{"lun": d.lun, "blobUrl": d.blob_url, "name": d.name} for d in vm.disks]}
                   for vm in vms])
        return
    emit_table([[vm.name, vm.kind.value, str(len(vm.disks)),
                 " ".join(f"{'os' if d.lun == OS_DISK_LUN else d.lun}={d.blob_url}" for d in vm.disks)]
                for vm in vms], ["Name", "Kind", "Disks", "Blobs"])
