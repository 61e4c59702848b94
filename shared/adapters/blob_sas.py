"""Blob Storage for dispatch: SAS minted per blob with the least permission each use needs, and the
per-attempt status/log blobs the extension writes to (created empty, never reused).

Account-key SAS when the client holds a key (a connection string: Azurite, development);
user-delegation SAS when it runs with a managed identity.
"""
from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta
from typing import Any, Callable, TypeVar
from urllib.parse import quote, urlsplit

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobServiceClient, BlobType, UserDelegationKey, generate_blob_sas

from shared.adapters.azure_errors import BLOB_REFUSED_HINT, translate
from shared.adapters.clients import blob_retry
from shared.clock import Clock
from shared.domain.bloburl import base_of
from shared.domain.command import EXTENSION_WINDOW
from shared.domain.task import MAX_MESSAGE_BYTES
from shared.domain.status import strip_secrets
from shared.errors import ConflictError, NotFoundError, PermanentError, ValidationError
from shared.redaction import redact

_T = TypeVar("_T")

log = logging.getLogger(__name__)

# Back-dated for clock skew between us, Storage and the VM.
SAS_START_SKEW = timedelta(minutes=15)
# The extension refuses the command 140 min after it was issued; the margin covers its final
# status and log uploads, which come after the snapshot.
SAS_MARGIN = timedelta(minutes=30)
SAS_LIFETIME = EXTENSION_WINDOW + SAS_MARGIN
# Create (c) is the least permission that can snapshot a blob: on Azurite and Azure it cannot read,
# write pages, overwrite or delete (tests/dispatch/test_sas_azurite.py pins this).
DISK_PERMISSION = "c"
# The handler GETs a status/log blob (type, length) before it PUTs it, so read + write, no more.
STATUS_PERMISSION = "rw"
# A user delegation key lives longer than one SAS, so one key serves many dispatches.
_DELEGATION_KEY_LIFETIME = timedelta(hours=12)


class BlobSasMinter:
    """Mints one service SAS per blob, valid from ``now - 15 min`` to ``now + 170 min``."""

    def __init__(self, blob_service: BlobServiceClient, *, clock: Clock):
        self._service = blob_service
        self._clock = clock
        self._delegation_key: UserDelegationKey | None = None
        self._lock = threading.Lock()

    def disk_sas_url(self, blob_url: str) -> str:
        """The disk blob URL with a SAS that can snapshot that blob and do nothing else."""
        return self._sas_url(blob_url, DISK_PERMISSION)

    def status_sas_url(self, blob_url: str) -> str:
        """The status blob URL with a read+write SAS on exactly that blob."""
        return self._sas_url(blob_url, STATUS_PERMISSION)

    def log_sas_url(self, blob_url: str) -> str:
        """The log blob URL with a read+write SAS on exactly that blob."""
        return self._sas_url(blob_url, STATUS_PERMISSION)

    def _sas_url(self, blob_url: str, permission: str) -> str:
        base = base_of(blob_url)
        blob = BlobClient.from_blob_url(base)
        account = self._service.account_name
        if (not account or blob.account_name != account
                or blob.primary_hostname.split("/")[0] != self._service.primary_hostname.split("/")[0]):
            raise PermanentError(
                f"blob {base} is not in storage account {self._service.account_name}, so no SAS can be "
                f"minted for it; keep the VM's disks in the backup storage account")
        now = self._clock.now()
        start, expiry = now - SAS_START_SKEW, now + SAS_LIFETIME
        signing = self._signing_credential(start, expiry)
        sas = generate_blob_sas(
            account_name=account,
            container_name=blob.container_name,
            blob_name=blob.blob_name,
            permission=permission,
            start=start,
            expiry=expiry,
            # The real handler always talks HTTPS; keep plain HTTP possible for Azurite only.
            protocol="https" if base.startswith("https://") else None,
            **signing,
        )
        return f"{base}?{sas}"

    def _signing_credential(self, start: datetime, expiry: datetime) -> dict[str, Any]:
        account_key = getattr(self._service.credential, "account_key", None)
        if account_key:
            return {"account_key": account_key}
        return {"user_delegation_key": self._user_delegation_key(start, expiry)}

    def _user_delegation_key(self, start: datetime, expiry: datetime) -> UserDelegationKey:
        with self._lock:
            key = self._delegation_key
            if key is None or not _covers(key, start, expiry):
                try:
                    key = self._service.get_user_delegation_key(start, start + _DELEGATION_KEY_LIFETIME)
                except AzureError as exc:
                    raise translate(exc, "getting a user delegation key", service="Blob Storage",
                                    refused_hint=BLOB_REFUSED_HINT) from exc
                self._delegation_key = key
            return key


