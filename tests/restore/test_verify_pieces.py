"""How verification cuts a disk's allocated pages into reads: whole ranges merged, none over a piece,
and pieces larger than the 4 MiB under which Azurite hashes every ranged read it serves."""
from __future__ import annotations

from shared.adapters.snapshots import VERIFY_PIECE, _pieces

MIB = 2**20


def test_a_fully_written_disk_is_read_in_pieces_azurite_does_not_hash():
    """A 64 MiB disk written end to end is read in 8 MiB pieces: Azurite computes an MD5 of every ranged
    read of at most 4 MiB, which cost it more CPU than the read (docs/restore.md)."""
    pieces = _pieces([(0, 64 * MIB)], 64 * MIB)

    assert pieces == [(at, 8 * MIB) for at in range(0, 64 * MIB, 8 * MIB)]
    assert VERIFY_PIECE > 4 * MIB


def test_the_allocated_ranges_of_both_blobs_are_read_once_and_only_within_the_disk():
    """Overlapping ranges of the snapshot and the copy are merged; nothing past the disk's end is read."""
    ranges = [(0, 512), (256, 1024), (10 * MIB, 9 * MIB), (20 * MIB, 4096)]

    assert _pieces(ranges, 20 * MIB) == [(0, 1280), (10 * MIB, 8 * MIB), (18 * MIB, MIB)]
