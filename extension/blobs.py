"""Blob work over raw HTTP: writing the status and log blobs (``blobwriter.py``) and guest
blob snapshots (``guestsnapshotter.py``)."""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from extension.codes import ExtensionCode
from extension.runlog import redact
from extension.transport import (
    HttpResponse,
    HttpTransport,
    storage_version,
    with_query,
    without_query,
)

log = logging.getLogger(__name__)

PAGE = 512
MAX_PAGE_WRITE = 4 * 1024 * 1024
MAX_PAGE_BLOB_TEXT = 10 * 1024 * 1024
SNAPSHOT_TIMEOUT = 10.0
PARALLEL_ABOVE = 4  # the real handler snapshots up to four blobs sequentially

RATE_EXCEEDED = "The rate of snapshot blob calls is exceeded"
COUNT_EXCEEDED = "The snapshot count against this blob has been exceeded"


class BlobWriteError(Exception):
    """A status or log blob could not be written; the run goes on and reports statusBlobUploadError."""


class BlobWriter:
    """Writes whole texts to pre-created blobs through their ``rw`` SAS URLs.

    One writer lives for one daemon run: a block blob found empty once stays writable for the rest
    of the run (the in-progress status is overwritten by the final one), but a block blob that was
    already non-empty at first sight is refused, as the real handler refuses it.
    """

    def __init__(self, http: HttpTransport, *, attempts: int = 3, pause: float = 0.5) -> None:
        self._http = http
        self._attempts = attempts
        self._pause = pause
        self._writable: dict[str, tuple[str, int]] = {}  # url -> (blob type, size) once checked

    def write(self, sas_url: str, text: str) -> None:
        """Replace the blob's content with ``text``; raise :class:`BlobWriteError` on failure."""
        blob_type, size = self._writable.get(sas_url) or self._check(sas_url)
        data = text.encode("utf-8")
        if blob_type == "BlockBlob":
            self._step(
                "PUT",
                sas_url,
                {"x-ms-blob-type": "BlockBlob", "Content-Type": "text/plain; charset=utf-8"},
                data,
            )
        else:
            size = self._write_pages(sas_url, data, size)
        self._writable[sas_url] = (blob_type, size)

    def _check(self, sas_url: str) -> tuple[str, int]:
        resp = self._send("GET", sas_url, {}, b"")
        if not resp.ok:
            raise BlobWriteError(
                f"cannot read {redact(sas_url)} before writing (HTTP {resp.status}); "
                "the blob must exist and its SAS needs read and write"
            )
        blob_type = resp.headers.get("x-ms-blob-type", "")
        length = int(resp.headers.get("content-length", "0") or 0)
        if blob_type == "BlockBlob" and length > 0:
            raise BlobWriteError(
                f"Cannot perform write operation on a non empty blob: {redact(sas_url)}"
            )
        if blob_type not in ("BlockBlob", "PageBlob"):
            raise BlobWriteError(f"unsupported blob type {blob_type!r} at {redact(sas_url)}")
        return blob_type, length

    def _write_pages(self, sas_url: str, data: bytes, size: int) -> int:
        """Clear, pad to 512, grow (up to 10 MiB), write; return the blob's size afterwards."""
        if size:
            self._step(
                "PUT",
                with_query(sas_url, "comp=page"),
                {"x-ms-page-write": "clear", "x-ms-range": f"bytes=0-{size - 1}"},
                b"",
            )
        data = data + b" " * (-len(data) % PAGE)
        if len(data) > size:
            size = min(len(data), MAX_PAGE_BLOB_TEXT)
            self._step(
                "PUT",
                with_query(sas_url, "comp=properties"),
                {"x-ms-blob-content-length": str(size)},
                b"",
            )
        if len(data) > size:
            data = data[-size:]  # keep the tail: the newest log lines matter most
        for start in range(0, len(data), MAX_PAGE_WRITE):
            chunk = data[start : start + MAX_PAGE_WRITE]
            self._step(
                "PUT",
                with_query(sas_url, "comp=page"),
                {
                    "x-ms-page-write": "update",
                    "x-ms-range": f"bytes={start}-{start + len(chunk) - 1}",
                },
                chunk,
            )
        return size

    def _step(self, method: str, url: str, headers: dict[str, str], body: bytes) -> HttpResponse:
        last = "no attempt"
        for attempt in range(1, self._attempts + 1):
            try:
                resp = self._send(method, url, headers, body)
            except OSError as exc:
                last = str(exc)
            else:
                if resp.ok:
                    return resp
                last = f"HTTP {resp.status}: {resp.text()[:300]}"
                if resp.status < 500 and resp.status not in (408, 429):
                    break
            if attempt < self._attempts:
                time.sleep(self._pause * attempt)
        raise BlobWriteError(f"{method} {redact(url)} failed: {redact(last)}")

    def _send(self, method: str, url: str, headers: dict[str, str], body: bytes) -> HttpResponse:
        try:
            return self._http.request(
                method,
                url,
                headers={"x-ms-version": storage_version(url), **headers},
                body=body,
                timeout=SNAPSHOT_TIMEOUT,
            )
        except OSError as exc:
            if method == "GET":
                raise BlobWriteError(f"cannot read {redact(url)}: {exc}") from exc
            raise


