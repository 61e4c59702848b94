"""The handler's commands: ``enable`` (quick; spawns the daemon) and the daemon's backup run.

Order of work follows the real ``main/handle.py``: enable records seq and taskId, writes the
in-progress file status and returns; the daemon reads the settings, fails fast (16, 402), reports
code 4 to file and blob, runs pre-scripts, freezes, snapshots, thaws, runs post-scripts and reports
the final status. Every failure becomes a status; nothing is raised to the agent.
"""
from __future__ import annotations

import enum
import json
import logging
import os
import platform
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol, Sequence

from extension import scripts
from extension.blobs import BlobSnapshot, BlobWriteError, BlobWriter, classify, snapshot_blobs
from extension.codes import NOT_CONFIGURED, ExtensionCode, ExtErrorCode
from extension.config import PLUGIN_CONFIG_NAME, VMBACKUP_CONF_NAME, VmBackupConfig, etc_dir, waagent_dir
from extension.freeze import Freezer, FreezeError, FsFreezeFreezer, NoopFreezer, freeze_mounts, local_mounts
from extension.layout import (
    SEQ_ENV,
    HandlerEnvironment,
    LayoutError,
    atomic_write,
    last_seq,
    last_task_id,
    read_handler_settings,
    save_seq,
    save_task_id,
    scrub_protected_settings,
    write_extension_root,
)
from extension.runlog import RunLog, capture, redact
from extension.settings import (
    MAX_COMMAND_AGE_SECONDS,
    ONLY_HOST,
    CommandSettings,
    command_age_seconds,
    load_protected_settings,
    parse_settings,
)
from extension.status import Identity, Report, blob_status_text, file_status_text
from extension.transport import HttpClientTransport, HttpTransport

log = logging.getLogger(__name__)

EXTENSION_VERSION = "1.0.9999.0"  # a stand-in: never mistaken for a released VMSnapshotLinux
MACHINE_IDENTITY_FILE = "machine_identity_FD76C85E-406F-4CFA-8EB0-CF18B123365C"
TRANSITIONING = "Transitioning state in extension"
TOO_LATE = "CRP timeout limit has reached, will not take snapshot."
ONE_TIB = 1 << 40


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


def enable(
    root: Path, seq: int, *, spawn: Spawner | None = None, clock: Clock | None = None
) -> EnableResult:
    """Record seq and taskId, write the in-progress file status, start the daemon, return.

    A repeated sequence number or taskId returns without writing anything, as the real handler
    does. Raises :class:`extension.layout.LayoutError` when the root or settings are unreadable.
    """
    root = Path(root)
    env = HandlerEnvironment.load(root)
    env.log_folder.mkdir(parents=True, exist_ok=True)
    with capture(env.log_folder / "extension.log"):
        log.info("enable: sequence %s", seq)
        if last_seq(root) == seq:
            log.info("sequence %s was already processed: exiting", seq)
            return EnableResult.SAME_SEQ
        save_seq(root, seq)
        handler_settings = read_handler_settings(env, seq)
        settings = parse_settings(
            handler_settings.get("publicSettings") or {},
            load_protected_settings(handler_settings, waagent_dir()),
        )
        if settings.task_id and settings.task_id == last_task_id(root):
            log.info("taskId %s was already processed: exiting", settings.task_id)
            return EnableResult.SAME_TASK
        if settings.task_id:
            save_task_id(root, settings.task_id)
        # The file only: the blob is first written by the daemon (docs/status-format.md, the file form).
        StatusReporter(root, env, seq, settings, clock or SystemClock(), writer=None).report(
            "success", ExtensionCode.ExtensionTempTerminalState, TRANSITIONING,
            ext_error=ExtensionCode.success,
        )
        (spawn or spawn_daemon)(root, seq)
        log.info("daemon started for taskId %s", settings.task_id)
        return EnableResult.STARTED


