"""The daemon's backup run, which ``enable`` (``extension.enable``) starts detached.

Order of work follows the real ``handle.py``: the daemon reads the settings, fails fast (16, 402),
reports code 4 to file and blob, runs pre-scripts, freezes, snapshots, thaws, runs post-scripts and
reports the final status. Every failure becomes a status; nothing is raised to the agent.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from extension import scripts, storage
from extension.blobs import BlobSnapshot, BlobWriteError, BlobWriter, classify, snapshot_blobs
from extension.codes import NOT_CONFIGURED, ExtensionCode, ExtErrorCode
from extension.config import PLUGIN_CONFIG_NAME, VMBACKUP_CONF_NAME, VmBackupConfig, etc_dir, waagent_dir
from extension.enable import TRANSITIONING, Clock, EnableResult, StatusReporter, SystemClock, enable
from extension.freeze import Freezer, FreezeError, FsFreezeFreezer, NoopFreezer, freeze_mounts
from extension.layout import (
    HandlerEnvironment,
    LayoutError,
    last_seq,
    read_handler_settings,
    scrub_protected_settings,
    write_extension_root,
)
from extension.runlog import RunLog, capture, shell_log_tail
from extension.settings import (
    FIRST_HOST_THEN_GUEST,
    MAX_COMMAND_AGE_SECONDS,
    ONLY_HOST,
    CommandSettings,
    command_age_seconds,
    load_protected_settings,
    parse_settings,
)
from extension.transport import HttpClientTransport, HttpTransport

log = logging.getLogger(__name__)

EXTENSION_VERSION = "1.0.9999.0"  # a stand-in: never mistaken for a released VMSnapshotLinux
TOO_LATE = "CRP timeout limit has reached, will not take snapshot."
EVERY_SNAPSHOT_FAILED = "Every guest snapshot failed; the log has each disk's storage error."
# Off Azure there is no agent log to read the guest agent's version from.
UNKNOWN_AGENT_VERSION = "Unknown"


def run_daemon(
    root: Path,
    seq: int,
    *,
    clock: Clock | None = None,
    freezer: Freezer | None = None,
    http: HttpTransport | None = None,
    vmbackup_conf: Path | None = None,
    plugin_config_path: Path | None = None,
) -> dict[str, Any]:
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
            "guestAgentVersion": UNKNOWN_AGENT_VERSION,
            "extensionVersion": EXTENSION_VERSION,
            "osVersion": platform.platform(),
            "kernelVersion": platform.release(),
            "workloads": "",  # no database workload path here
        }
        self.snapshot_attempted = False
        self.settings = CommandSettings()
        self.reporter: StatusReporter | None = None

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        log.info("daemon: sequence %s", self.seq)
        try:
            handler_settings = read_handler_settings(self.env, self.seq)
        except LayoutError as exc:  # nothing to report to without settings
            log.error("%s", exc)
            return {}
        public = handler_settings.get("publicSettings") or {}
        try:
            protected = load_protected_settings(handler_settings, waagent_dir())
        finally:
            # Read once, then gone from the VM's disk, even if decrypting failed (update_settings_file).
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
        self.telemetry["prePostEnabled"] = self.telemetry["isPrePostEnabled"] = str(app_consistent).lower()
        do_backup, config = pre.do_backup, pre.config
        pre_error = post_error = None
        if pre.ready and config is not None:
            pre_error = scripts.run_pre_script(config)
            # Without a freeze, a failed pre-script leaves nothing to make the snapshot consistent.
            do_backup = pre_error is None or (config.continue_on_failure and pre.fs_freeze)
        if do_backup:
            self.freeze_snapshot(outcome, freeze=pre.fs_freeze, method=method)
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

    def freeze_snapshot(self, outcome: Outcome, *, freeze: bool, method: str) -> None:
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
            self.telemetry["FreezeTime"] = _duration(started)
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
                    self.telemetry["snapshotTimeTaken"] = _duration(started)
            finally:
                if frozen:
                    started = time.monotonic()
                    thawed_cleanly = self.freezer.thaw()
                    self.telemetry["ThawTime"] = _duration(started)
        if results is None:
            return
        outcome.snapshots = results
        if not thawed_cleanly:
            outcome.fail(ExtensionCode.error, "Snapshots are inconsistent: the file systems were thawed early")
            self.ext_error.set(ExtensionCode.error)
            return
        verdict = classify(results)
        if verdict.every_disk_failed and method != FIRST_HOST_THEN_GUEST:
            # What the real handler reports when the guest path it was told to take fails for every
            # disk: its generic error, with no per-disk results (the host path would have given 76).
            outcome.snapshots = None
            outcome.fail(ExtensionCode.error, f"Enable failed. {EVERY_SNAPSHOT_FAILED}")
            self.ext_error.set(ExtensionCode.error)
        elif verdict.code != ExtensionCode.success:
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

    def exit_with_commit_log(self, code: ExtensionCode, message: str) -> dict[str, Any]:
        log.error("%s", message)
        self.commit_log()
        self.ext_error.set(code)
        outcome = Outcome()
        outcome.fail(code, message)
        return self.report(outcome, final=True, measure=False)

    def report(self, outcome: Outcome, *, final: bool, measure: bool = True) -> dict[str, Any]:
        """Measure the used storage for a final report, unless the run never got to the disks (a
        command refused as too late, or no settings): then, like the real handler, size 0."""
        assert self.reporter is not None
        too_late = outcome.code == ExtensionCode.FailedGuestAgentInvokedCommandTooLate
        telemetry = dict(self.telemetry)
        telemetry["consistencyType"] = "none"  # what the real handler reports (its consistency quirk)
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
            storage=self.storage_details(measure=final and measure and not too_late),
        )

    def storage_details(self, *, measure: bool) -> tuple[int, int, bool]:
        """Partition count, used bytes (capped at 1 TiB per LUN) and whether measuring failed."""
        if not measure:
            return storage.partition_count(), 0, False
        used = storage.measure().capped(len(self.settings.lun_list))
        return used.partition_count, used.used_bytes, used.failed

    def commit_log(self) -> None:
        uri = self.settings.logs_blob_uri
        if not uri or not self.conf.upload_status_and_log:
            return
        try:
            # As uploaded by the real handler: the run's log, then the tail of the shell script's
            # log, which shows the enable and daemon phases that led here.
            self.writer.write(uri, self.runlog.text() + shell_log_tail(self.env.log_folder))
        except BlobWriteError as exc:
            log.warning("cannot write the log blob: %s", exc)


def _duration(started: float) -> str:
    """A duration as the real handler's telemetry writes it: ``str(timedelta)``, ``0:00:01.234567``."""
    return str(timedelta(seconds=time.monotonic() - started))


def run_foreground(settings_file: Path, root: Path) -> tuple[EnableResult, dict[str, Any]]:
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
