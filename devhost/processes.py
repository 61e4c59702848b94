"""Stopping what the local stack started indirectly: the bundled handler's detached daemons."""
from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)


def processes_under(root: Path) -> list[int]:
    """Pids of this machine's processes whose working directory lies under ``root`` (Linux /proc)."""
    root = root.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if cwd == root or root in cwd.parents:
            found.append(int(entry.name))
    return found


def stop_processes_under(root: Path, grace: float = 3.0) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds, every process working under ``root``."""
    if not root.exists():
        return 0
    pids = processes_under(root)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.1)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    if pids:
        log.info("killed %d leftover process(es) under %s", len(pids), root)
    return len(pids)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