def spawn_daemon(root: Path, seq: int) -> None:
    """``python -m extension daemon`` detached, output to ``daemon.log`` in the log folder."""
    env = HandlerEnvironment.load(root)
    package_parent = str(Path(__file__).resolve().parent.parent)
    environ = dict(os.environ)
    environ[SEQ_ENV] = str(seq)
    # Importable even when the package is not installed (copied onto a VM as a directory).
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, environ.get("PYTHONPATH")) if p)
    with open(env.log_folder / "daemon.log", "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "extension", "daemon"],
            cwd=root,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def run_daemon(
    root: Path,
    seq: int,
    *,
    clock: Clock | None = None,
    freezer: Freezer | None = None,
    http: HttpTransport | None = None,
    vmbackup_conf: Path | None = None,
    plugin_config_path: Path | None = None,
) -> dict:
    """Do the daemon's work in this process; return the final blob status element (``{}`` if none).

    None is returned as ``{}`` when no status can be written: no settings file, or no ``vmType``
    in the public settings (which the real handler needs to build any status).
    """
    root = Path(root)
    env = HandlerEnvironment.load(root)
    env.log_folder.mkdir(parents=True, exist_ok=True)
    conf = VmBackupConfig.load(vmbackup_conf if vmbackup_conf is not None else etc_dir() / VMBACKUP_CONF_NAME)
    mounts = freeze_mounts(os.environ, conf.mounts_to_skip)
    with capture(env.log_folder / "extension.log") as runlog:
        daemon = _Daemon(
            root=root,
            env=env,
            seq=seq,
            clock=clock or SystemClock(),
            freezer=freezer or (FsFreezeFreezer(freeze_wait=conf.safe_freeze_wait) if mounts else NoopFreezer()),
            mounts=mounts,
            http=http or HttpClientTransport(),
            conf=conf,
            plugin_config=plugin_config_path or etc_dir() / PLUGIN_CONFIG_NAME,
            runlog=runlog,
        )
        return daemon.run()


@dataclass
class Outcome:
    """The run result as it builds up: ``code`` is the result, not the health code."""

    status: str = "success"
    code: ExtensionCode = ExtensionCode.success
    message: str = ""
    snapshots: list[BlobSnapshot] | None = None

    def fail(self, code: ExtensionCode, message: str) -> None:
        self.status, self.code, self.message = "error", code, message

    @property
    def succeeded(self) -> bool:
        return self.code == ExtensionCode.success


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
    ) -> dict:
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
        return json.loads(blob_text)[0]


