"""``vmsnap job list|show|wait``, shaped like ``az backup job``: the same columns, filters and exit codes."""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, TextIO


from shared.cli.output import (EXIT_FAILED, EXIT_OK, choice, emit, emit_table, format_duration, format_time,
                               Subparsers, add_vm_option, table_text)
from shared.documents import describe_code, format_size, job_document, job_duration, lun_label
from shared.domain.jobs import DiskResult, Job, JobError, JobPhase, JobStatus
from shared.domain.restore import RESTORE_TEST, drill_result, is_restore, progress_percentage
from shared.domain.task import validate_job_id
from shared.domain.when import parse_when
from shared.errors import NotFoundError, TransientError, ValidationError
from shared.services.job_listing import OPERATIONS, JobFilter
from shared.services.job_listing import list_jobs as list_job_records

if TYPE_CHECKING:
    from shared.bootstrap import Services

LIST_HEADERS = ("Name", "Operation", "Status", "Item Name", "Start Time UTC", "Duration")


def register(subparsers: Subparsers) -> None:
    from shared.cli import add_output_option

    group = subparsers.add_parser("job", help="list, show, stop and wait for backup jobs (like az backup job)")
    sub = group.add_subparsers(dest="command", metavar="<command>")

    list_cmd = sub.add_parser("list", help="list jobs, newest first (default: the last 7 days)")
    add_vm_option(list_cmd, "only jobs of this VM (all time unless --since)")
    statuses = [s.value for s in JobStatus]
    list_cmd.add_argument("--status", choices=statuses, type=choice(statuses), help="any case, e.g. failed")
    list_cmd.add_argument("--operation", choices=OPERATIONS, type=choice(OPERATIONS))
    list_cmd.add_argument("--since", "--start-date", dest="since", type=_when_argument(end=False),
                          help="jobs whose slot is at or after this UTC time (ISO 8601 or d-m-Y)")
    list_cmd.add_argument("--until", "--end-date", dest="until", type=_when_argument(end=True),
                          help="jobs whose slot is before this UTC time (a bare date includes that day)")
    list_cmd.add_argument("--top", type=int, default=100, help="at most this many jobs (default 100)")
    add_output_option(list_cmd)
    list_cmd.set_defaults(handler=list_jobs)

    show = sub.add_parser("show", help="every detail of one job, errors with recommended actions")
    show.add_argument("job_id", nargs="?", metavar="ID", help="the job id (or use --name)")
    show.add_argument("-n", "--name", help="the job id, as az names it")
    add_output_option(show)
    show.set_defaults(handler=show_job, validate=_job_id)

    stop = sub.add_parser("stop", help="cancel a job whose command has not reached the VM yet (exit 4 if it has)")
    stop.add_argument("job_id", nargs="?", metavar="ID", help="the job id (or use --name)")
    stop.add_argument("-n", "--name", help="the job id")
    add_output_option(stop)
    stop.set_defaults(handler=stop_job_command, validate=_job_id)

    wait = sub.add_parser("wait", help="wait until a job finishes: exit 0 completed, 1 failed, 6 timed out")
    wait.add_argument("job_id", nargs="?", metavar="ID", help="the job id (or use --name)")
    wait.add_argument("-n", "--name", help="the job id")
    wait.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait (default 3600)")
    wait.add_argument("--interval", type=float, default=5.0, help="seconds between checks (default 5)")
    add_output_option(wait)
    wait.set_defaults(handler=wait_job, validate=_job_id)


# --- handlers -------------------------------------------------------------------------------

def list_jobs(args: argparse.Namespace, svc: Services) -> int:
    jobs = JobFilter(vm=args.vm, status=JobStatus(args.status) if args.status else None, operation=args.operation,
                     since=args.since, until=args.until)
    found = list_job_records(svc, jobs, args.top)
    now = svc.clock.now()
    emit(args, [job_document(job, now) for job in found],
         lambda: emit_table([list_row(job, now) for job in found], LIST_HEADERS))
    return EXIT_OK


def show_job(args: argparse.Namespace, svc: Services) -> int:
    job = _load(svc, _job_id(args))
    now = svc.clock.now()
    emit(args, job_document(job, now), lambda: write_job_block(job, now, sys.stdout))
    return EXIT_OK


def stop_job_command(args: argparse.Namespace, svc: Services) -> int:
    from shared.services.job_control import stop_job

    job = stop_job(svc, _job_id(args))
    emit(args, job_document(job, svc.clock.now()),
         lambda: print(f"{job.job_id} {job.status.value} {job.vm_name} (slot {format_time(job.slot)})"))
    return EXIT_OK


