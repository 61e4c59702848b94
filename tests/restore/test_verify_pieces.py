"""How verification cuts a disk's allocated pages into reads (one per piece of a fixed grid, none over a
piece, pieces larger than the 4 MiB under which Azurite hashes every ranged read it serves), and the
digest's piece hashes and binary form (shared/domain/disk_digest.py)."""
from __future__ import annotations

import hashlib
import os

import pytest

from shared.adapters.verification import VERIFY_PIECE
from shared.domain.disk_digest import ZEROS, DigestUnusable, DiskDigest, decode, piece_hash, spans, zeros_hash

MIB = 2**20


def test_a_fully_written_disk_is_read_in_pieces_azurite_does_not_hash():
    """A 64 MiB disk written end to end is read in 8 MiB pieces: Azurite computes an MD5 of every ranged
    read of at most 4 MiB, which cost it more CPU than the read (docs/restore.md)."""
    assert spans([(0, 64 * MIB)], 64 * MIB, VERIFY_PIECE) == {i: (i * 8 * MIB, 8 * MIB) for i in range(8)}
    assert VERIFY_PIECE > 4 * MIB


def test_the_allocated_ranges_of_both_blobs_are_read_once_per_piece_and_only_within_the_disk():
    """Ranges of the snapshot and the copy in one piece become one read from the first allocated byte to the
    last; a range across a piece boundary is cut there; nothing past the disk's end is read."""
    ranges = [(0, 512), (256, 1024), (10 * MIB, 9 * MIB), (20 * MIB, 4096)]

    assert spans(ranges, 20 * MIB, 8 * MIB) == {0: (0, 1280), 1: (10 * MIB, 6 * MIB), 2: (16 * MIB, 3 * MIB)}


def test_a_piece_hash_is_that_of_its_whole_bytes_whatever_part_of_it_was_read():
    """The hash of a piece read from its allocated span equals the SHA-256 of the whole piece with zeros
    elsewhere, so the snapshot and a copy allocated differently hash the same when their bytes are equal."""
    data = os.urandom(3000)
    whole = bytes(1000) + data + bytes(MIB - 4000)

    assert piece_hash(2, 5 * MIB, MIB, 2 * MIB + 1000, data) == hashlib.sha256(whole).digest()
    assert piece_hash(2, 5 * MIB, MIB, 2 * MIB, bytes(1000) + data) == hashlib.sha256(whole).digest()
    assert zeros_hash(MIB) == hashlib.sha256(bytes(MIB)).digest() != ZEROS


def test_a_digest_reads_back_and_one_of_another_length_or_piece_size_is_refused_saying_why():
    digest = DiskDigest(3 * MIB + 5, MIB, os.urandom(32 * 4))
    raw = digest.encode()

    assert decode(raw, length=3 * MIB + 5, piece=MIB) == digest
    for kwargs, why in (({"length": 4 * MIB, "piece": MIB}, "describes"),
                        ({"length": 3 * MIB + 5, "piece": 2 * MIB}, "pieces are"),):
        with pytest.raises(DigestUnusable, match=why):
            decode(raw, **kwargs)
    with pytest.raises(DigestUnusable, match="hashes for"):
        decode(raw[:-1], length=3 * MIB + 5, piece=MIB)
    with pytest.raises(DigestUnusable, match="not a digest"):
        decode(b"x" * len(raw), length=3 * MIB + 5, piece=MIB)


def test_a_verification_names_a_blob_without_its_sas():
    """A client built from a SAS connection carries the token in its URL; messages name the blob without it."""
    from azure.storage.blob import BlobClient

    from shared.adapters.verification import _plain

    blob = BlobClient.from_blob_url("https://acct.blob.core.windows.net/c/d.vhd?sv=2024-05-04&sig=SECRETSIG")
    assert "sig=" in blob.url and _plain(blob) == "https://acct.blob.core.windows.net/c/d.vhd"