class StatusBlobStore:
    """The status container: one empty status blob and one empty log blob per dispatch attempt,
    and a sibling ``<container>-rejected`` container for messages that can never succeed."""

    def __init__(self, blob_service: BlobServiceClient, container: str):
        self._service = blob_service
        self.container = container
        self.rejected_container = f"{container}-rejected"
        self._ready: set[str] = set()

    @staticmethod
    def attempt_blob_names(job_id: str, attempt: int) -> tuple[str, str]:
        return f"{job_id}/{attempt}.Status.txt", f"{job_id}/{attempt}.Logs.txt"

    def create_attempt_blobs(self, job_id: str, attempt: int) -> tuple[str, str]:
        """Create this attempt's status and log blobs, empty; returns their names.

        An empty blob left by an interrupted earlier try of the same attempt is reused; a non-empty
        one means the extension already wrote there, and is never overwritten (ConflictError).
        """
        self._ensure_container(self.container)
        names = self.attempt_blob_names(job_id, attempt)
        for name in names:
            blob = self._service.get_blob_client(self.container, name)
            try:
                blob.upload_blob(b"", blob_type=BlobType.BLOCKBLOB, overwrite=False)
            except ResourceExistsError:
                props = _storage_call(blob.get_blob_properties, name)
                if props.size or props.blob_type != BlobType.BLOCKBLOB:
                    raise ConflictError(
                        f"status container {self.container} already holds a non-empty {name}; "
                        f"the extension wrote there already, so attempt {attempt} cannot be reused") from None
            except AzureError as exc:
                raise translate(exc, f"creating blob {name}", service="Blob Storage",
                                refused_hint=BLOB_REFUSED_HINT) from exc
        return names

    def read(self, name: str) -> bytes:
        blob = self._service.get_blob_client(self.container, name)
        try:
            return blob.download_blob().readall()
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"blob {name} is not in container {self.container}") from exc
        except AzureError as exc:
            raise translate(exc, f"reading blob {name}", service="Blob Storage",
                            refused_hint=BLOB_REFUSED_HINT) from exc

    def url(self, name: str) -> str:
        """The blob's URL without any SAS."""
        return self._service.get_blob_client(self.container, name).url

    def store_rejected(self, message_id: str, *, reason: str, body: bytes, delivery_count: int,
                       now: datetime) -> str:
        """Keep a message that can never succeed (redacted, capped) with the reason; returns its name."""
        self._ensure_container(self.rejected_container)
        name = (quote(message_id, safe="-_.") or "no-message-id")[:200] + ".json"
        text = body[:MAX_MESSAGE_BYTES].decode("utf-8", errors="replace")
        document = {
            "messageId": message_id,
            "reason": redact(reason),
            "deliveryCount": delivery_count,
            "rejectedAt": now.isoformat(),
            "bodyBytes": len(body),
            "truncated": len(body) > MAX_MESSAGE_BYTES,
            "body": redact(text),
        }
        blob = self._service.get_blob_client(self.rejected_container, name)
        _storage_call(lambda: blob.upload_blob(json.dumps(document, indent=1).encode("utf-8"),
                                               overwrite=True), name)
        return name

    def _ensure_container(self, container: str) -> None:
        if container in self._ready:
            return
        try:
            self._service.create_container(container)
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise translate(exc, f"creating container {container}", service="Blob Storage",
                            refused_hint=BLOB_REFUSED_HINT) from exc
        self._ready.add(container)


def _storage_call(call: Callable[[], _T], name: str) -> _T:
    try:
        return call()
    except AzureError as exc:
        raise translate(exc, f"working on blob {name}", service="Blob Storage", refused_hint=BLOB_REFUSED_HINT) from exc


def _covers(key: UserDelegationKey, start: datetime, expiry: datetime) -> bool:
    if not key.signed_start or not key.signed_expiry:
        return False
    return _parse(key.signed_start) <= start and expiry <= _parse(key.signed_expiry)


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class BlobUrlReader:
    """``BlobUrls`` on Blob Storage: a URL with a signature is read with it and nothing else; the storage
    identity (asked for only then, so a SAS URL needs no settings) reads the others."""

    def __init__(self, credential: Callable[[], Any]):
        self._credential = credential

    def read(self, url: str, *, max_bytes: int) -> bytes:
        shown = strip_secrets(url)
        try:
            signed = "sig=" in urlsplit(url).query
            client = BlobClient.from_blob_url(url, **({} if signed else {"credential": self._credential()}),
                                              **blob_retry())
            downloader = client.download_blob()
            if downloader.size > max_bytes:
                raise ValidationError(f"{shown} is {downloader.size} bytes; at most {max_bytes} are read")
            return bytes(downloader.readall())
        except ResourceNotFoundError:
            raise NotFoundError(f"no such blob: {shown}") from None
        except AzureError as exc:
            raise translate(exc, f"reading {shown}", service="Blob Storage",
                            refused_hint="check the URL's SAS, or the storage identity's role") from exc
        except ValueError as exc:
            raise ValidationError(f"{shown} is not a blob URL: {redact(str(exc))}") from None
