"""A VM for the bundled handler: an extension root, page-blob disks and status/log blobs on the
session's Azurite (the shared ``azurite`` fixture), and /etc/azure and /var/lib/waagent moved into
the test's own directory. Nothing here freezes a file system."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from devhost.azurite import ACCOUNT, ACCOUNT_KEY
from extension.handler import run_daemon
from extension.layout import HandlerEnvironment, write_extension_root
from extension.settings import encode_object_str, ticks_for
from extension.transport import HttpClientTransport, HttpResponse
from shared.clock import FixedClock

NOW = datetime(2026, 3, 1, 2, 0, tzinfo=timezone.utc)
V2 = "microsoft.compute/virtualmachines"
METADATA = [{"Key": "jobId", "Value": "j-42"}, {"Key": "attempt", "Value": "1"}]

requires_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the real ownership rule wants root-owned scripts and plugin config"
)


@pytest.fixture(scope="session")
def blob_service(azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture(autouse=True)
def vm_paths(tmp_path: Path, monkeypatch) -> Path:
    """/etc/azure and /var/lib/waagent for this test only; never a real freeze."""
    etc = tmp_path / "etc-azure"
    etc.mkdir()
    monkeypatch.setenv("VMSNAP_EXTENSION_ETC", str(etc))
    monkeypatch.setenv("VMSNAP_WAAGENT_DIR", str(tmp_path / "waagent"))
    monkeypatch.delenv("VMSNAP_FREEZE_MOUNTS", raising=False)
    return etc


@dataclass
class Vm:
    """One simulated VM: its disks, its status/log blobs, its extension root and its clock."""

    container: Any
    root: Path
    etc: Path
    disks: list[str]
    clock: FixedClock = field(default_factory=lambda: FixedClock(NOW))
    task_counter: int = 0

    # -- storage --------------------------------------------------------------------------------
    def sas(self, blob: str, *, permission: str = "rw") -> str:
        token = generate_blob_sas(
            account_name=ACCOUNT,
            container_name=self.container.container_name,
            blob_name=blob,
            account_key=ACCOUNT_KEY,
            permission=BlobSasPermissions.from_string(permission),
            start=datetime.now(timezone.utc) - timedelta(minutes=5),
            expiry=datetime.now(timezone.utc) + timedelta(hours=1),
        )
        return f"{self.container.get_blob_client(blob).url}?{token}"

    def text(self, blob: str) -> str:
        data = self.container.get_blob_client(blob).download_blob().readall()
        return data.decode("utf-8").rstrip("\0 ")

    def status_blob(self) -> dict:
        """The status blob's one element, parsed (the service's view)."""
        return json.loads(self.text("status.txt"))[0]

    def snapshots(self, blob: str) -> list:
        return [
            b
            for b in self.container.list_blobs(name_starts_with=blob, include=["snapshots", "metadata"])
            if b.name == blob and b.snapshot
        ]

    # -- settings -------------------------------------------------------------------------------
    def settings(self, *, disks: list[str] | None = None, **public: Any) -> tuple[dict, dict]:
        """Public and protected settings as the service sends them; ``public`` overrides public
        keys (a value of None removes the key)."""
        self.task_counter += 1
        public_object = {
            "backupMetadata": METADATA,
            "snapshotTaskToken": "",
            "includedDisks": {"dataDiskLunList": [0], "isOSDiskIncluded": True},
        }
        settings = {
            "locale": "en-us",
            "taskId": f"0f6c1e2a-7b1d-4a57-9c0e-2d8e1c4b9a11_{self.task_counter}",
            "commandToExecute": "snapshot",
            "commandStartTimeUTCTicks": ticks_for(self.clock.now() - timedelta(minutes=2)),
            "vmType": V2,
            "objectStr": encode_object_str(public_object),
            "customSettings": json.dumps({"takeSnapshotFrom": "onlyGuest", "isManagedVm": False}),
        }
        for key, value in public.items():
            if value is None:
                settings.pop(key, None)
            else:
                settings[key] = value
        sas = [self.sas(d) for d in (self.disks if disks is None else disks)]
        # Where the documented schema puts every SAS: in the protected settings.
        protected = {
            "objectStr": encode_object_str({"blobSASUri": sas}),
            "statusBlobUri": self.sas("status.txt"),
            "logsBlobUri": self.sas("log.txt"),
        }
        return settings, protected

    def write(self, seq: int, public: dict, protected: dict | str, thumbprint: str | None = None) -> Path:
        return write_extension_root(self.root, seq, public, protected, thumbprint)

    def run(self, seq: int = 0, *, settings: tuple[dict, dict] | None = None, **kwargs: Any) -> dict:
        """Write ``settings`` (default: a fresh two-disk snapshot command) and run the daemon."""
        public, protected = settings or self.settings()
        self.write(seq, public, protected)
        kwargs.setdefault("clock", self.clock)
        kwargs.setdefault("plugin_config_path", self.etc / "VMSnapshotScriptPluginConfig.json")
        return run_daemon(self.root, seq, **kwargs)

    def status_file(self, seq: int = 0) -> list:
        return json.loads(HandlerEnvironment.load(self.root).status_file(seq).read_text())

    # -- pre/post scripts -----------------------------------------------------------------------
    def scripts(
        self,
        pre: str = "exit 0",
        post: str = "exit 0",
        *,
        config_mode: int = 0o600,
        script_mode: int = 0o700,
        **config: Any,
    ) -> Path:
        """Install pre/post scripts and the plugin config; each script appends its name and args
        to ``script-runs.txt`` before running its body."""
        runs = self.etc / "script-runs.txt"
        paths = {}
        for name, body in (("pre", pre), ("post", post)):
            path = self.etc / f"{name}.sh"
            path.write_text(f'echo "{name} $*" >> {runs}\n{body}\n')
            path.chmod(script_mode)
            paths[name] = str(path)
        doc = {
            "pluginName": "ScriptRunner",
            "preScriptLocation": paths["pre"],
            "postScriptLocation": paths["post"],
            "preScriptParams": ["p1", "p2"],
            "postScriptParams": ["q1"],
            "timeoutInSeconds": 10,
            "continueBackupOnFailure": True,
            "fsFreezeEnabled": True,
        }
        doc.update(config)
        path = self.etc / "VMSnapshotScriptPluginConfig.json"
        path.write_text(json.dumps(doc))
        path.chmod(config_mode)
        return path

    def script_runs(self) -> list[str]:
        path = self.etc / "script-runs.txt"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def vm(blob_service, unique_name, tmp_path: Path, vm_paths: Path):
    """Two 1 KiB page-blob disks with data, empty block blobs for status and log."""
    container = blob_service.create_container(unique_name("ext"))
    disks = ["os.vhd", "data0.vhd"]
    for name in disks:
        blob = container.get_blob_client(name)
        blob.create_page_blob(size=1024)
        blob.upload_page(name.encode().ljust(512, b"\0"), offset=0, length=512)
    for name in ("status.txt", "log.txt"):
        container.get_blob_client(name).upload_blob(b"", overwrite=True)
    yield Vm(container=container, root=tmp_path / "root", etc=vm_paths, disks=disks)
    container.delete_container()


def signatures(sas_url: str) -> list[str]:
    """A SAS's signature as it appears in the URL and decoded: neither may leak anywhere."""
    raw = urlsplit(sas_url).query
    encoded = [part.split("=", 1)[1] for part in raw.split("&") if part.startswith("sig=")]
    return encoded + parse_qs(raw)["sig"]


