"""Azurite (Blob and Table) as a child process of the project: installed from npm into
``node_modules`` (pinned, with upstream's lookup fix backported: ``patches/``, docs/local-stack.md),
started on demand, always stopped, on fixed or free ports."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from devhost.ports import free_ports, port_in_use, wait_for_port
from devhost.processes import cpu_seconds, end_process
from shared.errors import ConfigurationError

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented; not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# A second account for the Functions host's own storage (blob receipts, timer status), apart from the
# app's data as in Azure (infra/app/storage.bicep makes two accounts).
HOST_ACCOUNT = "devhostaccount1"
# Azurite closes an idle keep-alive connection after 5 s by default, while the SDK's pool (requests)
# keeps idle connections without limit and reuses them: a request sent as Azurite closes the socket
# dies with ConnectionResetError, and azure-core does not retry a POST (table batches). Keep them
# open as long as Azure's own front ends do (about 4 minutes idle).
KEEP_ALIVE_SECONDS = 240
# Node starts Azurite in about a second on an idle machine and in tens of seconds on a loaded one; a
# start that fails ends the wait at once (the process exits), so this only bounds a process that hangs.
STARTUP_LIMIT = 180.0
# Starts on freshly chosen ports after another process took a chosen one first.
PORT_TRIES = 3
# Where the patched Azurite writes a line per blob write (patches/, docs/ingestion.md); the local host
# reads the same setting to find them.
BLOB_EVENTS_SETTING = "AZURITE_BLOB_EVENTS"


class _PortTaken(ConfigurationError):
    """A port of Azurite's own choosing was bound by another process first."""


class Azurite:
    """One Azurite process serving Blob and Table (Queue on a throwaway port: unused here)."""

    def __init__(self, blob_port: int = 0, table_port: int = 0, location: Path | None = None):
        self._given = (blob_port, table_port)    # 0: a port of our choosing, chosen again if another takes it
        self._choose_ports()
        self.location = location          # None: in memory, gone when stopped
        self._proc: subprocess.Popen | None = None
        self._log_dir: str | None = None
        self.blob_events: str | None = None     # the BlobCreated event file (patches/), once started

    @property
    def connection_string(self) -> str:
        return self._connection_string(ACCOUNT)

    @property
    def host_connection_string(self) -> str:
        """The host storage account's (``AzureWebJobsStorage``)."""
        return self._connection_string(HOST_ACCOUNT)

    def _connection_string(self, account: str) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{account};"
                f"TableEndpoint=http://127.0.0.1:{self.table_port}/{account};")

    def _choose_ports(self, *, besides: frozenset[int] = frozenset()) -> None:
        # Queue listens too, on a port of its own; a port given here is free until Azurite binds it.
        blob_port, table_port = self._given
        spare = iter(free_ports(3, besides={blob_port, table_port, *besides}))
        self.blob_port = blob_port or next(spare)
        self.table_port = table_port or next(spare)
        self._queue_port = next(spare)

    def start(self) -> "Azurite":
        """Start Azurite; raises ConfigurationError when it does not listen. A port of its own choosing that
        another process binds first (the choice checks a port, then lets it go until Azurite binds it) is
        chosen again, up to PORT_TRIES times; a port the caller gave is its to free."""
        for _ in range(PORT_TRIES - 1):
            try:
                return self._start_once()
            except _PortTaken as exc:
                log.info("%s; choosing other ports", exc)
                self._choose_ports(besides=frozenset({self.blob_port, self.table_port, self._queue_port}))
        return self._start_once()

    def _start_once(self) -> "Azurite":
        binary = PROJECT_ROOT / "node_modules" / ".bin" / "azurite"
        if not binary.exists():
            raise ConfigurationError("Azurite is not installed in node_modules; run ./dev setup")
        for name, port, given in zip(("blob", "table"), (self.blob_port, self.table_port), self._given):
            if port_in_use(port):
                raise (ConfigurationError if given else _PortTaken)(
                    f"port {port} for Azurite {name} is in use; stop what holds it "
                    f"(e.g. another Azurite) or choose other ports")
        args = [str(binary), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose",
                "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
                "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
                "--blobKeepAliveTimeout", str(KEEP_ALIVE_SECONDS), "--tableKeepAliveTimeout", str(KEEP_ALIVE_SECONDS),
                "--queueHost", "127.0.0.1", "--queuePort", str(self._queue_port)]
        if self.location is None:
            args.append("--inMemoryPersistence")
        else:
            self.location.mkdir(parents=True, exist_ok=True)
            args += ["--location", str(self.location)]
        self._log_dir = tempfile.mkdtemp(prefix="azurite-")
        log_file = open(os.path.join(self._log_dir, "azurite.log"), "wb")
        accounts = ";".join(f"{account}:{ACCOUNT_KEY}" for account in (ACCOUNT, HOST_ACCOUNT))
        # One line per blob write, which the local host reads as Event Grid's BlobCreated events.
        self.blob_events = os.path.join(self._log_dir, "blob-events.jsonl")
        Path(self.blob_events).touch()
        self._proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, cwd=self._log_dir,
                                      env={**os.environ, "AZURITE_ACCOUNTS": accounts,
                                           BLOB_EVENTS_SETTING: self.blob_events})
        log_file.close()
        proc = self._proc
        try:
            listening = all(wait_for_port(port, STARTUP_LIMIT, alive=lambda: proc.poll() is None)
                            for port in (self.blob_port, self.table_port))
        except BaseException:       # Ctrl-C or SIGTERM while it starts: ``with`` has no exit to run yet
            self.stop()
            raise
        if not listening:
            output = self._tail()
            how = "exited" if proc.poll() is not None else f"was not listening after {STARTUP_LIMIT:.0f} s"
            self.stop()
            # Only a port of its own choosing is chosen again; one the caller gave is the caller's to free.
            taken = proc.poll() is not None and "EADDRINUSE" in output and not all(self._given)
            raise (_PortTaken if taken else ConfigurationError)(
                f"Azurite did not start on ports {self.blob_port}/{self.table_port} (it {how}): "
                f"{output or 'no output'}")
        log.info("Azurite listening: blob %s, table %s", self.blob_port, self.table_port)
        return self

    def cpu_seconds(self) -> float | None:
        """CPU time the Azurite process has used so far (Linux; None elsewhere or when not running)."""
        return None if self._proc is None else cpu_seconds(self._proc.pid)

    def _tail(self) -> str:
        if self._log_dir is None:       # never started
            return ""
        try:
            text = Path(self._log_dir, "azurite.log").read_text(errors="replace")
        except OSError:
            return ""
        return " ".join(text.strip().splitlines()[-3:])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            end_process(proc, 5)
        if self._log_dir:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = self.blob_events = None

    def __enter__(self) -> "Azurite":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