class _Daemon:
    def __init__(
        self,
        *,
        root: Path,
        env: HandlerEnvironment,
        seq: int,
        clock: Clock,
        freezer: Freezer,
        mounts: list[str],
        http: HttpTransport,
        conf: VmBackupConfig,
        plugin_config: Path,
        runlog: RunLog,
    ) -> None:
        self.root, self.env, self.seq, self.clock = root, env, seq, clock
        self.freezer, self.mounts, self.http, self.conf = freezer, mounts, http, conf
        self.plugin_config, self.runlog = plugin_config, runlog
        self.writer = BlobWriter(http)
        self.ext_error = ExtErrorCode()
        self.telemetry: dict[str, str] = {
            "pythonVersion": platform.python_version(),
            "platformArchitecture": platform.architecture()[0],
            "extensionVersion": EXTENSION_VERSION,
            "osVersion": platform.platform(),
            "kernelVersion": platform.release(),
        }
        self.snapshot_attempted = False
        self.settings = CommandSettings()
        self.reporter: StatusReporter | None = None

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> dict:
        log.info("daemon: sequence %s", self.seq)
        try:
            handler_settings = read_handler_settings(self.env, self.seq)
        except LayoutError as exc:  # nothing to report to without settings
            log.error("%s", exc)
            return {}
        public = handler_settings.get("publicSettings") or {}
        protected = load_protected_settings(handler_settings, waagent_dir())
        scrub_protected_settings(self.env, self.seq)
        self.settings = parse_settings(public, protected)
        self.reporter = StatusReporter(
            self.root, self.env, self.seq, self.settings, self.clock,
            self.writer if self.conf.upload_status_and_log else None,
        )
        log.info(
            "taskId %s, command %r, vmType %s, %d disk(s)",
            self.settings.task_id, self.settings.command, self.settings.vm_type,
            len(self.settings.blob_sas_uris),
        )
        if not public and not protected:
            return self.exit_with_commit_log(
                ExtensionCode.FailedHandlerGuestAgentCertificateNotFound, "unable to load certificate"
            )
        if self.too_late():
            return self.exit_with_commit_log(ExtensionCode.FailedGuestAgentInvokedCommandTooLate, TOO_LATE)

        outcome = Outcome()
        try:
            self.execute(outcome)
        except Exception as exc:
            # The real handler's catch-all: an unexpected failure still ends in a terminal status
            # (code 2, traceback in the log) so the job never sits at code 4 until it times out.
            log.exception("enable failed")
            outcome.fail(ExtensionCode.error, f"Enable failed.{exc}")
        self.ext_error.set(outcome.code)
        element = self.report(outcome, final=True)
        self.commit_log()
        return element

    def execute(self, outcome: Outcome) -> None:
        command = self.settings.command.lower()
        if "install" in command:
            outcome.message = "Install Succeeded"
        elif "snapshot" not in command:
            outcome.fail(ExtensionCode.error_parameter, "command is not correct")
        elif self.settings.backup_metadata is None or self.settings.public_object is None:
            outcome.fail(ExtensionCode.error_parameter, "required field empty or not correct")
        else:
            self.report(
                Outcome(code=ExtensionCode.ExtensionTempTerminalState, message=TRANSITIONING),
                final=False,
            )
            self.commit_log()  # the partial log, before anything can freeze
            self.backup(outcome)

    def backup(self, outcome: Outcome) -> None:
        method = self.settings.snapshot_method(self.conf.snapshot_method)
        log.info("snapshot method %s (guest snapshots only here)", method)
        if method == ONLY_HOST:
            outcome.fail(
                ExtensionCode.error,
                "Host snapshots (takeSnapshotFrom=onlyHost, or WA/VMGS/DirectDrive disks) need the "
                "Azure host backup service; this handler takes guest blob snapshots only",
            )
            return
        pre = scripts.pre_check(self.plugin_config)
        app_consistent = pre.code not in NOT_CONFIGURED
        if app_consistent:
            self.telemetry["isPrePostEnabled"] = "true"
        do_backup, config = pre.do_backup, pre.config
        pre_error = post_error = None
        if pre.ready and config is not None:
            pre_error = scripts.run_pre_script(config)
            # Without a freeze, a failed pre-script leaves nothing to make the snapshot consistent.
            do_backup = pre_error is None or (config.continue_on_failure and pre.fs_freeze)
        if do_backup:
            self.freeze_snapshot(outcome, freeze=pre.fs_freeze)
        if pre.ready and config is not None:
            post_error = scripts.run_post_script(config)
            if post_error is not None and not (config.continue_on_failure and pre.fs_freeze):
                do_backup = False

        if not do_backup and outcome.succeeded:
            if not pre.ready:
                outcome.fail(pre.code, "Plugin Host Precheck Failed" + pre.code.status_code_string())
            elif pre_error is not None:
                outcome.fail(
                    pre_error,
                    f"PreScript failed for the plugin {scripts.PLUGIN_NAME}" + pre_error.status_code_string(),
                )
            elif post_error is not None:
                outcome.fail(
                    post_error,
                    f"PostScript failed for the plugin {scripts.PLUGIN_NAME}" + post_error.status_code_string(),
                )
        if app_consistent:
            for code in (None if pre.ready else pre.code, pre_error, post_error):
                if code is not None:
                    self.ext_error.set(code)
        if outcome.succeeded and pre.ready and pre_error is None and post_error is None:
            outcome.code = ExtensionCode.success_appconsistent
            outcome.message = "Enable Succeeded with App Consistent Snapshot"
            self.ext_error.set(ExtensionCode.success_appconsistent)

    def freeze_snapshot(self, outcome: Outcome, *, freeze: bool) -> None:
        uris = self.settings.blob_sas_uris
        if not uris:
            outcome.fail(
                ExtensionCode.FailedRetryableSnapshotFailedNoNetwork,
                "T:S taking snapshot failed as blobs are empty or none",
            )
            self.ext_error.set(ExtensionCode.FailedRetryableSnapshotFailedNoNetwork)
            return
        frozen = False
        if freeze:
            started = time.monotonic()
            try:
                self.freezer.freeze(self.mounts, self.conf.freeze_timeout)
            except FreezeError as exc:
                outcome.fail(exc.code, f"T:S Enable failed with error: {exc}" + exc.code.status_code_string())
                self.ext_error.set(exc.code)
                return
            frozen = True
            self.telemetry["FreezeTime"] = f"{time.monotonic() - started:.3f}"
        else:
            log.info("fsFreezeEnabled is false: snapshotting without a freeze")

        results: list[BlobSnapshot] | None = None
        thawed_cleanly = True
        with self.runlog.hold():
            try:
                if self.too_late():
                    outcome.fail(ExtensionCode.FailedGuestAgentInvokedCommandTooLate, TOO_LATE)
                    self.ext_error.set(ExtensionCode.FailedGuestAgentInvokedCommandTooLate)
                else:
                    self.snapshot_attempted = True
                    self.telemetry["snapshotCreator"] = "guestExtension"
                    started = time.monotonic()
                    results = snapshot_blobs(self.http, uris, self.settings.backup_metadata or [])
                    self.telemetry["snapshotTimeTaken"] = f"{time.monotonic() - started:.3f}"
            finally:
                if frozen:
                    thawed_cleanly = self.freezer.thaw()
        if results is None:
            return
        outcome.snapshots = results
        if not thawed_cleanly:
            outcome.fail(ExtensionCode.error, "Snapshots are inconsistent: the file systems were thawed early")
            self.ext_error.set(ExtensionCode.error)
            return
        verdict = classify(results)
        if verdict.code != ExtensionCode.success:
            outcome.fail(verdict.code, verdict.message)
            self.ext_error.set(verdict.ext_error)

    # -- helpers ------------------------------------------------------------------------------

    def too_late(self) -> bool:
        """More than 140 min since commandStartTimeUTCTicks? A malformed value passes, as in the real one."""
        ticks = self.settings.command_start_ticks
        if ticks in (None, ""):
            return False
        age = command_age_seconds(ticks, self.clock.now())
        if age is None:
            log.warning("commandStartTimeUTCTicks %r is not an integer: staleness not checked", ticks)
            return False
        log.info("command issued %.0f s ago", age)
        return age > MAX_COMMAND_AGE_SECONDS

    def exit_with_commit_log(self, code: ExtensionCode, message: str) -> dict:
        log.error("%s", message)
        self.commit_log()
        self.ext_error.set(code)
        outcome = Outcome()
        outcome.fail(code, message)
        return self.report(outcome, final=True)

    def report(self, outcome: Outcome, *, final: bool) -> dict:
        assert self.reporter is not None
        telemetry = dict(self.telemetry)
        telemetry["consistencyType"] = "none"  # what the real handler reports (its code/int comparison quirk, docs/status-format.md)
        if final:
            telemetry["extErrorCode"] = self.ext_error.value.name
        return self.reporter.report(
            outcome.status,
            outcome.code,
            outcome.message,
            ext_error=self.ext_error.value,
            snapshots=outcome.snapshots,
            telemetry=list(telemetry.items()),
            suffix="snapshotCreator=guestExtension, " if self.snapshot_attempted else "",
            storage=self.storage_details() if final else (len(local_mounts()), 0, False),
        )

    def storage_details(self) -> tuple[int, int, bool]:
        """Partition count and used bytes of the local file systems, capped at 1 TiB per LUN."""
        mounts = local_mounts()
        used, failed = 0, False
        for mount in mounts:
            try:
                st = os.statvfs(mount)
            except OSError:
                failed = True
                continue
            used += (st.f_blocks - st.f_bfree) * st.f_frsize
        return len(mounts), min(used, ONE_TIB * len(self.settings.lun_list)), failed

    def commit_log(self) -> None:
        uri = self.settings.logs_blob_uri
        if not uri or not self.conf.upload_status_and_log:
            return
        try:
            self.writer.write(uri, self.runlog.text())
        except BlobWriteError as exc:
            log.warning("cannot write the log blob: %s", exc)