class RecordingTransport:
    """The real transport, remembering every request; ``fail`` maps a URL substring to a response."""

    def __init__(self, fail: dict[str, HttpResponse] | None = None) -> None:
        self.inner = HttpClientTransport()
        self.calls: list[tuple[str, str, dict, bytes]] = []
        self.fail = fail or {}

    def request(self, method, url, *, headers=None, body=b"", timeout=10.0):
        self.calls.append((method, url, dict(headers or {}), body))
        for fragment, response in self.fail.items():
            if fragment in url:
                return response
        return self.inner.request(method, url, headers=headers, body=body, timeout=timeout)

    def status_writes(self) -> list[dict]:
        """Every status document PUT to the status blob, in order, parsed."""
        return [
            json.loads(body)[0]
            for method, url, headers, body in self.calls
            if method == "PUT" and "/status.txt?" in url and headers.get("x-ms-blob-type") == "BlockBlob"
        ]


def message_of(element: dict) -> dict:
    """``formattedMessage.message`` decoded (it is a JSON string inside JSON)."""
    return json.loads(element["status"]["formattedMessage"]["message"])


def health(element: dict) -> tuple[int, int]:
    info = element["status"]["vmHealthInfo"]
    return info["vmHealthState"], info["vmHealthStatusCode"]
