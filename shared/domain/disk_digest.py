"""A disk snapshot's digest: per fixed piece of the blob, the SHA-256 of the piece's bytes (unallocated pages
read as zeros), so a restored copy is verified by reading the copy only. Pure: the piece grid, the hash of a
piece from the part of it that was read, and the digest's binary form (docs/restore.md#the-digest)."""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from functools import lru_cache

from shared.domain.message_body import schema_object
from shared.domain.policy import check_name
from shared.errors import ValidationError

_MAGIC = b"VMSNDG01"
_HEADER = struct.Struct("<8sQQ")       # magic, blob length, piece size
HASH_SIZE = 32
ZEROS = bytes(HASH_SIZE)              # the mark of a piece with no allocated page in the snapshot


class DigestUnusable(ValueError):
    """A stored digest that cannot vouch for this snapshot; the message says why."""


@dataclass(frozen=True)
class DiskDigest:
    """``hashes`` holds one 32-byte slot per piece, in order: a SHA-256, or ZEROS for an unallocated piece.
    One bytes object, not a tuple of them: a 4 TiB disk has 512 Ki pieces (16 MiB of hashes)."""

    length: int
    piece: int
    hashes: bytes

    def slot(self, index: int) -> bytes:
        return self.hashes[index * HASH_SIZE:(index + 1) * HASH_SIZE]

    def expected(self, index: int) -> bytes:
        """The SHA-256 the piece's bytes must have (an unallocated piece: that of its zeros)."""
        found = self.slot(index)
        return zeros_hash(piece_bounds(index, self.length, self.piece)[1]) if found == ZEROS else found

    def encode(self) -> bytes:
        return _HEADER.pack(_MAGIC, self.length, self.piece) + self.hashes


def piece_count(length: int, piece: int) -> int:
    return -(-length // piece)


def piece_bounds(index: int, length: int, piece: int) -> tuple[int, int]:
    """(offset, length) of piece ``index``; the last one ends with the blob."""
    start = index * piece
    return start, min(piece, length - start)


def spans(ranges: list[tuple[int, int]], length: int, piece: int) -> dict[int, tuple[int, int]]:
    """Piece index -> (offset, length) of the one read that covers every allocated byte of ``ranges``
    ((offset, length) pairs) within that piece; pieces no range touches are absent."""
    found: dict[int, tuple[int, int]] = {}
    for offset, size in ranges:
        end = min(offset + size, length)
        at = offset
        while at < end:
            index = at // piece
            stop = min(end, (index + 1) * piece)
            low, high = found.get(index, (at, stop))
            found[index] = (min(low, at), max(high, stop))
            at = stop
    return {index: (low, high - low) for index, (low, high) in sorted(found.items())}


def piece_hash(index: int, length: int, piece: int, read_at: int, data: bytes) -> bytes:
    """SHA-256 of piece ``index`` given ``data`` read from ``read_at``: the rest of the piece is zeros (the
    read covered every allocated byte of it). hashlib releases the GIL on buffers this large."""
    start, size = piece_bounds(index, length, piece)
    digest = hashlib.sha256()
    _feed_zeros(digest, read_at - start)
    digest.update(data)
    _feed_zeros(digest, start + size - read_at - len(data))
    return digest.digest()


@lru_cache(maxsize=4)
def zeros_hash(size: int) -> bytes:
    digest = hashlib.sha256()
    _feed_zeros(digest, size)
    return digest.digest()


def decode(raw: bytes, *, length: int, piece: int) -> DiskDigest:
    """The digest in ``raw``, if it describes a blob of ``length`` bytes cut in pieces of ``piece``;
    DigestUnusable saying why otherwise."""
    if len(raw) < _HEADER.size:
        raise DigestUnusable(f"it has {len(raw)} bytes, fewer than its header")
    magic, recorded, cut = _HEADER.unpack_from(raw)
    if magic != _MAGIC:
        raise DigestUnusable("it is not a digest of this format")
    if recorded != length:
        raise DigestUnusable(f"it describes {recorded} bytes, the snapshot has {length}")
    if cut != piece:
        raise DigestUnusable(f"its pieces are {cut} bytes, verification reads {piece}")
    hashes = raw[_HEADER.size:]
    if len(hashes) != piece_count(length, piece) * HASH_SIZE:
        raise DigestUnusable(f"it holds {len(hashes) // HASH_SIZE} hashes for {piece_count(length, piece)} pieces")
    return DiskDigest(length, piece, hashes)


DIGEST_REQUEST_SCHEMA = "vmsnap.digest.v1"


@dataclass(frozen=True)
class DigestRequest:
    """A message to the digests worker: record the digest of each blob snapshot of one new recovery point,
    right after its backup, so that even the first restore of the point reads the copy only."""

    vm_name: str
    rp_name: str

    @property
    def message_id(self) -> str:
        # A request sent twice (an ingestion redelivered after it sent one) is dropped by the queue.
        return f"digest-{self.vm_name.lower()}-{self.rp_name}"

    def to_json(self) -> str:
        return json.dumps({"schema": DIGEST_REQUEST_SCHEMA, "vmName": self.vm_name, "rpName": self.rp_name})

    @classmethod
    def from_json(cls, body: bytes | str) -> "DigestRequest":
        data = schema_object(body, DIGEST_REQUEST_SCHEMA, "a digest request")
        rp = data.get("rpName")
        if not isinstance(rp, str) or not rp.isascii() or not rp.isdigit() or len(rp) > 32:
            raise ValidationError("rpName must be a recovery point's name (digits)", field="rpName")
        return cls(vm_name=check_name(data.get("vmName"), "vmName", "VM"), rp_name=rp)


_ZERO_BLOCK = bytes(1024 * 1024)


def _feed_zeros(digest: "hashlib._Hash", count: int) -> None:
    block = memoryview(_ZERO_BLOCK)
    while count > 0:
        take = min(count, len(block))
        digest.update(block[:take])
        count -= take
