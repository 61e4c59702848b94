"""Where the handler looks for the VM's own configuration, and ``vmbackup.conf``.

The real handler hard-codes ``/etc/azure`` and ``/var/lib/waagent``; here both can be moved with
environment variables so the handler runs unprivileged in tests and on hosts without those paths.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

log = logging.getLogger(__name__)

ETC_ENV = "VMSNAP_EXTENSION_ETC"
WAAGENT_ENV = "VMSNAP_WAAGENT_DIR"
FREEZE_MOUNTS_ENV = "VMSNAP_FREEZE_MOUNTS"
# Set only for a VM simulated on this machine: the file describing its page-blob disks.
VM_DISKS_ENV = "VMSNAP_VM_DISKS"

PLUGIN_CONFIG_NAME = "VMSnapshotScriptPluginConfig.json"
VMBACKUP_CONF_NAME = "vmbackup.conf"


def etc_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``/etc/azure``, or the directory named by ``VMSNAP_EXTENSION_ETC``."""
    return Path(env.get(ETC_ENV) or "/etc/azure")


def waagent_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where WALA drops the ``<thumbprint>.crt``/``.prv`` pair (``VMSNAP_WAAGENT_DIR`` overrides)."""
    return Path(env.get(WAAGENT_ENV) or "/var/lib/waagent")


@dataclass(frozen=True)
class VmBackupConfig:
    """The ``[SnapshotThread]`` knobs of ``vmbackup.conf`` this handler honours."""

    freeze_timeout: int = 60
    safe_freeze_wait: int = 66
    mounts_to_skip: tuple[str, ...] = field(default_factory=tuple)
    snapshot_method: str | None = None
    upload_status_and_log: bool = True

    @classmethod
    def load(cls, path: Path | None) -> "VmBackupConfig":
        """Read the file if it exists; a missing or unreadable file means all defaults."""
        if path is None or not path.is_file():
            return cls()
        import configparser  # the daemon reads the file; enable, which imports this module, never does

        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except configparser.Error as exc:
            log.warning("cannot parse %s, using defaults: %s", path, exc)
            return cls()
        if not parser.has_section("SnapshotThread"):
            return cls()
        section = parser["SnapshotThread"]
        defaults = cls()
        return cls(
            freeze_timeout=_int(section.get("timeout"), defaults.freeze_timeout),
            safe_freeze_wait=_int(section.get("SafeFreezeWaitInSeconds"), defaults.safe_freeze_wait),
            mounts_to_skip=tuple(
                m.strip() for m in section.get("MountsToSkip", "").split(",") if m.strip()
            ),
            snapshot_method=section.get("SnapshotMethod") or None,
            upload_status_and_log=section.get("UploadStatusAndLog", "True").strip() != "False",
        )


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        log.warning("ignoring non-integer vmbackup.conf value %r", value)
        return default
