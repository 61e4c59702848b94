"""Blob trigger: each new or rewritten status blob becomes (an update of) its job record.

By default the host finds the blobs by polling the container. ``STATUS_BLOB_SOURCE=EventGrid`` has
it wait for Event Grid's BlobCreated events instead, so finding a blob does not scan what is already
there (the only source Flex Consumption offers; wiring in infra/, docs/ingestion.md).
"""
import logging
import os
from typing import Any, Mapping

import azure.functions as func

from shared.bootstrap import services
from shared.errors import ConfigurationError
from shared.services.ingestion import ingest_with_retries
from shared.settings import STATUS_BLOB_SOURCE, status_blob_source

log = logging.getLogger(__name__)
bp = func.Blueprint()

SOURCE_SETTING = STATUS_BLOB_SOURCE


def blob_source(env: Mapping[str, str]) -> func.BlobSource | None:
    """The trigger's source from the setting; None (the host's polling default) unless it asks for Event Grid."""
    source = status_blob_source(env)
    return func.BlobSource.EVENT_GRID if source == func.BlobSource.EVENT_GRID.value else None


def ingest_status(blob: func.InputStream) -> None:
    # The host gives "<container>/<blob name>"; the service works with names inside the container.
    container, _, blob_name = (blob.name or "").partition("/")
    properties = _properties(blob)
    etag = properties.get("ETag")
    # A storage outage is ridden out here, inside the invocation: the host's own retries come
    # seconds apart and end in a poison record after five (the sweep re-reads such blobs).
    svc = services()
    with svc.telemetry.span("ingest_status", blob=blob_name, etag=etag):
        outcome = ingest_with_retries(svc, blob_name, blob.read(), etag)
    # How long the status blob waited to become its job's record.
    svc.telemetry.latency_since("ingestion", properties.get("LastModified"), svc.clock.now())
    log.info("status blob %s/%s: %s", container, blob_name, outcome)


def _properties(blob: func.InputStream) -> Mapping[str, Any]:
    # The binding is declared with the abstract InputStream; what the host hands is the concrete one,
    # which alone carries the blob's properties.
    properties = blob.blob_properties if isinstance(blob, func.blob.InputStream) else None
    return properties or {}


def _index(env: Mapping[str, str]) -> None:
    """Declare the trigger with the source the setting names; a bad value leaves this one function out.

    The source is part of the binding the worker hands the host when it indexes the app; unlike a
    path it takes no %SETTING% expression, so the setting is read here, as the app is indexed. The
    worker indexes every function of the app at once: an error raised here would stop all of them."""
    try:
        source = blob_source(env)
    except ConfigurationError as exc:
        log.error("function ingest_status is disabled: %s (the other functions run; the stale-job sweep "
                  "reads the status blobs of dispatched jobs meanwhile)", exc)
        return
    bp.function_name("ingest_status")(
        bp.blob_trigger(arg_name="blob", path="%STATUS_CONTAINER%/{name}.Status.txt", connection="BackupStorage",
                        source=source)(ingest_status))


_index(os.environ)
