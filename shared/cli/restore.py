"""``vmsnap restore restore-disks``: ask the service to restore a recovery point's disks, as az does: the
command creates the Restore job, queues it and prints it at once (``job show`` / ``job wait`` follow it)."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from shared.cli.job import write_job_block
from shared.cli.output import EXIT_OK, choice, emit, Subparsers, add_vm_option
from shared.documents import job_document
from shared.domain.restore import RestoreMode
from shared.services.restore import request_restore

if TYPE_CHECKING:
    from shared.bootstrap import Services

MODES = [m.value for m in RestoreMode]


def register(subparsers: Subparsers) -> None:
    from shared.cli import add_output_option

    group = subparsers.add_parser("restore", help="restore the disks of a recovery point (like az backup restore)")
    sub = group.add_subparsers(dest="command", metavar="<command>")
    cmd = sub.add_parser("restore-disks", help="start a restore of each disk of a point, verified; prints the "
                                               "Restore job at once")
    add_vm_option(cmd, "the VM", required=True)
    cmd.add_argument("--rp-name", required=True, help="the recovery point (vmsnap recoverypoint list)")
    target = cmd.add_mutually_exclusive_group()
    target.add_argument("--target-container", help="page-blob VMs: the container to copy each snapshot into "
                                                   "(created if missing)")
    target.add_argument("--target-resource-group", help="managed-disk VMs: the resource group to create a disk "
                                                        "in from each disk restore point")
    cmd.add_argument("--restore-mode", default=RestoreMode.ALTERNATE.value, choices=MODES, type=choice(MODES),
                     help="AlternateLocation (default): new blobs / disks; OriginalLocation: replace the VM's own "
                          "disks (the VM stopped; a safety snapshot of each replaced disk is kept)")
    cmd.add_argument("--yes", "-y", action="store_true", help="confirm an OriginalLocation restore")
    cmd.add_argument("--disk", type=int, metavar="LUN", help="restore only this disk (-1 is the OS disk)")
    add_output_option(cmd)
    cmd.set_defaults(handler=restore_command)


def restore_command(args: argparse.Namespace, svc: Services) -> int:
    job = request_restore(svc, args.vm, args.rp_name, args.target_container,
                          target_resource_group=args.target_resource_group, lun=args.disk,
                          mode=RestoreMode(args.restore_mode), confirmed=args.yes)
    now = svc.clock.now()
    emit(args, job_document(job, now), lambda: write_job_block(job, now, sys.stdout))
    return EXIT_OK