@dataclass(frozen=True)
class BlobSnapshot:
    """One disk's guest snapshot result, in ``blobSASUri`` order."""

    is_successful: bool
    snapshot_uri: str | None
    error_message: str | None
    status_code: int

    def to_status(self) -> dict[str, Any]:
        """The ``snapshotInfo`` entry (``blobUri`` is null for failed entries, as in the real one)."""
        return {
            "isSuccessful": self.is_successful,
            "snapshotUri": self.snapshot_uri,
            "errorMessage": self.error_message,
            "blobUri": without_query(self.snapshot_uri) if self.snapshot_uri else None,
            "directDriveSnapshotIdentifier": None,
        }


def snapshot_blobs(
    http: HttpTransport, sas_uris: Sequence[str], metadata: Sequence[Mapping[str, object]]
) -> list[BlobSnapshot]:
    """Snapshot every blob once (no retry), sequentially for up to four blobs, else in parallel."""
    headers = {f"x-ms-meta-{item['Key']}": str(item["Value"]) for item in metadata}
    if len(sas_uris) <= PARALLEL_ABOVE:
        return [_snapshot_one(http, uri, headers) for uri in sas_uris]
    with ThreadPoolExecutor(max_workers=len(sas_uris)) as pool:
        return list(pool.map(lambda uri: _snapshot_one(http, uri, headers), sas_uris))


def _snapshot_one(http: HttpTransport, sas_uri: str, meta_headers: dict[str, str]) -> BlobSnapshot:
    log.info("snapshotting %s", redact(sas_uri))
    try:
        resp = http.request(
            "PUT",
            with_query(sas_uri, "comp=snapshot"),
            headers={"x-ms-version": storage_version(sas_uri), **meta_headers},
            body=b"",
            timeout=SNAPSHOT_TIMEOUT,
        )
    except OSError as exc:
        log.error("snapshot of %s got no response: %s", redact(sas_uri), redact(str(exc)))
        return BlobSnapshot(False, None, None, 500)
    if resp.status in (200, 201) and resp.headers.get("x-ms-snapshot"):
        uri = f"{without_query(sas_uri)}?snapshot={resp.headers['x-ms-snapshot']}"
        log.info("snapshot taken: %s", uri)
        return BlobSnapshot(True, uri, "", resp.status)
    body = redact(resp.text())
    log.error("snapshot of %s failed with HTTP %s: %s", redact(sas_uri), resp.status, body)
    return BlobSnapshot(False, None, body, resp.status)


@dataclass(frozen=True)
class SnapshotVerdict:
    code: ExtensionCode  # the run result
    ext_error: ExtensionCode  # what vmHealthStatusCode should say
    message: str
    every_disk_failed: bool = False  # and not for a throttling or snapshot-limit reason


def classify(results: Sequence[BlobSnapshot]) -> SnapshotVerdict:
    """``updateErrorCode``: storage throttling and limits first, then all-failed versus some-failed."""
    for result in results:
        text = result.error_message or ""
        if RATE_EXCEEDED in text:
            code = ExtensionCode.FailedRetryableSnapshotRateExceeded
            return SnapshotVerdict(code, code, "Retrying when snapshot failed with SnapshotRateExceeded")
        if COUNT_EXCEEDED in text:
            code = ExtensionCode.FailedSnapshotLimitReached
            return SnapshotVerdict(
                code, code, "T:S Enable failed with FailedSnapshotLimitReached errror" + code.status_code_string()
            )
    failed = sum(1 for r in results if not r.is_successful)
    if results and failed == len(results):
        code = ExtensionCode.FailedRetryableSnapshotFailedNoNetwork
        return SnapshotVerdict(code, code, "", every_disk_failed=True)
    if failed:
        return SnapshotVerdict(
            ExtensionCode.FailedRetryableSnapshotFailedNoNetwork,
            ExtensionCode.FailedRetryableSnapshotFailedRestrictedNetwork,
            "",
        )
    return SnapshotVerdict(ExtensionCode.success, ExtensionCode.success, "")
