"""Blob snapshots of the disks, and the status container's blobs, for retention and restore: list and
delete snapshots (never a base blob) with their digests, copy a snapshot server-side into a page blob tagged
with its restore job, compare a copy with its snapshot (shared/adapters/verification.py), and list/delete
status and log blobs.

Copies read their source through a short-lived read-only SAS on that one snapshot, signed like
shared/adapters/blob_sas.py signs (account key with Azurite, user delegation key with an identity).
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceModifiedError, \
    ResourceNotFoundError
from azure.core.paging import PageIterator
from azure.storage.blob import BlobClient, BlobProperties, BlobServiceClient, generate_blob_sas

from shared.adapters.azure_errors import BLOB_REFUSED_HINT, Failure, is_failure, read_failure, translate
from shared.adapters.verification import DigestStore, record_digest, verify_copy
from shared.clock import Clock
from shared.errors import ConflictError, NotFoundError, PermanentError, ValidationError
from shared.domain.restore import OWNER_KEY
from shared.ports import BlobSnapshotInfo, Digested, RestoredBlob, StatusBlobInfo, StatusBlobPage, Verification
from shared.redaction import redact

log = logging.getLogger(__name__)

COPY_SAS_LIFETIME = timedelta(hours=6)    # a large disk copies for a while; Azure's copy reads all along
SAS_START_SKEW = timedelta(minutes=15)
SAFETY_KEY = "vmsnaprestoresafety"    # metadata of a safety snapshot: the restore job that took it


class BlobSnapshots:
    """The SnapshotStore and DiskCopier ports on the backup storage account."""

    def __init__(self, blob_service: BlobServiceClient, *, clock: Clock):
        self._service = blob_service
        self._clock = clock
        self._digests = DigestStore(blob_service)
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
            raise _translated(exc, f"listing the snapshots of {base}") from exc

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
            deleted = True
        except ResourceNotFoundError:
            deleted = False
        except AzureError as exc:
            raise _translated(exc, f"deleting snapshot {base}?snapshot={snapshot}") from exc
        # After the snapshot, also when it was gone: a digest never outlives it (a verification that records
        # one after this finds the snapshot gone and deletes its own).
        self._digests.delete(container, name, snapshot)
        return deleted

    # --- DiskCopier ------------------------------------------------------------------------------
    def target_url(self, container: str, blob_name: str) -> str:
        return str(self._service.get_blob_client(container, blob_name).url)

    def inspect(self, container: str, blob_name: str) -> RestoredBlob:
        try:
            props = self._service.get_blob_client(container, blob_name).get_blob_properties()
        except ResourceNotFoundError:
            return RestoredBlob(exists=False)
        except AzureError as exc:
            raise _translated(exc, f"reading {container}/{blob_name}") from exc
        copy = props.copy
        done, total = _copy_progress(copy.progress, props.size)
        return RestoredBlob(exists=True, owner=(props.metadata or {}).get(OWNER_KEY),
                            copy_status=str(copy.status) if copy.status else None, bytes_done=done,
                            bytes_total=total, description=redact(copy.status_description or ""))

    def start_copy(self, snapshot_url: str, container: str, blob_name: str, *, owner: str,
                   replace: bool = False) -> None:
        base, snapshot = _split_snapshot(snapshot_url)
        source = f"{base}?snapshot={snapshot}&{self._read_sas(base, snapshot)}"
        try:
            self._service.create_container(container)
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            if is_failure(exc, Failure.PERMANENT):
                raise ValidationError(f"{container!r} is not a valid container name: use 3-63 lower-case "
                                      f"letters, digits and hyphens", field="target_container") from exc
            raise _translated(exc, f"creating container {container}") from exc
        target = self._service.get_blob_client(container, blob_name)
        try:
            # If-None-Match: * unless replacing: storage itself refuses to replace an existing blob.
            target.start_copy_from_url(source, metadata={OWNER_KEY: owner},
                                       match_condition=None if replace else MatchConditions.IfMissing)
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise ConflictError(f"blob {container}/{blob_name} already exists") from exc
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"snapshot {base}?snapshot={snapshot} no longer exists") from exc
        except AzureError as exc:
            if is_failure(exc, Failure.CONFLICT):
                raise ConflictError(f"blob {container}/{blob_name} already exists") from exc
            raise _translated(exc, f"starting the copy into {container}/{blob_name}") from exc
        log.info("job %s: copy of %s?snapshot=%s into %s/%s started", owner, base, snapshot, container, blob_name)

    def delete_owned(self, container: str, blob_name: str, owner: str) -> bool:
        blob = self._service.get_blob_client(container, blob_name)
        try:
            props = blob.get_blob_properties()
            if (props.metadata or {}).get(OWNER_KEY) != owner:
                return False
            # Guarded by the ETag read: a blob someone replaced meanwhile is no longer ours to delete.
            blob.delete_blob(delete_snapshots="include", etag=props.etag, match_condition=MatchConditions.IfNotModified)
            return True
        except (ResourceNotFoundError, ResourceModifiedError):
            return False
        except AzureError as exc:
            raise _translated(exc, f"deleting {container}/{blob_name}") from exc

    def safety_snapshot(self, container: str, blob_name: str, owner: str) -> str:
        blob = self._service.get_blob_client(container, blob_name)
        try:
            # Not the backups' jobId metadata: retention never takes a safety copy for an attempt's snapshot.
            taken = blob.create_snapshot(metadata={SAFETY_KEY: owner})
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"blob {container}/{blob_name} does not exist") from exc
        except AzureError as exc:
            raise _translated(exc, f"snapshotting {container}/{blob_name}") from exc
        return f"{blob.url}?snapshot={taken['snapshot']}"

    def restore_from(self, snapshot_url: str) -> None:
        base, snapshot = _split_snapshot(snapshot_url)
        container, name = self._locate(base)
        source = f"{base}?snapshot={snapshot}&{self._read_sas(base, snapshot)}"
        blob = self._service.get_blob_client(container, name)
        try:
            blob.start_copy_from_url(source, requires_sync=False)
            while blob.get_blob_properties().copy.status == "pending":
                time.sleep(0.5)
        except AzureError as exc:
            raise _translated(exc, f"putting {snapshot_url} back") from exc

    def verify(self, snapshot_url: str, target_url: str) -> Verification:
        return verify_copy(self._client_of(snapshot_url), self._client_of(target_url), self._digests)

    def record_digest(self, snapshot_url: str) -> Digested:
        return record_digest(self._client_of(snapshot_url), self._digests)

    def read_range(self, url: str, offset: int, length: int) -> bytes:
        # A URL with its own signature (a disk's read grant) is read with it, wherever it points.
        client = BlobClient.from_blob_url(url) if "sig=" in url else self._client_of(url)
        try:
            return bytes(client.download_blob(offset=offset, length=length).readall())
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"{url.split('?', 1)[0]} does not exist") from exc
        except AzureError as exc:
            if read_failure(exc).status == 416:      # Range Not Satisfiable: the range starts past the end
                return b""
            raise _translated(exc, f"reading {url.split('?', 1)[0]}") from exc

    def list_owned(self, container: str, owner: str) -> list[str]:
        try:
            return [b.name for b in self._service.get_container_client(container).list_blobs(include=["metadata"])
                    if (b.metadata or {}).get(OWNER_KEY) == owner]
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise _translated(exc, f"listing container {container}") from exc

    def delete_container_if_empty(self, container: str) -> bool:
        client = self._service.get_container_client(container)
        try:
            if next(iter(client.list_blobs(include=["snapshots"])), None) is not None:
                return False
            client.delete_container()
            return True
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise _translated(exc, f"deleting container {container}") from exc

    def _client_of(self, url: str) -> BlobClient:
        base, _, query = url.partition("?")
        snapshot = next((p[len("snapshot="):] for p in query.split("&") if p.startswith("snapshot=")), None)
        container, name = self._locate(base)
        return self._service.get_blob_client(container, name, snapshot=snapshot)

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
                    raise _translated(exc, f"getting a user delegation key") from exc
                self._delegation_key = key
            return key


class StatusBlobArchive:
    """The StatusBlobArchive port: the status container's blobs, listed and deleted for retention."""

    def __init__(self, blob_service: BlobServiceClient, container: str, *, page_size: int | None = None):
        self._container = blob_service.get_container_client(container)
        self.container = container
        self._page_size = page_size         # None: storage's own (5,000); tests list small pages

    def list_pages(self, marker: str | None = None) -> Iterator[StatusBlobPage]:
        try:
            # by_page returns a PageIterator, whose continuation_token its Iterator annotation leaves out.
            pages: PageIterator[BlobProperties] = self._container.list_blobs(  # type: ignore[assignment]
                results_per_page=self._page_size).by_page(
                continuation_token=marker)
            for page in pages:
                blobs = [StatusBlobInfo(blob.name, blob.last_modified) for blob in page]
                yield StatusBlobPage(blobs, pages.continuation_token or None)
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise _translated(exc, f"listing container {self.container}") from exc

    def delete_blob(self, name: str) -> bool:
        try:
            self._container.delete_blob(name)
            return True
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise _translated(exc, f"deleting {self.container}/{name}") from exc


def _copy_progress(progress: str | None, size: int | None) -> tuple[int | None, int | None]:
    """Storage's ``x-ms-copy-progress`` (``<bytes copied>/<total>``) as numbers; the size when absent."""
    done, _, total = (progress or "").partition("/")
    if done.isdigit() and total.isdigit():
        return int(done), int(total)
    return None, size


def _translated(exc: AzureError, doing: str) -> Exception:
    return translate(exc, doing, service="Blob Storage", refused_hint=BLOB_REFUSED_HINT)


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