def wait_job(args: argparse.Namespace, svc: Services) -> int:
    job_id = _job_id(args)
    if args.timeout < 0 or args.interval <= 0:
        raise ValidationError("--timeout must be >= 0 and --interval > 0", field="timeout")
    deadline = time.monotonic() + args.timeout
    progress = _Progress(sys.stderr)
    while True:
        job = _load(svc, job_id)
        if job.is_terminal:
            progress.done()
            now = svc.clock.now()
            emit(args, job_document(job, now),
                 lambda: print(f"{job.job_id} {job.status.value} {job.vm_name} "
                               f"{format_duration(job.duration)}{_first_error(job)}"))
            return EXIT_OK if job.status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS) else EXIT_FAILED
        # Shown before the deadline is checked: each state read is drawn, however slow the read was.
        progress.show(job, svc.clock.now())
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            progress.done()
            raise TransientError(f"job {job.job_id} is still {job.status.value} ({job.phase.value}) after "
                                 f"{args.timeout:g} s")
        time.sleep(min(args.interval, remaining))


# --- rendering (also used by ``status show``) ------------------------------------------------

def list_row(job: Job, now: datetime) -> list[str]:
    return [job.job_id, job.operation, job.status.value, job.vm_name, format_time(job.start_time),
            format_duration(job_duration(job, now))]


def write_job_block(job: Job, now: datetime, out: TextIO) -> None:
    fields = [
        ("Name", job.job_id), ("Operation", job.operation), ("Status", job.status.value),
        ("Item Name", job.vm_name), ("Policy", job.policy_name or ""), ("Trigger", job.trigger.value),
        ("Slot UTC", format_time(job.slot)), ("Start Time UTC", format_time(job.start_time)),
        ("End Time UTC", format_time(job.end_time)), ("Duration", format_duration(job_duration(job, now))),
        ("Phase", job.phase.value), ("Attempt", f"{job.attempt} (task {job.task_id or '-'})"),
        ("Consistency", job.consistency.value if job.consistency else ""), ("Backup Method", job.backup_method.value if job.backup_method else ""),
        ("Backup Size", format_size(job.backup_size_bytes)),
        ("Extension Code", describe_code(job.extension_code)), ("Health Code", describe_code(job.health_code)),
        ("Status Blob", job.status_blob or ""), ("Log Blob", job.log_blob or ""),
    ]
    if job.retain_until:
        fields.insert(7, ("Retain Until UTC", format_time(job.retain_until)))
    if is_restore(job):
        percent = 100.0 if job.status is JobStatus.COMPLETED else progress_percentage(job.disks)
        fields.append(("Progress", "" if percent is None else f"{percent:.1f} %"))
        if job.operation == RESTORE_TEST:
            fields.append(("Result", drill_result(job) or "running"))
    out.write(table_text(fields, fmt="plain") + "\n")
    if is_restore(job):
        write_restored_disks(job.disks, out)
        if job.checks:
            out.write("\nChecks\n")
            emit_table([[c.name, "Passed" if c.passed else "Failed", c.detail] for c in job.checks],
                       ("Check", "Result", "Detail"), stream=out)
    else:
        write_disks(job.disks, out)
    write_attempts(job, out)
    write_errors(job.errors, out, heading=_errors_heading(job))
    if job.notes:
        out.write("\nNotes\n" + "".join(f"  - {note}\n" for note in job.notes))


def _errors_heading(job: Job) -> str:
    if job.status is JobStatus.COMPLETED_WITH_WARNINGS:
        return "Warnings"
    if job.status is JobStatus.IN_PROGRESS and job.attempt > 1 and job.last_report_at is None:
        return f"Errors of attempt {job.attempt - 1} (retrying as attempt {job.attempt})"
    return "Errors"


def write_attempts(job: Job, out: TextIO) -> None:
    """Every attempt of a job that needed more than one: how each earlier one ended, and the current one."""
    if not job.attempts:
        return
    rows = [[a.attempt, a.task_id, a.outcome.value, _attempt_code(a.error_code, a.extension_code),
             format_time(a.dispatched_at), format_time(a.ended_at), format_time(a.retry_at)] for a in job.attempts]
    current = job.status.value if job.is_terminal else job.phase.value
    code = _attempt_code(job.errors[0].error_code, job.extension_code) if job.is_terminal and job.errors else ""
    dispatched = None if job.phase is JobPhase.QUEUED else job.dispatched_at   # a waiting attempt has none yet
    rows.append([job.attempt, job.expected_task_id, current, code, format_time(dispatched),
                 format_time(job.end_time), ""])
    rows.sort(key=lambda row: row[0])       # an earlier attempt may be the one that ended the job
    out.write("\nAttempts\n")
    emit_table(rows, ("Attempt", "Task", "Outcome", "Code", "Dispatched UTC", "Ended UTC", "Retry At UTC"),
               stream=out)


