"""What one status report means for a job (status, consistency, errors, per-disk results), before
job_transitions.py applies it: pure functions of the report and the disks the job asked for."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Collection, Sequence

from shared.domain import remediation
from shared.domain.inventory import OS_DISK_LUN
from shared.domain.jobs import Consistency, DiskResult, JobError, JobPhase, JobStatus
from shared.domain.status import DiskReport, StatusReport


@dataclass(frozen=True)
class ReportOutcome:
    """What one status report means for a job, before it is applied."""

    status: JobStatus
    phase: JobPhase
    consistency: Consistency | None
    errors: list[JobError]
    disks: list[DiskResult]
    backup_size_bytes: int | None


def interpret(report: StatusReport, disks: Sequence[DiskResult] = ()) -> ReportOutcome:
    """The job status, consistency, errors and per-disk results a report leads to."""
    disk_results = _disk_results(report, disks)
    if report.in_progress:
        return ReportOutcome(JobStatus.IN_PROGRESS, JobPhase.RUNNING, None, [], disk_results, None)
    size = None if report.size_computation_failed else report.backup_size_bytes
    detail = _detail(report)
    missing = _missing_blobs_error(disk_results, report.code, known=len(disks))
    if report.succeeded and (report.code in remediation.SUCCESS_CODES or report.warning):
        consistency = (Consistency.APPLICATION if report.code == 0
                       else Consistency.CRASH if report.snapshot_consistency == 3 else Consistency.FILE_SYSTEM)
        # A "warning" entry carries its cause in its code; a success, in the health code (e.g. a failed
        # script the backup went past).
        warnings = _code_errors([report.code, report.health_code], detail)
        if any(d.status == "Failed" for d in disk_results) and not warnings:
            warnings.append(JobError.from_remediation(remediation.for_extension_code(761),
                                                      extension_code=report.code))
        if report.warning and not warnings:
            warnings.append(JobError.from_remediation(
                remediation.for_service_error(remediation.EXTENSION_WARNING), detail=detail,
                extension_code=report.code))
        warnings = ([missing] if missing else []) + warnings
        status = JobStatus.COMPLETED_WITH_WARNINGS if warnings else JobStatus.COMPLETED
        return ReportOutcome(status, JobPhase.DONE, consistency, warnings, disk_results, size)
    # A failure whose codes both say success (a hostile or broken mix) is the generic error, never
    # "every disk was snapshotted".
    errors = _code_errors([report.code, report.health_code], detail) or _code_errors([2], detail)
    if missing:
        # First when the run failed on its snapshots (it decides the retry then); after the run's own
        # error when the run failed for another reason (a script, a late command) and only also names it.
        errors.insert(0 if report.code in _SNAPSHOT_FAILURE_CODES else 1, missing)
    if report.disks is None:
        disk_results = [replace(d, status="Failed", error=d.error or "no snapshot was taken")
                        if d.status == "Pending" else d for d in disk_results]
    return ReportOutcome(JobStatus.FAILED, JobPhase.DONE, None, errors, disk_results, size)


def _code_errors(codes: Sequence[int | None], detail: str | None) -> list[JobError]:
    """One error per distinct non-success code, the extension's words on the first; a later one keeps
    only the recommendations the first does not already give."""
    errors: list[JobError] = []
    for code in dict.fromkeys(c for c in codes if c is not None and c not in remediation.SUCCESS_CODES):
        error = JobError.from_remediation(remediation.for_extension_code(code), detail=None if errors else detail,
                                          extension_code=code)
        if errors:
            error.recommendations = [r for r in error.recommendations if r not in errors[0].recommendations]
        errors.append(error)
    return errors


# Storage's answer, condensed by scrub_text, when the disk's blob (or its container) is not there.
_BLOB_GONE = re.compile(r"^(BlobNotFound|ContainerNotFound)\b")
_BLOB_NOT_FOUND = "BlobNotFound"
# The codes a run whose snapshots failed ends with: 76, or 2 when the guest path failed for every disk
# (the handler then reports no per-disk results).
_SNAPSHOT_FAILURE_CODES = frozenset({2, 76})


def _missing_blobs_error(disks: Sequence[DiskResult], extension_code: int, *, known: int) -> JobError | None:
    """The error naming each disk whose blob storage says does not exist, and what to check. The first
    ``known`` disks are the job's (their LUN is known); any other is only the report's entry number."""
    gone = [(position, d) for position, d in enumerate(disks)
            if d.status == "Failed" and d.error and _BLOB_GONE.match(d.error)]
    if not gone:
        return None
    named = "; ".join(f"{_disk_label(d.lun) if position < known else f'disk #{position}'} "
                      f"({d.blob_url or 'blob URL not reported'}): {shorten(d.error, 160)}" for position, d in gone)
    return JobError.from_remediation(remediation.for_service_error(remediation.DISK_BLOB_MISSING), detail=named,
                                     extension_code=extension_code)


def _disk_label(lun: int) -> str:
    return f"LUN {lun} (OS disk)" if lun == OS_DISK_LUN else f"LUN {lun}"


def needs_disk_check(report: StatusReport) -> bool:
    """Whether a report is a snapshot failure that names no disk, so the service looks for itself which
    disks' blobs are gone: the handler's guest path reports code 2 and no per-disk results when the
    blob of every disk is missing."""
    return (not report.in_progress and not report.succeeded and report.disks is None
            and report.code in _SNAPSHOT_FAILURE_CODES)


def with_missing_blobs(report: StatusReport, disks: Sequence[DiskResult], missing: Collection[int]) -> StatusReport:
    """``report`` with a result for each of ``disks`` (by position): those at the positions in ``missing``
    failed because their blob does not exist, as the service found; the others gave no result."""
    found = (f"{_BLOB_NOT_FOUND}: the blob does not exist (the service looked after the extension reported "
             f"code {report.code} without per-disk results)")
    return replace(report, disks=tuple(
        DiskReport(index=position, successful=False, blob_uri=disk.blob_url,
                   error=found if position in missing else "the extension reported no result for this disk")
        for position, disk in enumerate(disks)))


def shorten(text: str | None, limit: int = 200) -> str | None:
    return text if text is None or len(text) <= limit else text[: limit - 3] + "..."


# --- helpers ----------------------------------------------------------------------------------

def _disk_results(report: StatusReport, disks: Sequence[DiskResult]) -> list[DiskResult]:
    """Match the report's per-disk entries to the job's disks by position (blobUri is null on failure)."""
    results = [replace(d) for d in disks]
    if report.in_progress or report.disks is None:
        return results
    for entry in report.disks:
        status = "Completed" if entry.successful else "Failed"
        if entry.index < len(results):
            current = results[entry.index]
            results[entry.index] = DiskResult(lun=current.lun, blob_url=current.blob_url or entry.blob_uri or "",
                                              status=status, snapshot_uri=entry.snapshot_uri, error=entry.error,
                                              direct_drive=entry.direct_drive)
        else:
            results.append(DiskResult(lun=entry.index, blob_url=entry.blob_uri or "", status=status,
                                      snapshot_uri=entry.snapshot_uri, error=entry.error,
                                      direct_drive=entry.direct_drive))
    for index in range(len(report.disks), len(results)):
        if results[index].status == "Pending":
            results[index] = replace(results[index], status="Failed",
                                     error="the extension reported no result for this disk")
    return results


_TELEMETRY_SUFFIX = re.compile(
    r"\s*\b(statusBlobUploadError|snapshotCreator|hostStatusCodePreSnapshot|hostStatusCodeDoSnapshot)=[^,]*,?")


def _detail(report: StatusReport) -> str | None:
    """The extension's own words, without the telemetry suffixes it appends to every message."""
    text = _TELEMETRY_SUFFIX.sub("", report.message).strip().rstrip(",").strip()
    return text or None
