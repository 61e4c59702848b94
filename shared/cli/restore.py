"""``vmsnap restore restore-disks``: copy a recovery point's disks into a container, as a Restore job."""
from __future__ import annotations

import sys
from typing import Any

from shared.cli.job import job_document, write_job_block
from shared.cli.output import EXIT_FAILED, EXIT_OK, emit_json
from shared.domain.jobs import JobStatus
from shared.services.restore import restore_disks


def register(subparsers: Any) -> None:
    from shared.cli import add_output_option

    group = subparsers.add_parser("restore", help="restore the disks of a recovery point (like az backup restore)")
    sub = group.add_subparsers(dest="command", metavar="<command>")
    cmd = sub.add_parser("restore-disks", help="copy each disk snapshot of a point into a new page blob in "
                                                "the target container, verified; prints the Restore job")
    cmd.add_argument("--vm", "--item-name", dest="vm", required=True, help="the VM")
    cmd.add_argument("--rp-name", required=True, help="the recovery point (vmsnap recoverypoint list)")
    cmd.add_argument("--target-container", required=True, help="the container to restore into (created if missing)")
    cmd.add_argument("--disk", type=int, metavar="LUN", help="restore only this disk (-1 is the OS disk)")
    cmd.add_argument("--overwrite", action="store_true", help="replace blobs that already exist in the container")
    add_output_option(cmd)
    cmd.set_defaults(handler=restore_command)


def restore_command(args: Any, svc: Any) -> int:
    job = restore_disks(svc, args.vm, args.rp_name, args.target_container, lun=args.disk, overwrite=args.overwrite)
    if args.output == "json":
        emit_json(job_document(job, svc.clock.now()))
    else:
        write_job_block(job, svc.clock.now(), sys.stdout)
    return EXIT_OK if job.status is JobStatus.COMPLETED else EXIT_FAILED
