"""SDK clients built once per process from a named connection: a connection string (Azurite,
emulators) or an endpoint plus the managed identity."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Protocol, cast
from urllib.parse import urlsplit

import requests
from azure.core.credentials import AccessToken

from shared.adapters.metering import request_hook
from shared.errors import ConfigurationError
from shared.settings import Connection, compute_emulator

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.pipeline.transport import HttpTransport
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient

# Retries on the client, as the SDK guidelines ask; few and short, so an outage surfaces in seconds
# (the callers retry what matters with their own backoff) and an unreachable endpoint fails fast.
# The Table client takes azure-core's policy options; the Blob client has its own policy, whose
# defaults (15 s plus 3^n between tries) would keep a caller waiting ~90 s on a closed port.
TABLE_RETRY = {"retry_total": 3, "retry_backoff_factor": 0.4}


def table_options() -> dict[str, Any]:
    """Client options for Table clients: the retries above, requests counted (metering.py), and the
    environment read once (``storage_transport``)."""
    return dict(TABLE_RETRY, raw_request_hook=request_hook("table"), transport=storage_transport())


def blob_retry() -> dict[str, Any]:
    """Client options for Blob clients: three retries, about 10 s in all."""
    from azure.storage.blob import ExponentialRetry

    return {"retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3,
                                             random_jitter_range=1),
            "raw_request_hook": request_hook("blob"), "transport": storage_transport()}


def storage_transport() -> HttpTransport[Any, Any]:
    """azure-core's requests transport, whose session reads the proxy and CA settings of the
    environment once per endpoint instead of on every request (``_SettledEnvironmentSession``)."""
    from azure.core.pipeline.transport import RequestsTransport

    session = _SettledEnvironmentSession()
    transport = RequestsTransport(session=session, session_owner=True)
    transport._init_session(session)        # the SDK's set-up of a session of its own: its adapter, trust_env
    return cast("HttpTransport[Any, Any]", transport)


class _SettledEnvironmentSession(requests.Session):
    """A requests session that looks up the environment's proxy and CA settings once per endpoint.

    requests looks them up on every request, walking the whole of ``os.environ`` twice
    (``urllib.request.getproxies_environment``); a Functions worker's environment holds every app
    setting, and that walk cost 0.3-0.5 ms of CPU per storage request (a status blob's ingestion
    makes five: docs/benchmarks.md, "Ingestion through the local host"). App settings change only
    with a restart of the process, so what is read once stays true; a request given proxies of its
    own takes requests' usual path."""

    def __init__(self) -> None:
        super().__init__()
        self._settled: dict[tuple[Any, ...], dict[str, Any]] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        if proxies or not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        scheme, netloc = urlsplit(url)[:2]
        key = (scheme, netloc, stream, verify, cert)
        settings = self._settled.get(key)
        if settings is None:
            settings = self._settled[key] = super().merge_environment_settings(url, {}, stream, verify, cert)
        # requests may add to what it is given: each request gets its own copy
        return {**settings, "proxies": dict(settings["proxies"])}


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
