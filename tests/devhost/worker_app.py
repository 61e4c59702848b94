"""An app at module level, as worker processes import it (``FUNCTIONS_WORKER_PROCESS_COUNT`` > 1): its
blob function records each invocation as a blob of its own, named after the blob and the process."""
from __future__ import annotations

import os
import uuid

import azure.functions as func
from azure.storage.blob import BlobServiceClient

app = func.FunctionApp()


@app.function_name("record")
@app.blob_trigger(arg_name="blob", path="%CONTAINER%/{name}.Status.txt", connection="ST")
def record(blob: func.InputStream) -> None:
    if blob.read() == b"fail":
        raise ValueError("this blob fails")
    name = blob.name.partition("/")[2]
    with BlobServiceClient.from_connection_string(os.environ["ST"]) as service:
        # One blob per invocation (a new name each time): a second invocation shows as a second blob.
        service.get_blob_client(os.environ["SEEN"], f"{name}/{os.getpid()}/{uuid.uuid4()}").upload_blob(b"")
