"""Dispatch to a VM simulated on this machine: lay the command out as the guest agent (WALA) would in
``<vm_root>/<vm name>`` and run the bundled handler's ``enable``, which forks its daemon and returns.

As in Azure, the protected settings (the SAS URIs) reach the VM encrypted to its certificate: the
VM's key pair lives in ``<vm_root>/<vm name>/waagent`` (WALA's ``/var/lib/waagent``), made on the
first dispatch, and the handler decrypts with it. Nothing on the VM's disk holds a SAS in the clear.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from extension.config import VM_DISKS_ENV, WAAGENT_ENV
from extension.crypto import encrypt_protected_settings, ensure_transport_certificate
from extension.layout import SEQ_ENV, LayoutError, scrub_settings_file, write_extension_root
from extension.storage import write_simulated_disks
from shared.domain.command import ExtensionCommand
from shared.domain.inventory import Vm
from shared.errors import PermanentError, TransientError
from shared.redaction import redact

log = logging.getLogger(__name__)

# The guest agent kills a handler command after 300 s; enable normally returns within seconds.
ENABLE_TIMEOUT_SECONDS = 300
_SETTINGS_FILE = re.compile(r"^(\d+)[._]settings$")   # the handler renames old ones N.settings -> N_settings
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class LocalDispatcher:
    """One extension root per local VM; every dispatch writes the next ``config/<seq>.settings``."""

    def __init__(self, vm_root: Path):
        self.vm_root = Path(vm_root)

    def extension_root(self, vm: Vm) -> Path:
        return self.vm_root / vm.name

    def waagent_dir(self, vm: Vm) -> Path:
        return self.extension_root(vm) / "waagent"

    def disks_file(self, vm: Vm) -> Path:
        """The VM's hardware as its handler sees it: its page-blob disks and their sizes."""
        return self.extension_root(vm) / "disks.json"

    def dispatch(self, vm: Vm, command: ExtensionCommand) -> None:
        root = self.extension_root(vm)
        root.mkdir(parents=True, exist_ok=True)
        with _locked(root):
            seq = next_sequence_number(root)
            try:
                thumbprint, cert_pem = ensure_transport_certificate(self.waagent_dir(vm), vm.name)
                sealed = encrypt_protected_settings(command.protected_settings, cert_pem)
                settings_file = write_extension_root(root, seq, command.public_settings, sealed, thumbprint)
                write_simulated_disks(self.disks_file(vm), (
                    {"lun": d.lun, "name": d.name, "sizeBytes": d.size_bytes} for d in vm.disks))
            except (LayoutError, OSError, ValueError) as exc:
                raise PermanentError(f"the extension root of VM {vm.name} ({root}) is unusable: "
                                     f"{redact(str(exc))}") from exc
            try:
                self._enable(root, seq, vm, command)
            except TransientError:
                # Not taken: no handler will read (and scrub) these settings, and the retry writes
                # a new sequence number, so the protected settings must not stay behind.
                self._scrub(settings_file, vm, command)
                raise

    @staticmethod
    def _scrub(settings_file: Path, vm: Vm, command: ExtensionCommand) -> None:
        try:
            scrub_settings_file(settings_file)
        except OSError as exc:
            log.warning("could not scrub %s on VM %s (task %s): %s", settings_file, vm.name,
                        command.task_id, exc.strerror)

    def _enable(self, root: Path, seq: int, vm: Vm, command: ExtensionCommand) -> None:
        env = dict(os.environ)
        env[SEQ_ENV] = str(seq)
        env[WAAGENT_ENV] = str(self.waagent_dir(vm))
        env[VM_DISKS_ENV] = str(self.disks_file(vm))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        try:
            result = subprocess.run([sys.executable, "-m", "extension", "enable"], cwd=root, env=env,
                                    stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    timeout=ENABLE_TIMEOUT_SECONDS)
        except (OSError, subprocess.SubprocessError) as exc:
            raise TransientError(f"could not run the extension's enable for VM {vm.name}: "
                                 f"{redact(str(exc))}") from exc
        if result.returncode != 0:
            tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise TransientError(f"the extension's enable for VM {vm.name} exited {result.returncode}: "
                                 f"{redact(tail) or 'no output'}")
        log.info("local extension enabled on VM %s: seq %s, task %s", vm.name, seq, command.task_id)


def next_sequence_number(root: Path) -> int:
    """One more than the highest sequence number ever written in ``root/config`` (0 for the first)."""
    numbers = [int(m.group(1)) for p in (root / "config").glob("*settings")
               if (m := _SETTINGS_FILE.match(p.name))]
    return max(numbers, default=-1) + 1


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    # Two workers dispatching to one VM at once must not pick the same sequence number.
    with open(root / ".dispatch.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
