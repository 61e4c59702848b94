"""A restored blob compared with its snapshot by parallel ranged reads of the allocated pages, piece by piece
of a fixed grid. The first verification of a snapshot reads both and records the snapshot's digest (a small
blob per snapshot in the digests container); later ones read the copy only and compare piece hashes."""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobServiceClient

from shared.adapters.azure_errors import BLOB_REFUSED_HINT, translate
from shared.adapters.metering import in_context
from shared.domain.disk_digest import HASH_SIZE, ZEROS, DigestUnusable, DiskDigest, decode, piece_bounds, \
    piece_count, piece_hash, spans, zeros_hash
from shared.errors import NotFoundError, TransientError
from shared.ports import Digested, Verification

log = logging.getLogger(__name__)

# Reads are pieces of this grid, this many at once. A piece larger than 4 MiB: Azurite computes the MD5 of
# every ranged read of at most 4 MiB (the size Azure can hash on request), which cost it twice the CPU of
# the read itself; Azure answers either without hashing, in fewer requests.
VERIFY_PIECE = 8 * 1024 * 1024
# Readers at once: one more than the cores, 2 to 8. The reading client's CPU (the SDK's download, the
# hashing) is what bounds a verification on a small instance; more readers than that only queue for the
# interpreter. Measured on 2 cores (bench_restore, later restores at 1 GiB, ratio medians): 1 reader 0.87,
# 2 readers 0.92, 3 readers 1.13, 4 readers 0.86, 8 readers 0.79. An Azure page blob serves about 60 MiB/s
# to one reader, so a few readers reach a blob's limit anyway.
VERIFY_READERS = min(8, max(2, (os.cpu_count() or 1) + 1))
DIGEST_CONTAINER = "vmsnap-digests"
_SOURCE_ETAG = "sourceetag"         # the digest's metadata: the ETag of the snapshot it was computed from
_NONE_YET = "none is recorded yet"


class DigestStore:
    """Digests of blob snapshots, one block blob each, named after the snapshot's blob and time; written once
    (If-None-Match: *), so two verifications recording the same snapshot at once leave one."""

    def __init__(self, blob_service: BlobServiceClient):
        self._container = blob_service.get_container_client(DIGEST_CONTAINER)
        self._created = False

    def read(self, source: BlobClient, props: Any) -> tuple[DiskDigest | None, str]:
        """The snapshot's digest, or None and why none can be used."""
        try:
            download = self._blob(source).download_blob(max_concurrency=4)
            raw = download.readall()
        except ResourceNotFoundError:
            return None, _NONE_YET
        except AzureError as exc:
            return None, f"it could not be read ({_translated(exc, 'reading a digest')})"
        if (download.properties.metadata or {}).get(_SOURCE_ETAG) != _etag(props):
            return None, "it was computed from another blob of that name and time"
        try:
            return decode(raw, length=props.size, piece=VERIFY_PIECE), ""
        except DigestUnusable as exc:
            return None, str(exc)

    def write(self, source: BlobClient, props: Any, digest: DiskDigest, *, replace: bool = False) -> Digested | None:
        """Record the digest (replacing a wrong one when ``replace``): RECORDED; PRESENT when another writer was
        first; GONE when the snapshot went meanwhile; None when storage refused (logged: a digest is an
        optimisation, never a reason to fail a restore)."""
        blob = self._blob(source)
        try:
            if not self._created:
                try:
                    self._container.create_container()
                except ResourceExistsError:
                    pass
                self._created = True
            if replace:
                try:
                    blob.delete_blob()
                except ResourceNotFoundError:
                    pass
            blob.upload_blob(digest.encode(), overwrite=False, metadata={_SOURCE_ETAG: _etag(props)})
        except (ResourceExistsError, ResourceModifiedError):
            return Digested.PRESENT     # the same snapshot's digest, written by another reader meanwhile
        except AzureError as exc:
            log.warning("the digest of %s could not be recorded: %s", _name(source), _translated(exc, "writing it"))
            return None
        try:
            source.get_blob_properties()
        except ResourceNotFoundError:
            # Retention deleted the snapshot (and its digest) while this verification read it: none outlives it.
            self.delete(source.container_name, source.blob_name, str(source.snapshot))
            return Digested.GONE
        except AzureError:
            pass
        return Digested.RECORDED

    def delete(self, container: str, blob_name: str, snapshot: str) -> None:
        try:
            self._container.delete_blob(_digest_name(container, blob_name, snapshot))
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise _translated(exc, f"deleting the digest of {container}/{blob_name}?snapshot={snapshot}") from exc

    def _blob(self, source: BlobClient) -> BlobClient:
        return self._container.get_blob_client(_digest_name(source.container_name, source.blob_name,
                                                            str(source.snapshot)))


