"""SDK clients built once per process from a named connection: a connection string (Azurite,
emulators) or an endpoint plus the managed identity."""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from shared.errors import ConfigurationError
from shared.settings import Connection

if TYPE_CHECKING:
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient

_RETRY = {"retry_total": 3, "retry_backoff_factor": 0.4}


def blob_service_client(conn: Connection, services) -> BlobServiceClient:
    from azure.storage.blob import BlobServiceClient

    if conn.connection_string:
        with _malformed(conn):
            return BlobServiceClient.from_connection_string(conn.connection_string, **_RETRY)
    return BlobServiceClient(conn.endpoint("blobServiceUri"), credential=services.credential, **_RETRY)


def table_service_client(conn: Connection, services) -> TableServiceClient:
    from azure.data.tables import TableServiceClient

    if conn.connection_string:
        with _malformed(conn):
            return TableServiceClient.from_connection_string(conn.connection_string, **_RETRY)
    return TableServiceClient(conn.endpoint("tableServiceUri"), credential=services.credential, **_RETRY)


@contextmanager
def _malformed(conn: Connection):
    """The SDK's ValueError for a malformed connection string, as the setting an operator must fix."""
    try:
        yield
    except ValueError as exc:
        raise ConfigurationError(f"setting {conn.name} is not a storage connection string ({exc}); expected "
                                 f"DefaultEndpointsProtocol=...;AccountName=...;AccountKey=... or "
                                 f"UseDevelopmentStorage=true") from exc
