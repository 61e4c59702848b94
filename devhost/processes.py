"""Stopping what the local stack started indirectly: the bundled handler's detached daemons, and a
whole process group (a stack with its Azurite) when its parent is not there to stop it."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
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


def processes_in_group(group: int) -> list[int]:
    """Pids of the live processes of process group ``group`` (Linux /proc; zombies left out)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == group:      # state, ppid, pgrp
            found.append(int(entry.name))
    return found


def is_azurite(pid: int) -> bool:
    """Whether process ``pid`` is an Azurite (its command line names it; Linux /proc)."""
    try:
        return "azurite" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def stop_group(group: int, grace: float = 5.0) -> int:
    """SIGTERM the process group, then SIGKILL what is left of it after ``grace`` seconds; returns how
    many were still alive for the SIGKILL."""
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return 0
    deadline = time.monotonic() + grace
    while processes_in_group(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = processes_in_group(group)
    if left:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(left)


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


def interrupt_on_sigterm() -> None:
    """Have SIGTERM (``timeout``, ``kill``) end this process as Ctrl-C does, with KeyboardInterrupt in the
    main thread: its ``with`` blocks run, so the Azurite and Service Bus it started stop with it. By
    default SIGTERM ends a Python process on the spot and leaves them running. For a script's main
    thread only (the benchmarks): a library must not take over a process's signals."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def end_process(proc: subprocess.Popen, grace: float) -> None:
    """End a child: SIGTERM, then SIGKILL when it has not ended within ``grace`` seconds; reaped either way."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a live process has used so far (Linux /proc; None when unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")      # utime + stime