def _attempt_code(error_code: str | None, extension_code: int | None) -> str:
    return " ".join(part for part in (error_code, f"({extension_code})" if extension_code is not None else None)
                    if part)


def write_disks(disks: list[DiskResult], out: TextIO, *, by_position: bool = False) -> None:
    """Per-disk results; ``by_position`` when LUNs are unknown (a report read on its own)."""
    if not disks:
        return
    out.write("\nDisks\n")
    rows = [[f"#{i}" if by_position else lun_label(d), d.status, d.blob_url, _snapshot_or_error(d)]
            for i, d in enumerate(disks)]
    emit_table(rows, ("Disk", "Status", "Blob", "Snapshot / Error"), stream=out)


def write_restored_disks(disks: list[DiskResult], out: TextIO) -> None:
    """A restore's disks: status, bytes copied, the restored disk and its source (and safety copy; for a
    managed disk swapped in, the disk it replaced)."""
    if not disks:
        return
    out.write("\nDisks\n")
    swapped = any(d.replaced for d in disks)
    rows = [[lun_label(d), d.status, _bytes(d), d.blob_url, d.error or d.snapshot_uri or "", d.safety_copy or ""]
            + ([d.replaced or ""] if swapped else []) for d in disks]
    emit_table(rows, ("Disk", "Status", "Copied", "Restored Disk", "Source / Error", "Safety Copy")
               + (("Replaced Disk",) if swapped else ()), stream=out)


def _bytes(disk: DiskResult) -> str:
    if disk.bytes_total is None:
        return ""
    return f"{(disk.bytes_done or 0) // 2**20}/{disk.bytes_total // 2**20} MiB"


def write_errors(errors: list[JobError], out: TextIO, heading: str = "Errors") -> None:
    for error in errors:
        out.write(f"\n{heading}: {error.error_code}" + (f" - {error.error_title}" if error.error_title else "") + "\n")
        out.write(f"  {error.error_string}\n")
        if error.extension_code is not None:
            out.write(f"  Extension code: {describe_code(error.extension_code)}\n")
        out.write(f"  Retry can help: {'yes' if error.retryable else 'no'}\n")
        if error.recommendations:
            out.write("  Recommended actions:\n" + "".join(f"    - {r}\n" for r in error.recommendations))


class _Progress:
    """``job wait``'s live line on a terminal: a progress bar for a restore (rich), the job's state for
    others; nothing when stderr is piped or logged (``-o json`` output stays clean)."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._live = stream.isatty()
        self._shown = False
        self._bar: Any = None
        self._task: Any = None

    def show(self, job: Job, now: datetime) -> None:
        if not self._live:
            return
        if is_restore(job):
            self._show_bar(job)
            return
        line = (f"{job.job_id} {job.status.value} ({job.phase.value}, attempt {job.attempt}) "
                f"{format_duration(job_duration(job, now))}")
        self._stream.write("\r\033[K" + line)
        self._stream.flush()
        self._shown = True

    def _show_bar(self, job: Job) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        if self._bar is None:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TimeElapsedColumn(), console=Console(file=self._stream), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(f"{job.operation} {job.vm_name}", total=100.0)
        copied = sum(d.bytes_done or 0 for d in job.disks) // 2**20
        self._bar.update(self._task, completed=progress_percentage(job.disks) or 0.0,
                         description=f"{job.operation} {job.vm_name} ({job.phase.value}, {copied} MiB)")

    def done(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        if self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()


def _when_argument(*, end: bool) -> Callable[[str], datetime]:
    """``parse_when`` as an argparse type: a bad date is a usage error (exit 2) naming the option."""
    import argparse

    def convert(value: str) -> datetime:
        try:
            return parse_when(value, end=end)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


# --- helpers ----------------------------------------------------------------------------------

def _job_id(args: argparse.Namespace) -> str:
    job_id = args.name or args.job_id
    if not job_id:
        raise ValidationError(f"give the job id: vmsnap job {args.command} --name <id>", field="name")
    return validate_job_id(job_id.strip(), field="name")


def _load(svc: Services, job_id: str) -> Job:
    job = svc.jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} not found")
    return job


def _snapshot_or_error(disk: DiskResult) -> str:
    """What the disk's row shows: its blob snapshot, its Direct Drive snapshot (by id), or its error."""
    if disk.snapshot_uri:
        return disk.snapshot_uri
    if disk.direct_drive:
        return f"Direct Drive snapshot {disk.direct_drive.id}"
    return disk.error or ""


def _first_error(job: Job) -> str:
    return f" {job.errors[0].error_code}: {job.errors[0].error_title}" if job.errors else ""
