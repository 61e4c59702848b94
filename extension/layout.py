"""The extension root as WALA lays it out: HandlerEnvironment.json, config/, status/, log/.

Also the handler's own state files in that root: ``mrseq`` (last sequence number) and the taskId
identity file, which make a repeated command a silent no-op.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

HANDLER_NAME = "Microsoft.Azure.RecoveryServices.VMSnapshotLinux"
PROTOCOL_VERSION = "1.0"
MRSEQ_FILE = "mrseq"
TASK_IDENTITY_FILE = "task_identity_FD76C85E-406F-4CFA-8EB0-CF18B123365C"
SEQ_ENV = "ConfigSequenceNumber"


class LayoutError(Exception):
    """The extension root is unusable: no HandlerEnvironment.json or no settings for the sequence."""


@dataclass(frozen=True)
class HandlerEnvironment:
    name: str
    version: str
    log_folder: Path
    config_folder: Path
    status_folder: Path
    heartbeat_file: Path

    @classmethod
    def load(cls, root: Path) -> "HandlerEnvironment":
        path = root / "HandlerEnvironment.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            first = doc[0]
            env = first["handlerEnvironment"]
            return cls(
                name=str(first.get("name") or HANDLER_NAME),
                version=str(first.get("version") or PROTOCOL_VERSION),
                log_folder=root / env["logFolder"],
                config_folder=root / env["configFolder"],
                status_folder=root / env["statusFolder"],
                heartbeat_file=root / env.get("heartbeatFile", "heartbeat.log"),
            )
        except (OSError, ValueError, LookupError, TypeError) as exc:
            raise LayoutError(f"cannot read {path}: {exc}") from exc

    def settings_file(self, seq: int) -> Path:
        return self.config_folder / f"{seq}.settings"

    def status_file(self, seq: int) -> Path:
        return self.status_folder / f"{seq}.status"


def write_extension_root(
    root: Path,
    seq: int,
    public_settings: dict[str, Any],
    protected_settings: dict[str, Any] | str,
    thumbprint: str | None = None,
) -> Path:
    """Create the root (HandlerEnvironment.json and folders, once) and write ``config/<seq>.settings``.

    ``protected_settings`` is a dict in the clear, or, with ``thumbprint``, the base64 CMS text
    from :func:`extension.crypto.encrypt_protected_settings`. Returns the settings file path.
    """
    if thumbprint and not isinstance(protected_settings, str):
        raise TypeError("with a thumbprint, protected_settings must be the base64 CMS string")
    if not thumbprint and not isinstance(protected_settings, dict):
        raise TypeError("without a thumbprint, protected_settings must be a dict")
    root = Path(root)
    env_file = root / "HandlerEnvironment.json"
    if not env_file.exists():
        for folder in ("config", "status", "log"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        # Absolute paths, as WALA writes them.
        atomic_write(
            env_file,
            json.dumps(
                [
                    {
                        "name": HANDLER_NAME,
                        "version": PROTOCOL_VERSION,
                        "handlerEnvironment": {
                            "logFolder": str((root / "log").resolve()),
                            "configFolder": str((root / "config").resolve()),
                            "statusFolder": str((root / "status").resolve()),
                            "heartbeatFile": str((root / "heartbeat.log").resolve()),
                        },
                    }
                ]
            ),
        )
    env = HandlerEnvironment.load(root)
    env.config_folder.mkdir(parents=True, exist_ok=True)
    path = env.settings_file(seq)
    atomic_write(
        path,
        json.dumps(
            {
                "runtimeSettings": [
                    {
                        "handlerSettings": {
                            "protectedSettingsCertThumbprint": thumbprint,
                            "protectedSettings": protected_settings,
                            "publicSettings": public_settings,
                        }
                    }
                ]
            }
        ),
        mode=0o600,
    )
    return path


def read_handler_settings(env: HandlerEnvironment, seq: int) -> dict[str, Any]:
    """``runtimeSettings[0].handlerSettings`` of ``config/<seq>.settings``."""
    path = env.settings_file(seq)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        settings = doc["runtimeSettings"][0]["handlerSettings"]
    except (OSError, ValueError, LookupError, TypeError) as exc:
        raise LayoutError(f"cannot read {path}: {exc}") from exc
    if not isinstance(settings, dict):
        raise LayoutError(f"{path}: handlerSettings is not an object")
    return settings


def scrub_protected_settings(env: HandlerEnvironment, seq: int) -> None:
    """Rewrite ``<seq>.settings`` without ``protectedSettings`` once read (``update_settings_file``)."""
    scrub_settings_file(env.settings_file(seq))


def scrub_settings_file(path: Path) -> None:
    """Rewrite a settings file without ``protectedSettings``; an unreadable file is left as it is."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        handler_settings = doc["runtimeSettings"][0]["handlerSettings"]
    except (OSError, ValueError, LookupError, TypeError):
        return
    if handler_settings.pop("protectedSettings", None) is not None:
        atomic_write(path, json.dumps(doc), mode=0o600)


def resolve_seq(env: HandlerEnvironment, environ: Mapping[str, str] = os.environ) -> int:
    """``ConfigSequenceNumber``, else the ``.settings`` file with the newest mtime (as HandlerUtil does)."""
    raw = environ.get(SEQ_ENV)
    if raw not in (None, "", "-1"):
        try:
            return int(raw)
        except ValueError as exc:
            raise LayoutError(f"{SEQ_ENV} is not an integer: {raw!r}") from exc
    candidates = [p for p in env.config_folder.glob("*.settings") if p.stem.isdigit()]
    if not candidates:
        raise LayoutError(f"no <seq>.settings file in {env.config_folder}")
    return int(max(candidates, key=lambda p: p.stat().st_mtime).stem)


def last_seq(root: Path) -> int | None:
    return _read_int(root / MRSEQ_FILE)


def save_seq(root: Path, seq: int) -> None:
    atomic_write(root / MRSEQ_FILE, str(seq))


def last_task_id(root: Path) -> str | None:
    try:
        return (root / TASK_IDENTITY_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def save_task_id(root: Path, task_id: str) -> None:
    atomic_write(root / TASK_IDENTITY_FILE, task_id)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def atomic_write(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