def verify_copy(source: BlobClient, target: BlobClient, digests: DigestStore) -> Verification:
    """Compare ``target`` with the snapshot ``source``: against its digest when one is usable (the copy read
    only), else both read and the digest recorded. A copy that differs from a digest is compared with the
    snapshot itself before it is called different: a wrong digest never fails a restore, it is replaced."""
    try:
        props = source.get_blob_properties(), target.get_blob_properties()
        length = props[0].size
        if props[1].size != length:
            return Verification(False, props[1].size, 0, f"the copy has {props[1].size} bytes, the snapshot {length}")
        digest, why = digests.read(source, props[0])
        if digest is not None:
            checked = _against_digest(target, props[1], digest)
            if checked.equal:
                return checked
            log.warning("%s: %s against the digest of %s; comparing with the snapshot itself", _plain(target),
                        checked.detail, _name(source))
        else:
            log.info("%s: no usable digest of %s (%s): comparing with the snapshot, recording one", _plain(target),
                     _name(source), why)
        result, hashes = _both(source, props[0], target, props[1])
    except ResourceNotFoundError as exc:
        raise NotFoundError(f"{_name(source)} or {_plain(target)} does not exist") from exc
    except AzureError as exc:
        raise _translated(exc, f"comparing {_plain(target)} with its snapshot") from exc
    if digest is not None and result.equal:
        log.warning("%s: the digest of %s was wrong (the copy equals the snapshot): replacing it", _plain(target),
                    _name(source))
    if digest is None or result.equal:
        # An unusable or wrong digest is replaced, so the next verification reads the copy only.
        recorded = digests.write(source, props[0], DiskDigest(length, VERIFY_PIECE, hashes),
                                 replace=digest is not None or why != _NONE_YET)
        return Verification(result.equal, length, result.compared_bytes, result.detail,
                            digest="recorded" if recorded is Digested.RECORDED else "")
    return result


def record_digest(source: BlobClient, digests: DigestStore) -> Digested:
    """Record the snapshot's digest (its allocated pieces read once, in parallel) unless a usable one is there."""
    try:
        props = source.get_blob_properties()
        digest, why = digests.read(source, props)
        if digest is not None:
            return Digested.PRESENT
        hashes = _hashes(source, props)
    except (ResourceNotFoundError, NotFoundError):       # gone before, or while, it was read
        return Digested.GONE
    except AzureError as exc:
        raise _translated(exc, f"recording the digest of {_name(source)}") from exc
    outcome = digests.write(source, props, DiskDigest(props.size, VERIFY_PIECE, hashes), replace=why != _NONE_YET)
    if outcome is None:
        raise TransientError(f"the digest of {_name(source)} could not be recorded; a retry may succeed")
    return outcome


class _PieceHashes:
    """A snapshot's piece hashes as reader threads compute them: each writes the slice of its own piece in a
    buffer that never resizes; a piece nobody hashed (unallocated) stays ZEROS."""

    def __init__(self, length: int):
        self._length = length
        self._buffer = bytearray(piece_count(length, VERIFY_PIECE) * HASH_SIZE)

    def put(self, index: int, offset: int, data: bytes) -> None:
        self._buffer[index * HASH_SIZE:(index + 1) * HASH_SIZE] = piece_hash(index, self._length, VERIFY_PIECE,
                                                                             offset, data)

    def __bytes__(self) -> bytes:
        return bytes(self._buffer)


def _hashes(source: BlobClient, props: Any) -> bytes:
    """The snapshot's piece hashes, from its allocated pages."""
    reads = spans(_allocated(source, props), props.size, VERIFY_PIECE)
    hashes = _PieceHashes(props.size)

    def hashed(index: int) -> None:
        offset, size = reads[index]
        hashes.put(index, offset, _read(source, offset, size))

    _each(hashed, list(reads))
    return bytes(hashes)


