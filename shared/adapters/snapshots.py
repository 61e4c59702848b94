"""Blob snapshots of the disks, and the status container's blobs, for retention and restore: list and
delete snapshots (never a base blob), copy a snapshot server-side into a new page blob, digest a blob
by streaming it, and list/delete status and log blobs.

Copies read their source through a short-lived read-only SAS on that one snapshot, signed like
shared/adapters/blob_sas.py signs (account key with Azurite, user delegation key with an identity).
"""
from __future__ import annotations

import hashlib
import logging
import threading
from datetime import datetime, timedelta
from typing import Any, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceModifiedError, \
    ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobServiceClient, generate_blob_sas

from shared.adapters.azure_errors import BLOB_REFUSED_HINT, translate
from shared.clock import Clock
from shared.errors import ConflictError, NotFoundError, PermanentError, TransientError, ValidationError
from shared.ports import BlobSnapshotInfo, CopyProgress, StatusBlobInfo
from shared.redaction import redact

log = logging.getLogger(__name__)

COPY_SAS_LIFETIME = timedelta(hours=6)    # a large disk copies for a while; Azure's copy reads all along
SAS_START_SKEW = timedelta(minutes=15)
_CHUNK = 4 * 1024 * 1024


class BlobSnapshots:
    """The SnapshotStore and DiskCopier ports on the backup storage account."""

    def __init__(self, blob_service: BlobServiceClient, *, clock: Clock):
        self._service = blob_service
        self._clock = clock
        self._delegation_key: Any = None
        self._lock = threading.Lock()

    # --- SnapshotStore ---------------------------------------------------------------------------
    def list_snapshots(self, blob_url: str) -> list[BlobSnapshotInfo]:
        base = blob_url.split("?", 1)[0]
        found = [BlobSnapshotInfo(url=f"{base}?snapshot={b.snapshot}", snapshot_time=b.snapshot,
                                  metadata=dict(b.metadata or {}))
                 for b in self._versions(base, metadata=True) if b.snapshot]
        return sorted(found, key=lambda s: s.snapshot_time)

    def count_snapshots(self, blob_url: str) -> int | None:
        versions = self._versions(blob_url.split("?", 1)[0], metadata=False)
        if not any(b.snapshot is None for b in versions):
            return None         # no base blob (a snapshot never outlives its base)
        return sum(1 for b in versions if b.snapshot)

    def _versions(self, base: str, *, metadata: bool) -> list[Any]:
        """The blob and its snapshots, in one listing (empty when neither exists)."""
        container, name = self._locate(base)
        try:
            blobs = self._service.get_container_client(container).list_blobs(
                name_starts_with=name, include=["snapshots", "metadata"] if metadata else ["snapshots"])
            return [b for b in blobs if b.name == name]
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise TransientError(f"could not list the snapshots of {base}: {redact(str(exc))}") from exc

    def snapshot_exists(self, snapshot_url: str) -> bool:
        base, snapshot = _split_snapshot(snapshot_url)
        container, name = self._locate(base)
        try:
            self._service.get_blob_client(container, name, snapshot=snapshot).get_blob_properties()
            return True
        except AzureError as exc:
            error = translate(exc, f"read snapshot {base}?snapshot={snapshot}", service="blob",
                              refused_hint=BLOB_REFUSED_HINT)
            if isinstance(error, NotFoundError):
                return False
            raise error from exc

    def delete_snapshot(self, snapshot_url: str) -> bool:
        base, snapshot = _split_snapshot(snapshot_url)
        container, name = self._locate(base)
        blob = self._service.get_blob_client(container, name, snapshot=snapshot)
        try:
            blob.delete_blob()
            return True
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise TransientError(f"could not delete snapshot {base}?snapshot={snapshot}: {redact(str(exc))}") \
                from exc

    # --- DiskCopier ------------------------------------------------------------------------------
    def target_url(self, container: str, blob_name: str) -> str:
        return str(self._service.get_blob_client(container, blob_name).url)

    def exists(self, container: str, blob_name: str) -> bool:
        try:
            return bool(self._service.get_blob_client(container, blob_name).exists())
        except AzureError as exc:
            raise TransientError(f"could not read {container}/{blob_name}: {redact(str(exc))}") from exc

    def start_copy(self, snapshot_url: str, container: str, blob_name: str, *, overwrite: bool) -> None:
        base, snapshot = _split_snapshot(snapshot_url)
        source = f"{base}?snapshot={snapshot}&{self._read_sas(base, snapshot)}"
        try:
            self._service.create_container(container)
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            if exc.status_code == 400:
                raise ValidationError(f"{container!r} is not a valid container name: use 3-63 lower-case "
                                      f"letters, digits and hyphens", field="target_container") from exc
            raise TransientError(f"could not create container {container}: {redact(str(exc))}") from exc
        target = self._service.get_blob_client(container, blob_name)
        try:
            # If-None-Match: * unless overwriting: storage itself refuses to replace an existing blob.
            target.start_copy_from_url(source, match_condition=None if overwrite else MatchConditions.IfMissing)
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise ConflictError(f"blob {container}/{blob_name} already exists; restore into another container, "
                                f"or pass --overwrite to replace it") from exc
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"snapshot {base}?snapshot={snapshot} no longer exists") from exc
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise ConflictError(f"blob {container}/{blob_name} already exists; pass --overwrite to "
                                    f"replace it") from exc
            raise TransientError(f"could not start the copy into {container}/{blob_name}: "
                                 f"{redact(str(exc))}") from exc
        except AzureError as exc:
            raise TransientError(f"could not start the copy into {container}/{blob_name}: "
                                 f"{redact(str(exc))}") from exc
        log.info("copy of %s?snapshot=%s into %s/%s started", base, snapshot, container, blob_name)

    def copy_progress(self, container: str, blob_name: str) -> CopyProgress:
        try:
            props = self._service.get_blob_client(container, blob_name).get_blob_properties()
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"blob {container}/{blob_name} is gone") from exc
        except AzureError as exc:
            raise TransientError(f"could not read {container}/{blob_name}: {redact(str(exc))}") from exc
        copy = props.copy
        return CopyProgress(status=str(copy.status or "success"), description=redact(copy.status_description or ""),
                            length=props.size)

    def digest(self, url: str) -> tuple[int, str]:
        base, _, query = url.partition("?")
        snapshot = next((p[len("snapshot="):] for p in query.split("&") if p.startswith("snapshot=")), None)
        container, name = self._locate(base)
        blob = self._service.get_blob_client(container, name, snapshot=snapshot)
        sha = hashlib.sha256()
        length = 0
        try:
            for chunk in blob.download_blob(max_concurrency=1).chunks():
                sha.update(chunk)
                length += len(chunk)
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"{base} (snapshot {snapshot}) not found") from exc
        except AzureError as exc:
            raise TransientError(f"could not read {base}: {redact(str(exc))}") from exc
        return length, sha.hexdigest()

    # --- internals -------------------------------------------------------------------------------
    def _locate(self, base: str) -> tuple[str, str]:
        blob = BlobClient.from_blob_url(base)
        if blob.account_name != self._service.account_name:
            raise PermanentError(f"blob {base} is not in storage account {self._service.account_name}")
        return blob.container_name, blob.blob_name

    def _read_sas(self, base: str, snapshot: str) -> str:
        container, name = self._locate(base)
        now = self._clock.now()
        start, expiry = now - SAS_START_SKEW, now + COPY_SAS_LIFETIME
        account_key = getattr(self._service.credential, "account_key", None)
        signing: dict[str, Any] = ({"account_key": account_key} if account_key
                                   else {"user_delegation_key": self._user_delegation_key(start, expiry)})
        return str(generate_blob_sas(account_name=str(self._service.account_name), container_name=container,
                                     blob_name=name, snapshot=snapshot, permission="r", start=start,
                                     expiry=expiry, protocol="https" if base.startswith("https://") else None,
                                     **signing))

    def _user_delegation_key(self, start: datetime, expiry: datetime) -> Any:
        with self._lock:
            key = self._delegation_key
            if key is None or not (_parse(key.signed_start) <= start and expiry <= _parse(key.signed_expiry)):
                try:
                    key = self._service.get_user_delegation_key(start, expiry + timedelta(hours=1))
                except AzureError as exc:
                    raise TransientError(f"could not get a user delegation key: {redact(str(exc))}") from exc
                self._delegation_key = key
            return key


class StatusBlobArchive:
    """The StatusBlobArchive port: the status container's blobs, listed and deleted for retention."""

    def __init__(self, blob_service: BlobServiceClient, container: str):
        self._container = blob_service.get_container_client(container)
        self.container = container

    def list_blobs(self) -> Iterator[StatusBlobInfo]:
        try:
            for blob in self._container.list_blobs():
                yield StatusBlobInfo(blob.name, blob.last_modified)
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise TransientError(f"could not list container {self.container}: {redact(str(exc))}") from exc

    def delete_blob(self, name: str) -> bool:
        try:
            self._container.delete_blob(name)
            return True
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise TransientError(f"could not delete {self.container}/{name}: {redact(str(exc))}") from exc


def _split_snapshot(url: str) -> tuple[str, str]:
    """(base URL, snapshot time); a URL without ``snapshot=`` is refused: a base blob is never deleted."""
    base, _, query = url.partition("?")
    snapshot = next((p[len("snapshot="):] for p in query.split("&") if p.startswith("snapshot=")), "")
    if not snapshot:
        raise ValidationError(f"{base} names no snapshot; base blobs are never deleted or restored from",
                              field="snapshot")
    return base, snapshot


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
