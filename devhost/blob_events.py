"""BlobCreated events of the local Azurite, read by the local host's blob triggers as Event Grid's.

The patched Azurite (``patches/``) appends one line per blob write (Put Blob, Put Block List, Copy
Blob: the writes Event Grid reports as ``Microsoft.Storage.BlobCreated``) to the file named by
``AZURITE_BLOB_EVENTS``: ``[api, account, container, blob, etag]``. A reader keeps its offset in the
file, so each read returns only what was written since the last one: a pass that finds nothing new
costs a file read of no bytes, whatever the container holds.
"""
from __future__ import annotations

import json
import logging
import os

log = logging.getLogger(__name__)


class BlobEventReader:
    """The events of one container of one account, from where the last read stopped."""

    def __init__(self, path: str, account: str, container: str):
        self.path, self.account, self.container = path, account, container
        self._offset = 0

    def skip_to_end(self) -> None:
        """Start after every event written so far (a complete listing is about to show their blobs)."""
        try:
            self._offset = os.path.getsize(self.path)
        except OSError:
            self._offset = 0

    def read(self) -> list[tuple[str, str]]:
        """(blob name, ETag without quotes) of each write since the last read, in the order written."""
        try:
            with open(self.path, "rb") as events:
                events.seek(self._offset)
                data = events.read()
        except OSError:
            return []           # Azurite stopped (its file went with it): nothing more will be written
        # A line being written has no newline yet: it is read whole by the next pass.
        complete = data[:data.rfind(b"\n") + 1]
        self._offset += len(complete)
        found = []
        for line in complete.splitlines():
            try:
                _api, account, container, blob, etag = json.loads(line)
            except (ValueError, TypeError):
                log.warning("blob events %s: a line is not an event; skipped", self.path)
                continue
            if account == self.account and container == self.container:
                found.append((str(blob), str(etag).strip('"')))
        return found
