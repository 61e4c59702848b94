"""The FileSystemReader port with Debian's e2fsprogs: the superblock is parsed in the domain, a probe file
is read with ``debugfs -R "cat <path>"`` on a temporary copy of the partition (no mount, no root)."""
from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

from shared.domain.restore_testing import EXT_SUPERBLOCK, FileSystemCheck, ext_superblock

log = logging.getLogger(__name__)

DEBUGFS_TIMEOUT = 60


class DebugfsReader:
    def inspect(self, image: bytes, *, offset: int, probe: str | None) -> FileSystemCheck:
        found = ext_superblock(image[offset + EXT_SUPERBLOCK: offset + 2 * EXT_SUPERBLOCK])
        if found is None or probe is None:
            return found or FileSystemCheck(kind=None)
        debugfs = shutil.which("debugfs") or next((p for p in ("/usr/sbin/debugfs", "/sbin/debugfs")
                                                   if Path(p).exists()), None)
        if debugfs is None:
            return replace(found, probe_error="debugfs (Debian's e2fsprogs) is not installed where the drill runs")
        with tempfile.NamedTemporaryFile(prefix="vmsnap-drill-", suffix=".img") as copy:
            copy.write(image[offset:])
            copy.flush()
            done = subprocess.run([debugfs, "-R", f'cat "{probe}"', copy.name], capture_output=True,
                                  timeout=DEBUGFS_TIMEOUT)
        errors = [line for line in done.stderr.decode("utf-8", "replace").splitlines()
                  if line.strip() and not line.startswith("debugfs ")]
        if done.returncode != 0 or errors:
            return replace(found, probe_error="; ".join(errors) or f"debugfs exited {done.returncode}")
        return replace(found, probe_content=done.stdout)
