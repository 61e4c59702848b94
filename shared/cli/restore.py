"""``vmsnap restore restore-disks``: restore a recovery point's disks, as a Restore job: page-blob
snapshots into a container, restore points into new managed disks in a resource group."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from shared.cli.job import job_document, write_job_block
from shared.cli.output import EXIT_FAILED, EXIT_OK, emit, vm_name
from shared.domain.jobs import JobStatus
from shared.services.restore import restore_disks


def register(subparsers: Any) -> None:
    from shared.cli import add_output_option

    group = subparsers.add_parser("restore", help="restore the disks of a recovery point (like az backup restore)")
    sub = group.add_subparsers(dest="command", metavar="<command>")
    cmd = sub.add_parser("restore-disks", help="restore each disk of a point, verified; prints the Restore job")
    cmd.add_argument("--vm", "--item-name", dest="vm", required=True, type=vm_name, help="the VM")
    cmd.add_argument("--rp-name", required=True, help="the recovery point (vmsnap recoverypoint list)")
    target = cmd.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-container", help="page-blob VMs: the container to copy each snapshot into "
                                                   "(created if missing)")
    target.add_argument("--target-resource-group", help="managed-disk VMs: the resource group to create a disk "
                                                        "in from each disk restore point")
    cmd.add_argument("--disk", type=int, metavar="LUN", help="restore only this disk (-1 is the OS disk)")
    cmd.add_argument("--overwrite", action="store_true",
                     help="replace blobs that already exist in the container (managed disks are never replaced)")
    add_output_option(cmd)
    cmd.set_defaults(handler=restore_command)


def restore_command(args: argparse.Namespace, svc: Any) -> int:
    job = restore_disks(svc, args.vm, args.rp_name, args.target_container,
                        target_resource_group=args.target_resource_group, lun=args.disk, overwrite=args.overwrite)
    now = svc.clock.now()
    emit(args, job_document(job, now), lambda: write_job_block(job, now, sys.stdout))
    return EXIT_OK if job.status is JobStatus.COMPLETED else EXIT_FAILED
