"""What the local demo VMs' guests hold and do, for restore drills to prove content: an OS disk with an MBR
and a real ext4 file system (Debian's e2fsprogs, no mount, no root), and a marker file the guest writes
before each backup snapshots it (``/var/lib/vmsnap/marker``: the backup's task id). Development only."""
from __future__ import annotations

import logging
import struct
import subprocess
import tempfile
from pathlib import Path

from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential
from azure.storage.blob import BlobClient

from shared.adapters.dispatch_local import LocalDispatcher
from shared.domain.command import ExtensionCommand
from shared.domain.inventory import OS_DISK_LUN, Vm

# What BlobClient takes as a credential: an account key, a SAS, or an identity.
BlobCredential = str | dict[str, str] | AzureNamedKeyCredential | AzureSasCredential | TokenCredential | None

log = logging.getLogger(__name__)

MARKER = "/var/lib/vmsnap/marker"
PARTITION_START = 1024 * 1024
_PAGE = 4 * 1024 * 1024


def os_disk_image(size: int, label: str) -> bytes:
    """A disk image: an MBR with one Linux partition from 1 MiB to the end, holding an empty ext4."""
    with tempfile.TemporaryDirectory(prefix="vmsnap-guest-") as tmp:
        part = Path(tmp) / "root.img"
        part.write_bytes(b"")
        with open(part, "r+b") as handle:
            handle.truncate(size - PARTITION_START)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "1024", "-L", label[:16], str(part)], check=True,
                       capture_output=True, timeout=60)
        fs = part.read_bytes()
    mbr = bytearray(512)
    mbr[446:462] = struct.pack("<B3sB3sII", 0x80, b"\0\0\0", 0x83, b"\0\0\0", PARTITION_START // 512,
                               (size - PARTITION_START) // 512)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr) + bytes(PARTITION_START - 512) + fs


def write_marker(blob_url: str, credential: BlobCredential, text: str) -> None:
    """Write the marker file into the ext4 of the OS disk blob (the guest's own write), uploading only the
    pages that changed."""
    blob = BlobClient.from_blob_url(blob_url, credential=credential)
    before = blob.download_blob().readall()
    with tempfile.TemporaryDirectory(prefix="vmsnap-guest-") as tmp:
        image, content = Path(tmp) / "disk.img", Path(tmp) / "marker"
        image.write_bytes(before)
        content.write_text(text + "\n")
        target = f"{image}?offset={PARTITION_START}"
        commands = "\n".join(["mkdir /var", "mkdir /var/lib", "mkdir /var/lib/vmsnap", f"rm {MARKER}",
                              f"write {content} {MARKER}"])
        subprocess.run(["debugfs", "-w", "-f", "-", target], input=commands.encode(), capture_output=True,
                       check=True, timeout=60)
        after = image.read_bytes()
    for offset in range(0, len(after), _PAGE):
        chunk = after[offset:offset + _PAGE]
        if chunk != before[offset:offset + _PAGE]:
            blob.upload_page(chunk, offset=offset, length=len(chunk))
    log.info("guest wrote %s = %s into %s", MARKER, text, blob_url)


class MarkingDispatcher(LocalDispatcher):
    """The local dispatcher, whose guests write the marker (the task id) before the extension runs."""

    def __init__(self, vm_root: Path, credential: BlobCredential):
        super().__init__(vm_root)
        self._credential = credential

    def dispatch(self, vm: Vm, command: ExtensionCommand) -> None:
        os_disk = next((d for d in vm.disks if d.lun == OS_DISK_LUN and d.blob_url), None)
        if os_disk is not None and is_guest_disk(os_disk.blob_url, self._credential):
            write_marker(os_disk.blob_url, self._credential, command.task_id)
        super().dispatch(vm, command)


def is_guest_disk(blob_url: str, credential: BlobCredential) -> bool:
    """Whether the disk holds the demo guest's file system (its first sector is an MBR)."""
    head = BlobClient.from_blob_url(blob_url, credential=credential).download_blob(offset=0, length=512).readall()
    return head[510:512] == b"\x55\xaa"
