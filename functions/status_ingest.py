"""Blob trigger: each new or rewritten status blob becomes (an update of) its job record.

By default the host finds the blobs by polling the container. ``STATUS_BLOB_SOURCE=EventGrid`` has
it wait for Event Grid's BlobCreated events instead, so finding a blob does not scan what is already
there (the only source Flex Consumption offers; wiring in infra/, docs/ingestion.md).
"""
import logging
import os
from typing import Mapping

import azure.functions as func

from shared.bootstrap import services
from shared.errors import ConfigurationError
from shared.services.ingestion import ingest_with_retries

log = logging.getLogger(__name__)
bp = func.Blueprint()

SOURCE_SETTING = "STATUS_BLOB_SOURCE"


def blob_source(env: Mapping[str, str]) -> func.BlobSource | None:
    """The trigger's source from the setting; None (the host's polling default) when it is not set."""
    value = env.get(SOURCE_SETTING, "").strip()
    if value.lower() in ("", func.BlobSource.LOGS_AND_CONTAINER_SCAN.value.lower()):
        return None
    if value.lower() == func.BlobSource.EVENT_GRID.value.lower():
        return func.BlobSource.EVENT_GRID
    raise ConfigurationError(f"setting {SOURCE_SETTING} is {value!r}; use EventGrid or LogsAndContainerScan")


@bp.function_name("ingest_status")
# The source is part of the binding the worker hands the host when it indexes the app; unlike a path
# it takes no %SETTING% expression, so the setting is read here, as the module is imported.
@bp.blob_trigger(arg_name="blob", path="%STATUS_CONTAINER%/{name}.Status.txt", connection="BackupStorage",
                 source=blob_source(os.environ))
def ingest_status(blob: func.InputStream) -> None:
    # The host gives "<container>/<blob name>"; the service works with names inside the container.
    container, _, blob_name = (blob.name or "").partition("/")
    etag = (blob.blob_properties or {}).get("ETag")
    # A storage outage is ridden out here, inside the invocation: the host's own retries come
    # seconds apart and end in a poison record after five (the sweep re-reads such blobs).
    svc = services()
    with svc.telemetry.span("ingest_status", blob=blob_name, etag=etag):
        outcome = ingest_with_retries(svc, blob_name, blob.read(), etag)
    # How long the status blob waited to become its job's record.
    svc.telemetry.latency_since("ingestion", (blob.blob_properties or {}).get("LastModified"), svc.clock.now())
    log.info("status blob %s/%s: %s", container, blob_name, outcome)