def _machine_id(root: Path) -> str:
    """``uniqueMachineId``: the VM's stored identity if any, else one kept in the extension root."""
    for path in (etc_dir() / MACHINE_IDENTITY_FILE, root / MACHINE_IDENTITY_FILE):
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if value:
            return value
    value = str(uuid.uuid4())
    try:
        atomic_write(root / MACHINE_IDENTITY_FILE, value)
    except OSError as exc:
        log.warning("cannot store the machine identity: %s", exc)
    return value


def run_foreground(settings_file: Path, root: Path) -> tuple[EnableResult, dict]:
    """Off Azure: take ``{"publicSettings", "protectedSettings"}`` from a file and run it now.

    The settings go to ``config/<n>.settings`` under ``root`` with the next sequence number, then
    enable's checks and the daemon's work run in this process. Returns what enable decided and the
    final blob status element.
    """
    doc = json.loads(Path(settings_file).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("publicSettings"), dict):
        raise ValueError(f"{settings_file}: expected an object with publicSettings")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    previous = last_seq(root)
    seq = 0 if previous is None else previous + 1
    thumbprint = doc.get("protectedSettingsCertThumbprint")
    protected = doc.get("protectedSettings") or ("" if thumbprint else {})
    write_extension_root(root, seq, doc["publicSettings"], protected, thumbprint)
    started: list[int] = []
    decision = enable(root, seq, spawn=lambda _root, n: started.append(n))
    if not started:
        return decision, {}
    return decision, run_daemon(root, seq)
