"""File-system freeze around the snapshot (the real ``fsfreezer.py``), behind a small port so tests never freeze anything.

The real handler runs a bundled ``safefreeze`` binary that self-thaws after ``timeout`` seconds.
Here :class:`FsFreezeFreezer` runs util-linux ``fsfreeze`` per mount point and supplies the same
guarantee itself: a watchdog timer thaws everything when ``timeout`` expires, even if the snapshot
hangs, and the caller thaws in a ``finally``.
"""
from __future__ import annotations

import logging
import subprocess
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from extension.codes import ExtensionCode
from extension.config import FREEZE_MOUNTS_ENV

log = logging.getLogger(__name__)

FREEZABLE_TYPES = frozenset({"ext3", "ext4", "xfs", "btrfs"})


class FreezeError(Exception):
    """Freezing failed; ``code`` is 121, 122 or 123. Nothing is left frozen when this is raised."""

    def __init__(self, code: ExtensionCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Freezer(Protocol):
    def freeze(self, mounts: Sequence[str], timeout: float) -> None:
        """Freeze the mounts; self-thaw after ``timeout`` seconds; raise :class:`FreezeError`."""

    def thaw(self) -> bool:
        """Thaw what is frozen; False if the snapshot may be inconsistent (late or failed thaw)."""


class NoopFreezer:
    """Freezes nothing: the default off a real VM and whenever no mount point is configured."""

    def freeze(self, mounts: Sequence[str], timeout: float) -> None:
        if mounts:
            log.info("freeze skipped (no freezer configured) for %s", ", ".join(mounts))

    def thaw(self) -> bool:
        return True


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stderr: str = ""


CommandRunner = Callable[[Sequence[str], float], CommandResult]


def run_command(argv: Sequence[str], timeout: float) -> CommandResult:
    """Run a command; ``subprocess.TimeoutExpired`` propagates."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    return CommandResult(done.returncode, done.stderr)


class FsFreezeFreezer:
    """``fsfreeze --freeze`` each mount in order, ``--unfreeze`` in reverse, with a self-thaw deadline."""

    def __init__(
        self,
        runner: CommandRunner = run_command,
        *,
        freeze_wait: float = 66.0,
        command: str = "fsfreeze",
    ) -> None:
        self._run = runner
        self._freeze_wait = freeze_wait
        self._command = command
        self._frozen: list[str] = []
        self._lock = threading.Lock()
        self._watchdog: threading.Timer | None = None
        self._expired = False

    def freeze(self, mounts: Sequence[str], timeout: float) -> None:
        self._expired = False
        for mount in mounts:
            try:
                result = self._run([self._command, "--freeze", mount], self._freeze_wait)
            except subprocess.TimeoutExpired:
                self._thaw_all()
                raise FreezeError(
                    ExtensionCode.FailedRetryableFsFreezeTimeout,
                    f"freezing {mount} did not finish within {self._freeze_wait:g} s",
                ) from None
            except OSError as exc:
                self._thaw_all()
                raise FreezeError(
                    ExtensionCode.FailedRetryableFsFreezeFailed, f"cannot run {self._command}: {exc}"
                ) from exc
            if result.returncode != 0:
                self._thaw_all()
                stderr = result.stderr.strip()
                code = (
                    ExtensionCode.FailedRetryableUnableToOpenMount
                    if "cannot open" in stderr.lower() or "failed to open" in stderr.lower()
                    else ExtensionCode.FailedRetryableFsFreezeFailed
                )
                raise FreezeError(code, f"freezing {mount} failed: {stderr or result.returncode}")
            with self._lock:
                self._frozen.append(mount)
        if self._frozen:
            self._watchdog = threading.Timer(timeout, self._expire)
            self._watchdog.daemon = True
            self._watchdog.start()
            log.info("frozen %s; self-thaw in %g s", ", ".join(self._frozen), timeout)

    def thaw(self) -> bool:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        clean = self._thaw_all()
        return clean and not self._expired

    def _expire(self) -> None:
        log.error("freeze deadline reached before the snapshot finished: thawing now")
        self._expired = True
        self._thaw_all()

    def _thaw_all(self) -> bool:
        with self._lock:
            frozen, self._frozen = self._frozen, []
        clean = True
        for mount in reversed(frozen):
            try:
                result = self._run([self._command, "--unfreeze", mount], self._freeze_wait)
            except (subprocess.TimeoutExpired, OSError) as exc:
                log.error("thawing %s failed: %s", mount, exc)
                clean = False
                continue
            if result.returncode != 0:
                log.error("thawing %s failed: %s", mount, result.stderr.strip())
                clean = False
        return clean


def freeze_mounts(
    env: Mapping[str, str], mounts_to_skip: Sequence[str], proc_mounts: str | None = None
) -> list[str]:
    """The mount points to freeze: none unless ``VMSNAP_FREEZE_MOUNTS`` opts in.

    ``VMSNAP_FREEZE_MOUNTS=/data,/`` names them; ``auto`` selects like the real handler (ext3/4,
    xfs, btrfs, no loop devices, reversed, ``/`` last). ``MountsToSkip`` applies either way.
    """
    wanted = (env.get(FREEZE_MOUNTS_ENV) or "").strip()
    if not wanted:
        return []
    skip = set(mounts_to_skip)
    if wanted.lower() != "auto":
        return _unique(m.strip() for m in wanted.split(",") if m.strip() and m.strip() not in skip)
    return [m for m in local_mounts(proc_mounts) if m not in skip]


def local_mounts(proc_mounts: str | None = None) -> list[str]:
    """Freezable mount points as the real handler selects them: reversed, ``/`` last."""
    if proc_mounts is None:
        try:
            with open("/proc/mounts", encoding="utf-8") as fh:
                proc_mounts = fh.read()
        except OSError:
            return []
    found = []
    for line in proc_mounts.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[2] not in FREEZABLE_TYPES or fields[0].startswith("/dev/loop"):
            continue
        found.append(fields[1].replace("\\040", " "))
    ordered = [m for m in reversed(_unique(found)) if m != "/"]
    return ordered + (["/"] if "/" in found else [])


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
