"""Pre/post scripts configured by ``VMSnapshotScriptPluginConfig.json`` (the ScriptRunner plugin: main/PluginHost.py, main/ScriptRunner.py).

Only the shipped plugin-host default is modelled (one ScriptRunner plugin reading that JSON); the
``VMSnapshotPluginHost.conf`` layer and its codes 304/313/314 are not.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from extension.codes import ExtensionCode
from extension.runlog import redact

log = logging.getLogger(__name__)

MAX_TIMEOUT = 1800  # the plugin host's cap
PLUGIN_NAME = "ScriptRunner"


@dataclass(frozen=True)
class ScriptPluginConfig:
    pre_script: str
    post_script: str
    pre_params: tuple[str, ...] = ()
    post_params: tuple[str, ...] = ()
    timeout: float = 10
    continue_on_failure: bool = True
    fs_freeze_enabled: bool = True
    plugin_name: str = PLUGIN_NAME
    poll_seconds: int = 3  # accepted for compatibility; scripts are waited on, not polled


@dataclass(frozen=True)
class PreCheck:
    """``PluginHost.pre_check``: its code (0 when the scripts are ready to run) and what it allows."""

    code: ExtensionCode
    do_backup: bool = True
    fs_freeze: bool = True
    config: ScriptPluginConfig | None = None

    @property
    def ready(self) -> bool:
        return self.code == ExtensionCode.success_appconsistent


def pre_check(config_path: Path) -> PreCheck:
    """Validate the plugin config and both scripts without running anything."""
    if not config_path.is_file():
        log.info("no script plugin config at %s: file-system consistent backup", config_path)
        return PreCheck(ExtensionCode.FailedPrepostPluginConfigNotFound)
    st = config_path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o177 or st.st_uid != 0:
        log.error(
            "plugin config %s must be owned by root with mode 600 or 400 (owner uid %s, mode %o)",
            config_path, st.st_uid, mode,
        )
        return PreCheck(ExtensionCode.FailedPrepostPluginConfigPermissionError)
    try:
        config = _load(config_path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("cannot use plugin config %s: %s", config_path, exc)
        return PreCheck(ExtensionCode.FailedPrepostPluginConfigParsing)
    log.info(
        "plugin %s: timeout %gs, continueBackupOnFailure %s, fsFreezeEnabled %s",
        config.plugin_name, config.timeout, config.continue_on_failure, config.fs_freeze_enabled,
    )
    for path, missing, bad in (
        (
            config.pre_script,
            ExtensionCode.FailedPrepostPreScriptNotFound,
            ExtensionCode.FailedPrepostPreScriptPermissionError,
        ),
        (
            config.post_script,
            ExtensionCode.FailedPrepostPostScriptNotFound,
            ExtensionCode.FailedPrepostPostScriptPermissionError,
        ),
    ):
        code = _check_script(Path(path), missing, bad)
        if code is not None:
            return PreCheck(code, config.continue_on_failure, config.fs_freeze_enabled, config)
    return PreCheck(
        ExtensionCode.success_appconsistent,
        config.continue_on_failure,
        config.fs_freeze_enabled,
        config,
    )


def _load(path: Path) -> ScriptPluginConfig:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("the plugin config must be a JSON object")
    return ScriptPluginConfig(
        pre_script=str(data["preScriptLocation"]),
        post_script=str(data["postScriptLocation"]),
        pre_params=tuple(str(p) for p in data.get("preScriptParams") or ()),
        post_params=tuple(str(p) for p in data.get("postScriptParams") or ()),
        timeout=min(float(data.get("timeoutInSeconds", 10)), MAX_TIMEOUT),
        continue_on_failure=_flag(data.get("continueBackupOnFailure", True)),
        fs_freeze_enabled=_flag(data.get("fsFreezeEnabled", True)),
        plugin_name=str(data.get("pluginName", PLUGIN_NAME)),
        poll_seconds=int(data.get("ScriptsExecutionPollTimeSeconds", 3)),
    )


def _flag(value: object) -> bool:
    """JSON booleans, and the strings "true"/"false" people write by hand."""
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got {value!r}")
        return value.strip().lower() == "true"
    return bool(value)


def _check_script(
    path: Path, missing: ExtensionCode, bad: ExtensionCode
) -> ExtensionCode | None:
    if not path.is_file():
        log.error("script %s does not exist", path)
        return missing
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077 or st.st_uid != 0:
        log.error(
            "script %s must be owned by root with no group/other permissions (owner uid %s, mode %o)",
            path, st.st_uid, stat.S_IMODE(st.st_mode),
        )
        return bad
    return None


def run_pre_script(config: ScriptPluginConfig) -> ExtensionCode | None:
    """Run the pre-script; None on success, else 300 (non-zero exit) or 308 (timeout)."""
    return _run(
        "pre",
        config.pre_script,
        config.pre_params,
        config.timeout,
        ExtensionCode.FailedPrepostPreScriptFailed,
        ExtensionCode.FailedPrepostPreScriptTimeout,
    )


def run_post_script(config: ScriptPluginConfig) -> ExtensionCode | None:
    """Run the post-script; None on success, else 301 (non-zero exit) or 309 (timeout)."""
    return _run(
        "post",
        config.post_script,
        config.post_params,
        config.timeout,
        ExtensionCode.FailedPrepostPostScriptFailed,
        ExtensionCode.FailedPrepostPostScriptTimeout,
    )


def _run(
    kind: str,
    script: str,
    params: tuple[str, ...],
    timeout: float,
    failed: ExtensionCode,
    timed_out: ExtensionCode,
) -> ExtensionCode | None:
    log.info("running %s-script %s", kind, script)
    # A session of its own, so a timeout kills the whole script, not just its sh.
    proc = subprocess.Popen(
        ["sh", script, *params],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        log.error("%s-script %s timed out after %g s", kind, script, timeout)
        return timed_out
    tail = redact(output.decode("utf-8", errors="replace")[-2000:].strip())
    if proc.returncode != 0:
        log.error("%s-script %s exited %s: %s", kind, script, proc.returncode, tail)
        return failed
    log.info("%s-script %s succeeded%s", kind, script, f": {tail}" if tail else "")
    return None
