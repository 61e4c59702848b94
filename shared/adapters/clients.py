"""SDK clients built once per process from a named connection: a connection string (Azurite,
emulators) or an endpoint plus the managed identity."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Protocol

from azure.core.credentials import AccessToken

from shared.adapters.metering import request_hook
from shared.errors import ConfigurationError
from shared.settings import Connection, compute_emulator

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient

# Retries on the client, as the SDK guidelines ask; few and short, so an outage surfaces in seconds
# (the callers retry what matters with their own backoff) and an unreachable endpoint fails fast.
# The Table client takes azure-core's policy options; the Blob client has its own policy, whose
# defaults (15 s plus 3^n between tries) would keep a caller waiting ~90 s on a closed port.
TABLE_RETRY = {"retry_total": 3, "retry_backoff_factor": 0.4}


def table_options() -> dict[str, Any]:
    """Client options for Table clients: the retries above, and requests counted (metering.py)."""
    return dict(TABLE_RETRY, raw_request_hook=request_hook("table"))


def blob_retry() -> dict[str, Any]:
    """Client options for Blob clients: three retries, about 10 s in all."""
    from azure.storage.blob import ExponentialRetry

    return {"retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3,
                                             random_jitter_range=1),
            "raw_request_hook": request_hook("blob")}


class HasCredential(Protocol):
    """Where the identity comes from, built only when a connection has no connection string."""

    @property
    def credential(self) -> TokenCredential: ...


def blob_service_client(conn: Connection, services: HasCredential) -> BlobServiceClient:
    from azure.storage.blob import BlobServiceClient

    if conn.connection_string:
        with _malformed(conn):
            return BlobServiceClient.from_connection_string(conn.connection_string, **blob_retry())
    return BlobServiceClient(conn.endpoint("blobServiceUri"), credential=services.credential, **blob_retry())


def table_service_client(conn: Connection, services: HasCredential) -> TableServiceClient:
    from azure.data.tables import TableServiceClient

    if conn.connection_string:
        with _malformed(conn):
            return TableServiceClient.from_connection_string(conn.connection_string, **table_options())
    return TableServiceClient(conn.endpoint("tableServiceUri"), credential=services.credential, **table_options())


class StaticTokenCredential:
    """A fixed bearer token (azure-core's TokenCredential protocol): what a local emulator accepts, as
    Azurite accepts its well-known key. Never used against Azure."""

    def __init__(self, token: str):
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


def compute_emulator_options(conn: Connection) -> tuple[StaticTokenCredential, dict[str, Any]]:
    """The credential and client options of ``azure-mgmt-compute`` for the endpoint a ``ComputeConnection``
    names: its URL, trusting exactly its certificate, with its token."""
    emulator = compute_emulator(conn)
    if not emulator.certificate_file.is_file():
        raise ConfigurationError(f"setting {conn.name} names certificate {emulator.certificate_file}, which does "
                                 f"not exist: start the local stack (./dev run) or correct the setting")
    return StaticTokenCredential(emulator.token), {
        "base_url": emulator.endpoint, "connection_verify": str(emulator.certificate_file),
        "credential_scopes": ["https://management.azure.com/.default"]}


@contextmanager
def _malformed(conn: Connection) -> Iterator[None]:
    """The SDK's ValueError for a malformed connection string, as the setting an operator must fix."""
    try:
        yield
    except ValueError as exc:
        raise ConfigurationError(f"setting {conn.name} is not a storage connection string ({exc}); expected "
                                 f"DefaultEndpointsProtocol=...;AccountName=...;AccountKey=... or "
                                 f"UseDevelopmentStorage=true") from exc
