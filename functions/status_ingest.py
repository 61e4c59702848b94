"""Blob trigger: each new or rewritten status blob becomes (an update of) its job record.

The default (polling) source works with Azurite under ``func start`` and on every plan but Flex
Consumption; there, add ``source=func.BlobSource.EVENT_GRID`` and an Event Grid subscription
(README, "Running in Azure").
"""
import logging

import azure.functions as func

from shared.bootstrap import services
from shared.services.ingestion import ingest_with_retries

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("ingest_status")
@bp.blob_trigger(arg_name="blob", path="%STATUS_CONTAINER%/{name}.Status.txt", connection="BackupStorage")
def ingest_status(blob: func.InputStream) -> None:
    # The host gives "<container>/<blob name>"; the service works with names inside the container.
    container, _, blob_name = (blob.name or "").partition("/")
    etag = (blob.blob_properties or {}).get("ETag")
    # A storage outage is ridden out here, inside the invocation: the host's own retries come
    # seconds apart and end in a poison record after five (the sweep re-reads such blobs).
    outcome = ingest_with_retries(services(), blob_name, blob.read(), etag)
    log.info("status blob %s/%s: %s", container, blob_name, outcome)
