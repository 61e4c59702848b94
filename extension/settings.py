"""What the handler reads from its public and protected settings, as one value.

Parsing never raises for missing or malformed optional input: like ``parameterparser.py`` it
leaves the field empty and the daemon turns that into a status code (11, 16, 76, ...).
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

V2_VM_TYPE = "microsoft.compute/virtualmachines"
MAX_COMMAND_AGE_SECONDS = 140 * 60
TICKS_AT_UNIX_EPOCH = 621355968000000000

ONLY_GUEST = "onlyGuest"
ONLY_HOST = "onlyHost"
FIRST_GUEST_THEN_HOST = "firstGuestThenHost"
FIRST_HOST_THEN_GUEST = "firstHostThenGuest"
SNAPSHOT_METHODS = (ONLY_GUEST, ONLY_HOST, FIRST_GUEST_THEN_HOST, FIRST_HOST_THEN_GUEST)
HOST_ONLY_DISK_FLAGS = ("isAnyWADiskIncluded", "isVmgsBlobIncluded", "isAnyDirectDriveDiskIncluded")


@dataclass(frozen=True)
class CommandSettings:
    command: str = ""
    task_id: str | None = None
    command_start_ticks: Any = None  # echoed exactly as received
    vm_type: str | None = None
    public_object: dict[str, Any] | None = None
    backup_metadata: list[Any] | None = None
    included_disks: dict[str, Any] = field(default_factory=dict[str, Any])
    custom_settings: dict[str, Any] = field(default_factory=dict[str, Any])
    blob_sas_uris: tuple[str, ...] = ()
    logs_blob_uri: str | None = None
    status_blob_uri: str | None = None

    @property
    def is_v2(self) -> bool:
        return (self.vm_type or "").lower() == V2_VM_TYPE

    @property
    def lun_list(self) -> list[int]:
        luns = list(self.included_disks.get("dataDiskLunList") or [])
        if self.included_disks.get("isOSDiskIncluded"):
            luns.append(-1)
        return luns

    def snapshot_method(self, override: str | None = None) -> str:
        """``takeSnapshotFrom`` after the real handler's overrides (``freezesnapshotter.py``)."""
        method = override or self.custom_settings.get("takeSnapshotFrom") or FIRST_HOST_THEN_GUEST
        if method not in SNAPSHOT_METHODS:
            log.warning("unknown takeSnapshotFrom %r, using %s", method, FIRST_HOST_THEN_GUEST)
            method = FIRST_HOST_THEN_GUEST
        wa_luns = set(self.custom_settings.get("waDiskLunList") or [])
        if any(self.included_disks.get(flag) for flag in HOST_ONLY_DISK_FLAGS) or wa_luns & set(
            self.lun_list
        ):
            method = ONLY_HOST
        if self.included_disks.get("isAnyDiskExcluded"):
            method = ONLY_GUEST
        return method


def parse_settings(public: Mapping[str, Any], protected: Mapping[str, Any]) -> CommandSettings:
    public = public or {}
    protected = protected or {}
    public_object = decode_object_str(public.get("objectStr"), "public")
    protected_object = decode_object_str(protected.get("objectStr"), "protected") or {}
    custom_text = public.get("customSettings") or protected.get("customSettings") or ""
    sas = protected_object.get("blobSASUri") or []
    return CommandSettings(
        command=str(public.get("commandToExecute") or ""),
        task_id=public.get("taskId"),
        command_start_ticks=public.get("commandStartTimeUTCTicks"),
        vm_type=public.get("vmType"),
        public_object=public_object,
        backup_metadata=_backup_metadata((public_object or {}).get("backupMetadata")),
        included_disks=dict((public_object or {}).get("includedDisks") or {}),
        custom_settings=_custom_settings(custom_text),
        blob_sas_uris=tuple(str(u) for u in sas) if isinstance(sas, list) else (),
        logs_blob_uri=public.get("logsBlobUri") or protected.get("logsBlobUri") or None,
        status_blob_uri=public.get("statusBlobUri") or protected.get("statusBlobUri") or None,
    )


def decode_object_str(value: Any, which: str) -> dict[str, Any] | None:
    """base64 -> ASCII -> strip whitespace -> strip ``'`` -> JSON, as ``parameterparser.py`` does."""
    if not value:
        return None
    try:
        text = base64.b64decode(value).decode("ascii").strip().strip("'")
        decoded = json.loads(text)
    except (binascii.Error, ValueError, TypeError) as exc:
        log.error("the %s objectStr is not base64 JSON: %s", which, type(exc).__name__)
        return None
    return decoded if isinstance(decoded, dict) else None


def encode_object_str(obj: Mapping[str, Any]) -> str:
    """The inverse of :func:`decode_object_str`, for whoever builds settings."""
    return base64.b64encode(json.dumps(obj).encode("ascii")).decode("ascii")


def _backup_metadata(value: Any) -> list[Any] | None:
    """A list of ``{"Key", "Value"}`` pairs, or None (error 11) for anything else."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(item, dict) and "Key" in item and "Value" in item for item in value
    ):
        log.error("backupMetadata is not a list of Key/Value pairs")
        return None
    return value


def _custom_settings(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        parsed = json.loads(text) if text else {}
    except ValueError:
        log.error("customSettings is not JSON; using defaults")
        return {}
    return parsed if isinstance(parsed, dict) else {}


def command_age_seconds(ticks: Any, now: datetime) -> float | None:
    """Seconds since ``commandStartTimeUTCTicks`` (.NET ticks); None when the value is malformed."""
    try:
        start_ticks = int(ticks)
    except (TypeError, ValueError):
        return None
    return (_ticks(now) - start_ticks) / 10_000_000


def ticks_for(moment: datetime) -> str:
    """``commandStartTimeUTCTicks`` for a moment, as the service sends it (decimal string)."""
    return str(_ticks(moment))


def _ticks(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return TICKS_AT_UNIX_EPOCH + micros * 10


def load_protected_settings(handler_settings: Mapping[str, Any], cert_dir: Path) -> dict[str, Any]:
    """The protected settings in the clear, or ``{}`` when they cannot be had (the real fallback)."""
    protected = handler_settings.get("protectedSettings")
    thumbprint = handler_settings.get("protectedSettingsCertThumbprint")
    if not protected:
        return {}
    if not thumbprint:
        if isinstance(protected, dict):
            return protected
        log.error("protected settings are encrypted but no certificate thumbprint is given")
        return {}
    if not isinstance(protected, str):
        log.error("a certificate thumbprint is given but the protected settings are not base64 CMS")
        return {}
    try:
        # Imported here: only encrypted settings need the cryptography package on the VM.
        from extension.crypto import ProtectedSettingsError, decrypt_protected_settings
    except ImportError as exc:
        log.error("cannot decrypt the protected settings: %s", exc)
        return {}
    try:
        cert_pem = (cert_dir / f"{thumbprint}.crt").read_bytes()
        key_pem = (cert_dir / f"{thumbprint}.prv").read_bytes()
        return decrypt_protected_settings(protected, cert_pem, key_pem)
    except OSError as exc:
        log.error("cannot read the certificate %s in %s: %s", thumbprint, cert_dir, exc.strerror)
    except ProtectedSettingsError as exc:
        log.error("%s (certificate %s)", exc, thumbprint)
    return {}