def _against_digest(target: BlobClient, props: Any, digest: DiskDigest) -> Verification:
    """The copy's allocated pieces hashed and compared; a piece the copy leaves unallocated holds zeros, which
    must be what the snapshot held there."""
    length = digest.length
    reads = spans(_allocated(target, props), length, VERIFY_PIECE)
    for index in range(piece_count(length, VERIFY_PIECE)):
        slot = digest.slot(index)
        if index not in reads and slot != ZEROS and slot != zeros_hash(piece_bounds(index, length, VERIFY_PIECE)[1]):
            return Verification(False, length, 0, f"the copy holds zeros where the snapshot has data (the "
                                                  f"{VERIFY_PIECE}-byte piece at offset {index * VERIFY_PIECE})",
                                digest="used")

    def differs(index: int) -> int | None:
        offset, size = reads[index]
        data = _read(target, offset, size)
        return None if piece_hash(index, length, VERIFY_PIECE, offset, data) == digest.expected(index) else offset

    found = _each(differs, list(reads))
    compared = sum(size for _, size in reads.values())
    if found:
        return Verification(False, length, compared, f"the bytes of the piece at offset {min(found)} differ",
                            digest="used")
    return Verification(True, length, compared, digest="used")


def _both(source: BlobClient, source_props: Any, target: BlobClient, target_props: Any) -> tuple[Verification, bytes]:
    """Both blobs read over the allocated pages of either, compared; and the snapshot's piece hashes."""
    length = source_props.size
    allocated = _allocated(source, source_props)
    in_source = spans(allocated, length, VERIFY_PIECE)
    reads = spans(allocated + _allocated(target, target_props), length, VERIFY_PIECE)
    hashes = _PieceHashes(length)

    def differs(index: int) -> int | None:
        offset, size = reads[index]
        left, right = _read(source, offset, size), _read(target, offset, size)
        if index in in_source:
            hashes.put(index, offset, left)
        return None if left == right else offset + next(i for i, (a, b) in enumerate(zip(left, right)) if a != b)

    found = _each(differs, list(reads))
    compared = sum(size for _, size in reads.values())
    detail = f"the bytes differ from offset {min(found)}" if found else ""
    return Verification(not found, length, compared, detail), bytes(hashes)


def _each(differs: Callable[[int], int | None], pieces: list[int]) -> list[int]:
    with ThreadPoolExecutor(max_workers=VERIFY_READERS, thread_name_prefix="verify") as pool:
        futures = [pool.submit(in_context(differs), piece) for piece in pieces]
        return [offset for offset in (f.result() for f in futures) if offset is not None]


def _read(blob: BlobClient, offset: int, length: int) -> bytes:
    try:
        return bytes(blob.download_blob(offset=offset, length=length, max_concurrency=1).readall())
    except AzureError as exc:
        raise _translated(exc, f"reading {length} bytes at {offset}") from exc


def _allocated(blob: BlobClient, props: Any) -> list[tuple[int, int]]:
    """The blob's allocated page ranges as (offset, length), given its properties; a block blob is one range
    over all of it."""
    if str(props.blob_type) not in ("PageBlob", "BlobType.PAGEBLOB"):
        return [(0, props.size)]
    ranges, _ = blob.get_page_ranges()
    return [(r["start"], r["end"] - r["start"] + 1) for r in ranges]


def _digest_name(container: str, blob_name: str, snapshot: str) -> str:
    return f"{container}/{blob_name}@{snapshot}"


def _plain(blob: BlobClient) -> str:
    """The blob's address without a query: a client built from a SAS connection carries its token there."""
    return blob.url.split("?", 1)[0]


def _name(source: BlobClient) -> str:
    return f"{source.container_name}/{source.blob_name}?snapshot={source.snapshot}"


def _etag(props: Any) -> str:
    return str(props.etag or "").strip('"')


def _translated(exc: AzureError, doing: str) -> Exception:
    return translate(exc, doing, service="Blob Storage", refused_hint=BLOB_REFUSED_HINT)
