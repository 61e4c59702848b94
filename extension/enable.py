"""The handler's ``enable``: the quick step the guest agent runs and waits for.

It records the sequence number and taskId, writes the in-progress file status, starts the daemon
detached and returns. It imports only what that needs: the daemon's modules (HTTP, blob writes,
snapshots, scripts, freezing) and the cryptography package load in the daemon, never here.
"""
from __future__ import annotations

import enum
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TYPE_CHECKING, Callable, Protocol, Sequence

from extension.codes import ExtensionCode
from extension.config import etc_dir
from extension.layout import (
    HandlerEnvironment,
    atomic_write,
    last_seq,
    last_task_id,
    read_handler_settings,
    save_seq,
    save_task_id,
    scrub_protected_settings,
)
from extension.runlog import capture, redact
from extension.settings import CommandSettings, parse_settings
from extension.status import Identity, Report, blob_status_text, file_status_text

if TYPE_CHECKING:
    from extension.blobs import BlobSnapshot, BlobWriter

log = logging.getLogger(__name__)

MACHINE_IDENTITY_FILE = "machine_identity_FD76C85E-406F-4CFA-8EB0-CF18B123365C"
TRANSITIONING = "Transitioning state in extension"


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class EnableResult(enum.Enum):
    STARTED = "started"
    SAME_SEQ = "same sequence number: nothing to do"
    SAME_TASK = "same taskId: nothing to do"


Spawner = Callable[[Path, int], None]


def enable(root: Path, seq: int, *, spawn: Spawner, clock: Clock | None = None) -> EnableResult:
    """Record seq and taskId, write the in-progress file status, start the daemon, return.

    ``spawn(root, seq)`` starts the daemon: ``python -m extension enable`` forks it (see
    ``extension/__main__.py``); in-process callers pass their own. A repeated sequence number or
    taskId returns without any new status, as the real handler does. Raises
    :class:`extension.layout.LayoutError` when the root or settings are unreadable, and what
    ``spawn`` raises (the settings file then scrubbed).
    """
    root = Path(root)
    env = HandlerEnvironment.load(root)
    env.log_folder.mkdir(parents=True, exist_ok=True)
    with capture(env.log_folder / "extension.log"):
        log.info("enable: sequence %s", seq)
        if last_seq(root) == seq:
            # Its first enable already saw to the settings file: handed it to a daemon, which may
            # not have read it yet (so it is not touched here), or scrubbed it.
            log.info("sequence %s was already processed: exiting", seq)
            return EnableResult.SAME_SEQ
        # From here the protected settings leave the file whatever enable decides: the daemon
        # scrubs them once it has read them, and a command that reaches no daemon is scrubbed here.
        handed_over = False
        try:
            save_seq(root, seq)
            handler_settings = read_handler_settings(env, seq)
            # Everything enable needs (taskId, vmType, ticks) is public; only the daemon decrypts,
            # which keeps the agent's enable call free of the cryptography import and key work.
            settings = parse_settings(handler_settings.get("publicSettings") or {}, {})
            if settings.task_id and settings.task_id == last_task_id(root):
                log.info("taskId %s was already processed: exiting", settings.task_id)
                return EnableResult.SAME_TASK
            if settings.task_id:
                save_task_id(root, settings.task_id)
            # The file only: the blob is first written by the daemon, as in the real handler.
            StatusReporter(root, env, seq, settings, clock or SystemClock(), writer=None).report(
                "success", ExtensionCode.ExtensionTempTerminalState, TRANSITIONING,
                ext_error=ExtensionCode.success,
            )
            spawn(root, seq)
            handed_over = True
            log.info("daemon started for taskId %s", settings.task_id)
            return EnableResult.STARTED
        finally:
            if not handed_over:
                scrub_protected_settings(env, seq)


class StatusReporter:
    """Writes one report to the status blob (if a writer is given) and to ``status/<seq>.status``."""

    def __init__(
        self,
        root: Path,
        env: HandlerEnvironment,
        seq: int,
        settings: CommandSettings,
        clock: Clock,
        writer: BlobWriter | None,
    ) -> None:
        self._env = env
        self._seq = seq
        self._settings = settings
        self._clock = clock
        self._writer = writer
        self._identity = Identity(
            handler_name=env.name,
            version=env.version,
            task_id=settings.task_id,
            command_start_ticks=settings.command_start_ticks,
            unique_machine_id=_machine_id(root),
            is_v2=settings.is_v2,
        )
        self.upload_failed = False

    def report(
        self,
        status: str,
        code: ExtensionCode,
        message: str,
        *,
        ext_error: ExtensionCode,
        snapshots: Sequence[BlobSnapshot] | None = None,
        telemetry: Sequence[tuple[str, str]] = (),
        suffix: str = "",
        storage: tuple[int, int, bool] = (0, 0, False),
    ) -> dict[str, Any]:
        if not self._settings.vm_type:
            log.error("no vmType in the public settings: no status is written (as the real handler)")
            return {}
        now = self._clock.now()

        def build() -> tuple[Report, str]:
            upload_note = " statusBlobUploadError=true, " if self.upload_failed else ""
            report = Report(
                status=status,
                code=code,
                message=redact(message) + upload_note + suffix,
                ext_error=ext_error,
                snapshot_info=[s.to_status() for s in snapshots] if snapshots is not None else None,
                telemetry=[*telemetry, *([("statusBlobUploadError", "true")] if self.upload_failed else [])],
                partition_count=storage[0],
                total_used_size=storage[1],
                size_computation_failed=storage[2],
            )
            return report, blob_status_text(report, self._identity, now)

        report, blob_text = build()
        if self._writer is not None and self._settings.status_blob_uri:
            from extension.blobs import BlobWriteError  # only the daemon writes blobs

            try:
                self._writer.write(self._settings.status_blob_uri, blob_text)
                log.info("status blob written: code %s", int(code))
            except BlobWriteError as exc:
                log.warning("cannot write the status blob: %s", exc)
                if not self.upload_failed:
                    # The file, written next, is then the only channel: let it say so.
                    self.upload_failed = True
                    report, blob_text = build()
        self._env.status_folder.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self._env.status_file(self._seq), file_status_text(report, self._identity, blob_text, now)
        )
        log.info("status report: %s", blob_text)
        entry: dict[str, Any] = json.loads(blob_text)[0]
        return entry


def _machine_id(root: Path) -> str:
    """``uniqueMachineId``: the VM's stored identity if any, else one kept in the extension root."""
    for path in (etc_dir() / MACHINE_IDENTITY_FILE, root / MACHINE_IDENTITY_FILE):
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if value:
            return value
    import uuid  # once per VM; not on every enable's path

    value = str(uuid.uuid4())
    try:
        atomic_write(root / MACHINE_IDENTITY_FILE, value)
    except OSError as exc:
        log.warning("cannot store the machine identity: %s", exc)
    return value
