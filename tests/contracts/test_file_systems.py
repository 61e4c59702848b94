"""The FileSystemReader contract, on the fake drills' unit tests can use and on the debugfs adapter reading
real ext4 images (made with mkfs.ext4, files written with debugfs: no mount, no root): the file system at an
offset is recognised with its label and size, a probe file is read byte for byte, a missing one is an
error on the check (never an exception), and bytes that hold no file system are said to hold none."""
from __future__ import annotations

import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

import pytest

from shared.adapters.filesystems import DebugfsReader
from shared.domain.restore_testing import EXT_SUPERBLOCK
from shared.ports import FileSystemReader
from tests.contracts.conftest import REAL
from tests.fakes import FakeFileSystems

PORTS = (FileSystemReader,)

FS_BYTES = 2 * 1024 * 1024
MARKER = "/var/lib/vmsnap/marker"
CONTENT = b"task-42\n\x00\xffbinary too\n"

# (reader, make(label, files) -> the bytes of an ext4 of FS_BYTES holding ``files``)
Rig = tuple[FileSystemReader, Callable[[str, dict[str, bytes]], bytes]]


def _ext4_superblock_only(label: str) -> bytes:
    """What the fake needs of an ext4: its superblock (magic, size in 1 KiB blocks, extents, label)."""
    block = bytearray(EXT_SUPERBLOCK)
    struct.pack_into("<I", block, 4, FS_BYTES // 1024)
    struct.pack_into("<H", block, 56, 0xEF53)
    struct.pack_into("<II", block, 92, 0x4, 0x40)            # has_journal; extents
    block[120:136] = label.encode()[:16].ljust(16, b"\0")
    return bytes(EXT_SUPERBLOCK) + bytes(block) + bytes(FS_BYTES - 2 * EXT_SUPERBLOCK)


def _ext4(label: str, files: dict[str, bytes]) -> bytes:
    """A real ext4 of FS_BYTES (1 KiB blocks) with ``files`` written into it, parent directories and all."""
    with tempfile.TemporaryDirectory(prefix="vmsnap-contract-") as tmp:
        image = Path(tmp) / "fs.img"
        with open(image, "wb") as handle:
            handle.truncate(FS_BYTES)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "1024", "-L", label, str(image)], check=True,
                       capture_output=True, timeout=60)
        commands = []
        for n, (path, content) in enumerate(files.items()):
            parts = path.strip("/").split("/")
            commands += [f"mkdir /{'/'.join(parts[:i])}" for i in range(1, len(parts))]
            (Path(tmp) / f"file{n}").write_bytes(content)
            commands.append(f"write {Path(tmp) / f'file{n}'} {path}")
        subprocess.run(["debugfs", "-w", "-f", "-", str(image)], input="\n".join(commands).encode(), check=True,
                       capture_output=True, timeout=60)
        return image.read_bytes()


@pytest.fixture(params=["fake", REAL("debugfs")])
def file_systems(request) -> Rig:
    if request.param == "fake":
        fake = FakeFileSystems()

        def make(label: str, files: dict[str, bytes]) -> bytes:
            fake.files.update(files)
            return _ext4_superblock_only(label)

        return fake, make
    return DebugfsReader(), _ext4


@pytest.mark.parametrize("offset", [0, 1024 * 1024])
def test_an_ext4_at_an_offset_is_recognised_with_its_label_and_size(file_systems, offset):
    """A partition 1 MiB into a disk (an MBR before it) is read where it starts; no probe: nothing is read."""
    reader, make = file_systems
    image = bytes(offset) + make("rootfs", {})
    found = reader.inspect(image, offset=offset, probe=None)
    assert (found.kind, found.label, found.blocks * 1024) == ("ext4", "rootfs", FS_BYTES)
    assert (found.probe_content, found.probe_error) == (None, None)


def test_a_probe_file_is_read_byte_for_byte(file_systems):
    reader, make = file_systems
    found = reader.inspect(make("rootfs", {MARKER: CONTENT}), offset=0, probe=MARKER)
    assert (found.kind, found.probe_content, found.probe_error) == ("ext4", CONTENT, None)


def test_a_missing_probe_file_is_an_error_on_the_check_not_an_exception(file_systems):
    reader, make = file_systems
    found = reader.inspect(make("rootfs", {MARKER: CONTENT}), offset=0, probe="/etc/nothing-here")
    assert found.kind == "ext4" and found.probe_content is None
    assert found.probe_error and "\n" not in found.probe_error


@pytest.mark.parametrize("probe", [None, MARKER])
def test_bytes_without_a_file_system_hold_none(file_systems, probe):
    """Zeros (a disk never formatted, or a restore that copied nothing) are no file system, probe or not."""
    reader, _ = file_systems
    found = reader.inspect(bytes(FS_BYTES), offset=0, probe=probe)
    assert (found.kind, found.probe_content) == (None, None)
