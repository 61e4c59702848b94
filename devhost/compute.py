# Over 400 lines on purpose: one in-memory Compute model under one lock; most calls change several resources.
"""A local Compute endpoint: the Microsoft.Compute calls a restore-point backup and restore make, over
HTTPS, answered as the Compute REST API specification says (ComputeRP api-version 2026-04-01, disks
2026-03-02: the versions the pinned ``azure-mgmt-compute`` sends), so the unmodified client talks to it.

Calls served (under ``/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute``):
``GET virtualMachines/{vm}`` (``$expand=instanceView`` adds the power state) and ``PATCH`` of its storage
profile (200, ``Location`` + ``Retry-After``: a disk at each LUN, the OS disk only while the VM is
deallocated); ``PUT/GET/DELETE restorePointCollections/{rpc}`` (``$expand=restorePoints``); ``PUT
restorePointCollections/{rpc}/restorePoints/{rp}`` (201, ``Location`` + ``Retry-After``), ``GET``
(``$expand=instanceView``) and ``DELETE`` (202, ``Location`` + ``Retry-After``) of a restore point; ``GET
disks/{name}`` and ``PUT disks/{name}`` with ``createOption: Restore`` (202, ``Location`` + ``Retry-After``;
its ``tags`` kept), ``DELETE disks/{name}`` (202, 204 when there is none, 409 while attached), ``POST
disks/{name}/beginGetAccess`` (a read SAS on the disk's bytes as ``accessSAS``) and ``endGetAccess`` (both
long-running); ``PUT snapshots/{name}`` with ``createOption: Copy`` of a disk (202, ``Location`` +
``Retry-After``), ``GET`` and ``DELETE`` (202, or 204); disks and snapshots in any resource group the
endpoint knows (``local``, plus ``add_resource_group``); and each long-running operation at its
``Location`` (``locations/{loc}/operations/{id}``, ``locations/{loc}/DiskOperations/{id}``): 202 while it
runs, then what the request would have answered (the resource, or ARM's error body).

What it follows: only those api-versions (400 ``MissingApiVersionParameter`` / ``NoRegisteredProviderFound``
otherwise); ``consistencyMode`` accepted as input only as ``CrashConsistent`` (the spec's enum text),
absent meaning application consistency; a second PUT of a restore point refused (409
``OperationNotAllowed``: existing restore points cannot be updated); instance views shaped like
``RestorePoint_Get_WithInstanceView.json``, each disk restore point copying for ``replication_seconds``
after the restore point succeeded (``completionPercent`` rising, ``ReplicationState/succeeded`` at the
end); a restore point being deleted reads ``Deleting`` for ``delete_seconds``; a VM being updated reads
``Updating`` for ``update_seconds``, a failed update ``Failed`` with ``ProvisioningState/failed/<code>`` in
its instance view; a PATCH keeps what it leaves out (no ``osDisk``: the OS disk; no ``dataDisks``: the data
disks) and replaces the ``dataDisks`` array whole; a disk is ``Attached`` (``managedBy`` its VM) while a
VM's storage profile names it; a disk or snapshot made in another region than its source is not found
(404, as Azure answers a source elsewhere); every error as ``{"error": {"code", "message"}}`` with codes
from the documentation (docs/compute-contract.md lists each answer and its source).

A managed disk is a page blob in Azurite; a disk restore point is a blob snapshot of it. An
application-consistent restore point drives the bundled extension on the local VM as the platform
does (through the local dispatcher: the guest agent's layout, protected settings sealed to the VM's
certificate; pre/post scripts and freeze as ``VMSNAP_EXTENSION_ETC``, the VM's ``/etc/azure``, says);
a crash-consistent one snapshots the blobs directly. A failed creation reports a documented code
("Troubleshoot restore point failures"): the extension's failure ``VMRestorePointClientError``, no
answer from the VM (or a VM that is not running) ``VMAgentStatusCommunicationError``, the VM's limit of
restore points or a concurrent create ``VMRestorePointClientError``, storage trouble
``VMRestorePointInternalError``.

What it cannot know, and so leaves out: the HTTP status of a failed operation at its Location (409
here, 500 for internal errors); whether Azure reports a lower consistency than asked (a pre-script that
failed, no scripts at all), so ``consistencyMode`` is always what was asked; any status at level
Warning in an instance view (the examples show none); the code of a copy in progress (only
``completionPercent`` is given then); whether a Creating restore point may be deleted (here it may);
regions other than ``local``, cross-region copies, encryption, security profiles, instant access,
incremental snapshots, restore point ``Updating``, disk and snapshot lists, VM create or any VM update but
its disks; which code Azure gives a disk attached to two VMs (not checked here), an update of a VM that is
updating, or an OS disk swap on a running VM (``PropertyChangeNotAllowed`` here).
One token (``TOKEN``) is the only identity and every call is allowed.

A restored disk is a page blob copy of the disk restore point's snapshot; its tags carry the sha256 of
its bytes now and of the snapshot it came from (not something Azure offers: here only, so a restore can
be verified byte for byte). A disk snapshot is a page blob copy of the disk as it was at the PUT.

Test hooks: ``throttle`` (answer the next calls 429 with ``Retry-After``), ``hold`` (restore points
stay ``Creating`` while set), ``fail_next`` (the next restore points fail with a documented code),
``fail_next_update`` (the next VM updates end Failed with that code, their change made), ``set_running``
(stop or start a VM), ``max_restore_points``, ``add_resource_group``, ``gate`` (hold racing requests until
all have arrived), ``replication_seconds``, ``delete_seconds``, ``update_seconds``, ``retry_after``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging
import re
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import parse_qs, urlsplit

from azure.core.exceptions import AzureError
from azure.storage.blob import BlobClient, BlobServiceClient, generate_blob_sas

from extension.codes import ExtensionCode
from shared.adapters.blob_sas import BlobSasMinter
from shared.adapters.clients import StaticTokenCredential
from shared.adapters.restore_points import CONTENT_DIGEST_TAG, SOURCE_DIGEST_TAG
from shared.adapters.dispatch_local import LocalDispatcher
from shared.clock import Clock, SystemClock
from shared.domain.command import ExtensionCommand, encode_object_str
from shared.domain.inventory import OS_DISK_LUN, BackupMethod, Disk, Vm, VmKind
from shared.domain.status import ParseError, StatusReport, parse_status_blob
from shared.domain.ticks import ticks_string
from shared.errors import VmsnapError

log = logging.getLogger(__name__)

LOCAL_SUBSCRIPTION = "00000000-0000-0000-0000-00000000c0de"
RESOURCE_GROUP = "local"
LOCATION = "local"
TOKEN = "local-compute-token"
PLATFORM_CONTAINER = "local-compute"       # status and log blobs of the platform's extension runs
# The api-versions answered, by resource provider part: the ones the pinned azure-mgmt-compute sends
# (tests/contracts/test_compute_api.py checks they are what the client asks for).
COMPUTE_API_VERSION = "2026-04-01"
DISK_API_VERSION = "2026-03-02"
_PROVIDER = "/providers/Microsoft.Compute/"
_APPLICATION = "ApplicationConsistent"
_CRASH = "CrashConsistent"
# Documented codes of failed creations ("Troubleshoot restore point failures") and the HTTP status their
# operation answers with here (Azure's is not documented).
AGENT_ERROR = "VMAgentStatusCommunicationError"
CLIENT_ERROR = "VMRestorePointClientError"
INTERNAL_ERROR = "VMRestorePointInternalError"
_FAILURE_STATUS = {INTERNAL_ERROR: 500, "InternalError": 500, "InternalExecutionError": 500,
                   "InternalOperationError": 500}
Answer = tuple[int, Any, dict[str, str]]      # HTTP status, JSON body (None: empty), extra headers
_DISK_RP_TYPES = ("disks", "snapshots")     # served at the disks api-version, in any known resource group
_ROUTE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)(?:/resourceGroups/(?P<rg>[^/]+))?/providers/Microsoft\.Compute/"
                    r"(?P<rest>.+)$", re.IGNORECASE)


@dataclass
class LocalManagedDisk:
    lun: int
    name: str
    blob_url: str           # the page blob that holds the disk's bytes
    id: str
    size_bytes: int


@dataclass
class LocalVm:
    name: str
    id: str
    vm_id: str
    disks: list[LocalManagedDisk]
    running: bool = True
    provisioning_state: str = "Succeeded"
    update_operation: str | None = None     # the running update's operation id (PATCH)
    update_started: float | None = None     # monotonic: the update ends update_seconds after
    update_error: tuple[int, str, str] | None = None    # (HTTP status, ARM code, message) it ends with

    def as_inventory_vm(self) -> Vm:
        """How the local inventory records this VM: managed disks, known by their ids."""
        return Vm(name=self.name, kind=VmKind.LOCAL, resource_id=self.id, location=LOCATION,
                  disks=tuple(Disk(lun=d.lun, blob_url="", name=d.name, size_bytes=d.size_bytes,
                                   method=BackupMethod.RESTORE_POINT, managed_disk_id=d.id) for d in self.disks))


@dataclass
class DiskRestorePoint:
    id: str
    disk: LocalManagedDisk
    snapshot_url: str | None = None     # the blob snapshot once taken (no SAS)


@dataclass
class RestorePoint:
    id: str
    name: str
    collection: str
    vm: LocalVm
    requested: str                      # consistency asked for (absent: application)
    excluded: list[str]
    time_created: dt.datetime
    operation: str                      # the create's operation id
    state: str = "Creating"
    disk_points: list[DiskRestorePoint] = field(default_factory=list)
    error: tuple[int, str, str] | None = None   # (HTTP status, ARM code, message) of a failed creation
    succeeded_at: float | None = None    # monotonic: replication runs from here
    delete_operation: str | None = None
    delete_requested: float | None = None   # monotonic: the deletion completes delete_seconds after
    refused: tuple[str, str] | None = None      # decided at the request: fails at once with this

    @property
    def consistency(self) -> str:
        """What the restore point reports: what was asked (see the module docstring)."""
        return self.requested


@dataclass
class Collection:
    id: str
    name: str
    vm: LocalVm
    guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    points: dict[str, RestorePoint] = field(default_factory=dict)


@dataclass
class _Gate:
    method: str
    path_contains: str
    barrier: threading.Barrier
    arrived: int = 0


@dataclass
class DiskResource:
    """A disk or a snapshot of the Disk RP: its ARM body, the page blob that holds its bytes (once
    copied), its create operation and, when that failed, ARM's error."""

    body: dict[str, Any]
    blob_url: str = ""
    operation: str = ""
    error: tuple[int, str, str] | None = None

    @property
    def id(self) -> str:
        return str(self.body["id"])

    @property
    def ready(self) -> bool:
        return self.error is None and self.body["properties"]["provisioningState"] == "Succeeded"


class ComputeApiError(VmsnapError):
    """An ARM error answer: HTTP status, ARM error code, message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


class LocalCompute:
    """The endpoint, its state and its test hooks. ``start()`` serves on 127.0.0.1; ``stop()`` ends it."""

    def __init__(self, blob_connection_string: str, vm_root: Path, *, port: int = 0,
                 clock: Clock | None = None, extension_timeout: float = 120.0, max_restore_points: int = 500,
                 replication_seconds: float = 1.0, delete_seconds: float = 0.5, update_seconds: float = 0.2,
                 retry_after: int = 1):
        self.blob_service = BlobServiceClient.from_connection_string(blob_connection_string)
        self.vm_root = Path(vm_root)
        self.clock = clock or SystemClock()
        self.extension_timeout = extension_timeout
        self.max_restore_points = max_restore_points       # per VM, across its collections (Azure: 500)
        self.replication_seconds = replication_seconds
        self.delete_seconds = delete_seconds
        self.update_seconds = update_seconds               # how long a VM update (PATCH) runs
        self.retry_after = retry_after                     # whole seconds, as the header carries them
        self.subscription_id = LOCAL_SUBSCRIPTION
        self.requests: list[tuple[str, str, float]] = []   # (method, path, monotonic time) of every call
        self.answered: list[tuple[str, str, int]] = []     # (method, path, HTTP status) of every answer
        self.hold = False
        # The guest's work before a restore point snapshots it (devhost/guest.py writes its marker): called
        # with the VM and the restore point's name.
        self.before_snapshot: Callable[[LocalVm, str], None] | None = None
        self.fail_next: list[tuple[str, str]] = []      # (documented code, message) for the next restore points
        self.fail_next_update: list[tuple[str, str]] = []   # (code, message) the next VM updates end with
        self._port = port
        self._lock = threading.RLock()
        self._vms: dict[str, LocalVm] = {}
        self._collections: dict[str, Collection] = {}
        self._disks: dict[tuple[str, str], DiskResource] = {}       # (resource group, name): every disk
        self._snapshots: dict[tuple[str, str], DiskResource] = {}
        self._operations: dict[str, tuple[str, Any]] = {}  # id -> (kind, restore point or disk key)
        self.resource_groups = {RESOURCE_GROUP}
        self._throttle: list[tuple[int, str, str]] = []   # (Retry-After seconds, method, path part) of next 429s
        self._gates: list[_Gate] = []
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="vmsnap-compute-")
        self.ca_file = Path(self._tmp.name) / "local-compute.pem"

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "LocalCompute":
        key_file = Path(self._tmp.name) / "local-compute.key"
        _self_signed_certificate(self.ca_file, key_file)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), _Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.compute = self          # type: ignore[attr-defined]
        try:
            self.blob_service.create_container(PLATFORM_CONTAINER)
        except AzureError:
            pass                             # exists already (a --persist run)
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-compute", daemon=True)
        self._thread.start()
        log.info("local Compute endpoint on %s", self.url)
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for gate in self._gates:
                gate.barrier.abort()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for worker in self._workers:
            worker.join(timeout=10)
        self._tmp.cleanup()

    def __enter__(self) -> "LocalCompute":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the endpoint first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def connection_string(self) -> str:
        """The ``ComputeConnection`` setting that points the app and ``vmsnap`` here."""
        return f"Endpoint={self.url};CertificateFile={self.ca_file};Token={TOKEN}"

    def client_options(self) -> dict[str, Any]:
        """What ``ComputeManagementClient`` needs besides the credential to reach this endpoint."""
        return {"base_url": self.url, "connection_verify": str(self.ca_file),
                "credential_scopes": ["https://management.azure.com/.default"]}

    @staticmethod
    def credential() -> StaticTokenCredential:
        return StaticTokenCredential(TOKEN)

    # --- the local VMs and test hooks ------------------------------------------------------------
    def add_vm(self, name: str, disks: Sequence[tuple[int, str, str, int]], *, running: bool = True) -> LocalVm:
        """Register a VM whose managed disks are the given page blobs: ``(lun, disk name, blob URL, bytes)``."""
        base = f"/subscriptions/{self.subscription_id}/resourceGroups/{RESOURCE_GROUP}{_PROVIDER}"
        vm = LocalVm(name=name, id=f"{base}virtualMachines/{name}", vm_id=str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                     disks=[LocalManagedDisk(lun, disk, url.split("?", 1)[0], f"{base}disks/{disk}", size)
                            for lun, disk, url, size in sorted(disks)], running=running)
        with self._lock:
            self._vms[name.lower()] = vm
            for disk in vm.disks:       # a VM's disks are disks of the resource group like any other
                self._disks[(RESOURCE_GROUP, disk.name.lower())] = DiskResource(
                    self._disk_body(disk.id, disk.name, disk.size_bytes, None), blob_url=disk.blob_url)
        return vm

    def set_running(self, name: str, running: bool) -> None:
        with self._lock:
            self._vms[name.lower()].running = running

    def throttle(self, count: int, retry_after: int = 1, *, method: str = "", path_contains: str = "") -> None:
        """Answer the next ``count`` calls (of ``method``, with ``path_contains`` in the path, when given)
        with 429 Too Many Requests and ``Retry-After``."""
        with self._lock:
            self._throttle.extend([(retry_after, method.upper(), path_contains)] * count)

    def gate(self, method: str, path_contains: str, parties: int, timeout: float = 30) -> None:
        """Hold the next ``parties`` calls of ``method`` on paths containing ``path_contains`` until all of
        them have arrived, then answer them together: a race made certain, not hoped for."""
        with self._lock:
            self._gates.append(_Gate(method.upper(), path_contains, threading.Barrier(parties, timeout=timeout)))

    def add_resource_group(self, name: str) -> None:
        """A resource group restored disks can be created in (VMs and restore points stay in ``local``)."""
        with self._lock:
            self.resource_groups.add(name.lower())

    def restored_disk_blob(self, resource_group: str, name: str) -> str | None:
        """The page blob URL that holds a restored disk's bytes, or None."""
        with self._lock:
            found = self._disks.get((resource_group.lower(), name.lower()))
        return found.blob_url or None if found else None

    def snapshot_blob(self, resource_group: str, name: str) -> str | None:
        """The page blob URL that holds a disk snapshot's bytes, or None."""
        with self._lock:
            found = self._snapshots.get((resource_group.lower(), name.lower()))
        return found.blob_url or None if found else None

    def vm(self, name: str) -> LocalVm:
        return self._vm(name)

    def restore_points(self, vm_name: str | None = None) -> list[RestorePoint]:
        with self._lock:
            self._settle()
            return [p for c in self._collections.values() for p in c.points.values()
                    if vm_name is None or p.vm.name.lower() == vm_name.lower()]

    # --- request handling ------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        self._pass_gate(method, path)
        with self._lock:
            self.requests.append((method, path, time.monotonic()))
            if self._throttle and self._throttle[0][1] in ("", method) and self._throttle[0][2] in path:
                wait, _, _ = self._throttle.pop(0)
                return 429, _error("TooManyRequests", "The request is being throttled; retry after "
                                   f"{wait} second(s)."), {"Retry-After": str(wait)}
            self._settle()
        match = _ROUTE.match(path)
        if not match or match["sub"] != self.subscription_id:
            raise ComputeApiError(404, "SubscriptionNotFound", f"The subscription or path {path} could not be found.")
        rest = match["rest"].split("/")
        kind = rest[0].lower()
        disk_rp = kind in _DISK_RP_TYPES
        disk_call = disk_rp or (kind == "locations" and len(rest) == 4 and rest[2].lower() == "diskoperations")
        _check_api_version(query.get("api-version"), DISK_API_VERSION if disk_call else COMPUTE_API_VERSION,
                           kind if disk_rp else "disks" if disk_call else kind)
        if kind == "locations" and len(rest) == 4 and method == "GET":
            return self._operation(rest[3])
        if match["rg"] is None or match["rg"].lower() not in self.resource_groups or (
                not disk_rp and match["rg"].lower() != RESOURCE_GROUP):
            raise ComputeApiError(404, "ResourceGroupNotFound", f"Resource group '{match['rg']}' could not be found.")
        if kind == "virtualmachines" and len(rest) == 2 and method == "GET":
            return 200, self._vm_body(self._vm(rest[1]), expand=query.get("$expand", "")), {}
        if kind == "virtualmachines" and len(rest) == 2 and method == "PATCH":
            return self._vm_update(self._vm(rest[1]), body or {})
        if kind == "snapshots" and len(rest) == 2:
            return self._snapshot_call(method, match["rg"], rest[1], body)
        if kind == "restorepointcollections" and len(rest) == 2:
            return self._collection_call(method, rest[1], query, body)
        if kind == "restorepointcollections" and len(rest) == 4 and rest[2].lower() == "restorepoints":
            return self._restore_point_call(method, rest[1], rest[3], query, body)
        if kind == "disks" and len(rest) == 2:
            return self._disk_call(method, match["rg"], rest[1], body)
        if kind == "disks" and len(rest) == 3 and method == "POST":
            return self._disk_access(match["rg"], rest[1], rest[2].lower(), body)
        raise ComputeApiError(404, "NotFound", f"The local Compute endpoint does not serve {method} {path}.")

    def _pass_gate(self, method: str, path: str) -> None:
        with self._lock:
            gate = next((g for g in self._gates if g.method == method and g.path_contains in path), None)
            if gate is not None:
                gate.arrived += 1
                if gate.arrived >= gate.barrier.parties:
                    self._gates.remove(gate)      # all have arrived: later calls pass freely
        if gate is not None:
            try:
                gate.barrier.wait()
            except threading.BrokenBarrierError:
                pass                               # timed out or stopping: answer anyway

    def _vm(self, name: str) -> LocalVm:
        with self._lock:
            vm = self._vms.get(name.lower())
        if vm is None:
            raise ComputeApiError(404, "ResourceNotFound", f"The Resource 'Microsoft.Compute/virtualMachines/{name}' "
                                                           f"under resource group '{RESOURCE_GROUP}' was not found.")
        return vm

    def _collection_call(self, method: str, name: str, query: dict[str, str], body: Any) -> Answer:
        key = name.lower()
        with self._lock:
            found = self._collections.get(key)
            if method == "PUT":
                source = ((body or {}).get("properties") or {}).get("source") or {}
                vm = self._vm_by_id(str(source.get("id") or ""))
                if found is not None and found.vm is not vm:
                    raise ComputeApiError(409, "OperationNotAllowed",
                                          "The source of a restore point collection cannot be changed.")
                created = found is None
                if found is None:
                    found = Collection(id=self._collection_id(name), name=name, vm=vm)
                    self._collections[key] = found
                return (201 if created else 200), self._collection_body(found, expand=False), {}
            if found is None:
                raise ComputeApiError(404, "ResourceNotFound", f"Restore point collection '{name}' was not found.")
            if method == "GET":
                return 200, self._collection_body(found, expand="restorepoints" in query.get("$expand", "").lower()), {}
            if method == "DELETE":
                for point in list(found.points.values()):
                    self._drop_snapshots(point)
                del self._collections[key]
                return 200, None, {}
        raise ComputeApiError(405, "MethodNotAllowed", f"{method} is not supported on a restore point collection.")

    def _restore_point_call(self, method: str, collection: str, name: str, query: dict[str, str],
                            body: Any) -> Answer:
        with self._lock:
            coll = self._collections.get(collection.lower())
            if coll is None:
                raise ComputeApiError(404, "ResourceNotFound",
                                      f"Restore point collection '{collection}' was not found.")
            point = coll.points.get(name.lower())
            if method == "GET":
                if point is None:
                    raise ComputeApiError(404, "NotFound", f"Restore point '{name}' was not found.")
                return 200, self._point_body(point, expand="instanceview" in query.get("$expand", "").lower()), {}
            if method == "DELETE":
                if point is None:
                    return 204, None, {}
                if point.delete_operation is None:
                    point.delete_operation = str(uuid.uuid4())
                    point.delete_requested = time.monotonic()
                    self._operations[point.delete_operation] = ("delete", point)
                    point.state = "Deleting"
                return 202, None, self._lro_headers(point.delete_operation)
            if method != "PUT":
                raise ComputeApiError(405, "MethodNotAllowed", f"{method} is not supported on a restore point.")
            if point is not None:
                # The spec: updating properties of an existing restore point is not allowed.
                raise ComputeApiError(409, "OperationNotAllowed", f"Restore point '{name}' already exists; its "
                                                                  f"properties cannot be changed.")
            point = self._new_point(coll, name, body or {})
            coll.points[name.lower()] = point
            self._operations[point.operation] = ("create", point)
        worker = threading.Thread(target=self._create, args=(point,), name=f"rp-{name}", daemon=True)
        self._workers.append(worker)
        worker.start()
        return 201, self._point_body(point, expand=False), self._lro_headers(point.operation)

    def _lro_headers(self, operation: str, *, disks: bool = False) -> dict[str, str]:
        kind, version = ("DiskOperations", DISK_API_VERSION) if disks else ("operations", COMPUTE_API_VERSION)
        return {"Location": f"{self.url}/subscriptions/{self.subscription_id}{_PROVIDER}locations/{LOCATION}/"
                            f"{kind}/{operation}?monitor=true&api-version={version}",
                "Retry-After": str(self.retry_after)}

    def _new_point(self, coll: Collection, name: str, body: dict[str, Any]) -> RestorePoint:
        vm = coll.vm
        properties = body.get("properties") or {}
        mode = properties.get("consistencyMode")
        if mode is not None and mode != _CRASH:
            raise ComputeApiError(400, "InvalidParameter", f"The value '{mode}' of consistencyMode is not valid "
                                                           f"as input: only {_CRASH} may be given; leave it out "
                                                           f"for application consistency.")
        excluded = [str(d.get("id", "")) for d in properties.get("excludeDisks") or []]
        known = {d.id.lower() for d in vm.disks}
        unknown = [d for d in excluded if d.lower() not in known]
        if unknown:
            raise ComputeApiError(400, "InvalidParameter", f"excludeDisks names disks not attached to the VM: "
                                                           f"{', '.join(unknown)}")
        point_id = f"{coll.id}/restorePoints/{name}"
        included = [d for d in vm.disks if d.id.lower() not in {e.lower() for e in excluded}]
        mine = [p for c in self._collections.values() if c.vm is vm for p in c.points.values()]
        refused = None
        if any(p.state == "Creating" for p in mine):
            refused = (CLIENT_ERROR, "Restore point creation failed: another restore point of this VM is being "
                                     "created; creating restore points of one VM concurrently is not supported.")
        elif len(mine) >= self.max_restore_points:
            refused = (CLIENT_ERROR, f"Restore point creation failed: the VM has {len(mine)} restore points, the "
                                     f"most it may keep; delete restore points it no longer needs and retry.")
        return RestorePoint(
            id=point_id, name=name, collection=coll.name, vm=vm, requested=mode or _APPLICATION, excluded=excluded,
            time_created=self.clock.now(), operation=str(uuid.uuid4()), refused=refused,
            disk_points=[DiskRestorePoint(f"{point_id}/diskRestorePoints/{d.name}_{uuid.uuid4()}", d)
                         for d in included])

    # --- the platform's work on a restore point ----------------------------------------------------
    def _create(self, point: RestorePoint) -> None:
        try:
            while self.hold and not self._stopping.is_set():
                time.sleep(0.05)
            if self._stopping.is_set():
                return
            with self._lock:
                failure = point.refused or (self.fail_next.pop(0) if self.fail_next else None)
            if failure is None and self.before_snapshot is not None and point.vm.running:
                self.before_snapshot(point.vm, point.name)
            if failure is not None:
                self._finish(point, error=failure)
            elif point.requested == _CRASH:
                self._snapshot_directly(point)
            elif not point.vm.running:
                # No guest, no agent: nothing reports, as for a VM whose agent is down.
                self._finish(point, error=(AGENT_ERROR, f"VM '{point.vm.name}' has not reported status for its VM "
                                                        f"agent or extensions."))
            else:
                self._snapshot_through_extension(point)
        except (AzureError, OSError, VmsnapError, ParseError) as exc:
            log.warning("restore point %s failed: %s", point.name, exc)
            self._finish(point, error=(INTERNAL_ERROR, f"Restore point creation failed with an internal error "
                                                       f"({type(exc).__name__}); retry later."))

    def _snapshot_directly(self, point: RestorePoint) -> None:
        for dpoint in point.disk_points:
            blob = BlobClient.from_blob_url(dpoint.disk.blob_url, credential=self.blob_service.credential)
            taken = blob.create_snapshot(metadata={"restorePoint": point.name})
            dpoint.snapshot_url = f"{dpoint.disk.blob_url}?snapshot={taken['snapshot']}"
        self._finish(point)

    def _snapshot_through_extension(self, point: RestorePoint) -> None:
        """Run the VMSnapshot extension on the VM with SAS URIs of the included disks; take its result."""
        sas = BlobSasMinter(self.blob_service, clock=self.clock)
        container = self.blob_service.get_container_client(PLATFORM_CONTAINER)
        stem = f"{point.vm.name}/{point.collection}/{point.name}"
        status_blob = container.get_blob_client(f"{stem}.status.json")
        log_blob = container.get_blob_client(f"{stem}.log")
        status_blob.upload_blob(b"", overwrite=True)
        log_blob.upload_blob(b"", overwrite=True)
        task_id = str(uuid.uuid4())        # the platform's own task id, not ours
        public_object = {
            "backupMetadata": [{"Key": "restorePointId", "Value": point.id}],
            "snapshotTaskToken": "",
            "includedDisks": {"dataDiskLunList": [d.disk.lun for d in point.disk_points if d.disk.lun != OS_DISK_LUN],
                              "isOSDiskIncluded": any(d.disk.lun == OS_DISK_LUN for d in point.disk_points),
                              "isAnyDiskExcluded": bool(point.excluded)},
        }
        public = {"locale": "en-us", "taskId": task_id, "commandToExecute": "snapshot",
                  "commandStartTimeUTCTicks": ticks_string(self.clock.now()),
                  "vmType": "microsoft.compute/virtualmachines", "objectStr": encode_object_str(public_object),
                  "customSettings": json.dumps({"takeSnapshotFrom": "onlyGuest", "isManagedVm": True})}
        protected = {"objectStr": encode_object_str({"blobSASUri": [sas.disk_sas_url(d.disk.blob_url)
                                                                    for d in point.disk_points]}),
                     "logsBlobUri": sas.log_sas_url(log_blob.url), "statusBlobUri": sas.status_sas_url(status_blob.url)}
        LocalDispatcher(self.vm_root).dispatch(point.vm.as_inventory_vm(), ExtensionCommand(public, protected))
        report = self._wait_for_result(status_blob.download_blob, task_id)
        if report is None:
            if not self._stopping.is_set():
                self._finish(point, error=(AGENT_ERROR, f"VM '{point.vm.name}' has not reported status for its "
                                                        f"VM agent or extensions within "
                                                        f"{self.extension_timeout:.0f} s."))
            return
        if not report.succeeded:
            self._finish(point, error=(CLIENT_ERROR, f"Restore point creation failed: the VMSnapshot extension "
                                                     f"reported code {report.code} ({_code_name(report.code)}): "
                                                     f"{report.message}"))
            return
        for entry in report.disks or ():
            if entry.index < len(point.disk_points) and entry.successful:
                point.disk_points[entry.index].snapshot_url = entry.snapshot_uri
        missing = [d.disk.name for d in point.disk_points if not d.snapshot_url]
        if missing:
            self._finish(point, error=(INTERNAL_ERROR, f"Restore point creation failed: no snapshot of disk(s) "
                                                       f"{', '.join(missing)}."))
            return
        self._finish(point)

    def _wait_for_result(self, download: Callable[[], Any], task_id: str) -> StatusReport | None:
        """The extension's final report, or None when it gave none in time (or the endpoint stops)."""
        deadline = time.monotonic() + self.extension_timeout
        while not self._stopping.is_set() and time.monotonic() <= deadline:
            data = download().readall()
            if data.strip():
                try:
                    report = parse_status_blob(data)
                except ParseError:
                    report = None              # caught mid-write: read again
                if report is not None and report.task_id == task_id and not report.in_progress:
                    return report
            time.sleep(0.1)
        return None

    def _finish(self, point: RestorePoint, *, error: tuple[str, str] | None = None) -> None:
        with self._lock:
            if point.state != "Creating":      # deleted meanwhile: what it made goes with it
                self._drop_snapshots(point)
                return
            if error is not None:
                code, message = error
                point.state, point.error = "Failed", (_FAILURE_STATUS.get(code, 409), code, message)
            else:
                point.state, point.succeeded_at = "Succeeded", time.monotonic()

    def _settle(self) -> None:
        """Complete deletions and VM updates whose time has come (under the lock)."""
        now = time.monotonic()
        for coll in self._collections.values():
            for key, point in list(coll.points.items()):
                if point.delete_requested is not None and now >= point.delete_requested + self.delete_seconds:
                    del coll.points[key]
                    self._drop_snapshots(point)
        for vm in self._vms.values():
            if (vm.update_started is not None and vm.update_operation is not None
                    and now >= vm.update_started + self.update_seconds):
                vm.update_started = None
                vm.provisioning_state = "Failed" if vm.update_error else "Succeeded"
                self._operations[vm.update_operation] = (
                    ("failed", vm.update_error) if vm.update_error else ("done", self._vm_body(vm)))

    def _drop_snapshots(self, point: RestorePoint) -> None:
        for dpoint in point.disk_points:
            if dpoint.snapshot_url:
                try:
                    BlobClient.from_blob_url(dpoint.snapshot_url, credential=self.blob_service.credential).delete_blob()
                except AzureError as exc:
                    log.warning("could not delete snapshot %s: %s", dpoint.snapshot_url, exc)
                dpoint.snapshot_url = None

    def _replicated(self, point: RestorePoint) -> int:
        """How far the disk restore points' background copy is, in percent (a copy runs from success)."""
        if point.state != "Succeeded" or point.succeeded_at is None:
            return 0
        if self.replication_seconds <= 0:
            return 100
        return min(100, int(100 * (time.monotonic() - point.succeeded_at) / self.replication_seconds))

    # --- long-running operations -----------------------------------------------------------------------
    def _operation(self, operation_id: str) -> Answer:
        """An operation's ``Location``: 202 while it runs, then the request's own answer."""
        with self._lock:
            found = self._operations.get(operation_id)
            if found is None:
                raise ComputeApiError(404, "NotFound", f"Operation '{operation_id}' was not found.")
            kind, target = found
            if kind == "done":
                return 200, target, {}
            if kind == "failed":
                status, code, message = target
                return status, _error(code, message), {}
            if kind == "update":
                return 202, None, self._lro_headers(operation_id)
            if kind == "create":
                if target.state == "Creating":
                    return 202, None, self._lro_headers(operation_id)
                if target.error is not None:
                    status, code, message = target.error
                    return status, _error(code, message), {}
                return 200, self._point_body(target, expand=False), {}
            if kind == "delete":
                if any(target is p for c in self._collections.values() for p in c.points.values()):
                    return 202, None, self._lro_headers(operation_id)
                return 200, None, {}
            resource: DiskResource = target
            if resource.error is not None:
                status, code, message = resource.error
                return status, _error(code, message), {}
            if not resource.ready:
                return 202, None, self._lro_headers(operation_id, disks=True)
            return 200, self._disk_answer(resource), {}

    # --- disks from disk restore points ------------------------------------------------------------
    def _disk_access(self, group: str, name: str, action: str, body: Any) -> Answer:
        """``beginGetAccess`` (a read SAS on the disk's bytes, as ``accessSAS``) and ``endGetAccess``; both
        long-running (202 and a Location), as Disks_GrantAccess / Disks_RevokeAccess."""
        key = (group.lower(), name.lower())
        with self._lock:
            found = self._disks.get(key)
        if found is None or not found.blob_url:
            raise ComputeApiError(404, "ResourceNotFound", f"Disk '{name}' was not found.")
        operation = str(uuid.uuid4())
        if action == "begingetaccess":
            if ((body or {}).get("access") or "").lower() != "read":
                raise ComputeApiError(400, "InvalidParameter", "access must be Read here.")
            seconds = int((body or {}).get("durationInSeconds") or 3600)
            blob = BlobClient.from_blob_url(found.blob_url)
            sas = generate_blob_sas(blob.account_name or "", blob.container_name, blob.blob_name,
                                    account_key=self.blob_service.credential.account_key, permission="r",
                                    start=self.clock.now() - dt.timedelta(minutes=5),
                                    expiry=self.clock.now() + dt.timedelta(seconds=seconds))
            result: Any = {"accessSAS": f"{found.blob_url}?{sas}"}
        elif action == "endgetaccess":
            result = None
        else:
            raise ComputeApiError(404, "NotFound", f"The local Compute endpoint does not serve {action}.")
        with self._lock:
            self._operations[operation] = ("done", result)
        return 202, None, self._lro_headers(operation, disks=True)

    def _disk_call(self, method: str, group: str, name: str, body: Any) -> Answer:
        key = (group.lower(), name.lower())
        if method == "GET":
            with self._lock:
                found = self._disks.get(key)
            if found is not None and found.error is None:
                return 200, self._disk_answer(found), {}
            raise ComputeApiError(404, "ResourceNotFound", f"Disk '{name}' was not found.")
        if method == "DELETE":
            with self._lock:
                found = self._disks.get(key)
                owner = self._attached_to(found.id) if found is not None else None
                if owner is not None:
                    raise ComputeApiError(409, "OperationNotAllowed", f"Disk {name} is attached to VM {owner.id}.")
                self._disks.pop(key, None)
            return self._deleted(found, name)
        if method != "PUT":
            raise ComputeApiError(405, "MethodNotAllowed", f"{method} is not supported on a disk here.")
        properties = (body or {}).get("properties") or {}
        creation = properties.get("creationData") or {}
        if creation.get("createOption") != "Restore":
            raise ComputeApiError(400, "InvalidParameter", "The local endpoint creates disks with createOption "
                                                           "Restore only.")
        source = str(creation.get("sourceResourceId") or "")
        location = str((body or {}).get("location") or "")
        dpoint = self._disk_point(source)
        self._check_location(location, source)
        disk_id = f"/subscriptions/{self.subscription_id}/resourceGroups/{group}{_PROVIDER}disks/{name}"
        disk = DiskResource(self._disk_body(disk_id, name, dpoint.disk.size_bytes, source, location=location,
                                            state="Updating"), operation=str(uuid.uuid4()))
        self._register(self._disks, key, disk, body, "Disk", "creationData")
        self._in_background(f"disk-{name}", self._restore, disk, dpoint.snapshot_url or "", dpoint.disk.blob_url,
                            f"{group.lower()}-{name}.vhd")
        return 202, disk.body, self._lro_headers(disk.operation, disks=True)

    def _snapshot_call(self, method: str, group: str, name: str, body: Any) -> Answer:
        """Snapshots_Get / _CreateOrUpdate (``createOption: Copy`` of a disk: 202, Location, Retry-After)
        / _Delete (202, or 204 when there is none), as DiskRP 2026-03-02 says."""
        key = (group.lower(), name.lower())
        if method == "GET":
            with self._lock:
                found = self._snapshots.get(key)
            if found is None or found.error is not None:
                raise ComputeApiError(404, "ResourceNotFound", f"Snapshot '{name}' was not found.")
            return 200, found.body, {}
        if method == "DELETE":
            with self._lock:
                found = self._snapshots.pop(key, None)
            return self._deleted(found, name)
        if method != "PUT":
            raise ComputeApiError(405, "MethodNotAllowed", f"{method} is not supported on a snapshot here.")
        creation = ((body or {}).get("properties") or {}).get("creationData") or {}
        if creation.get("createOption") != "Copy":
            raise ComputeApiError(400, "InvalidParameter", "The local endpoint creates snapshots with createOption "
                                                           "Copy (of a managed disk) only.")
        source_id = str(creation.get("sourceResourceId") or "")
        with self._lock:
            source = self._disk_by_id(source_id)
        if source is None or not source.ready:
            raise ComputeApiError(404, "NotFound", f"Resource '{source_id}' is not found.")
        location = str((body or {}).get("location") or "")
        self._check_location(location, source_id)
        snapshot_id = f"/subscriptions/{self.subscription_id}/resourceGroups/{group}{_PROVIDER}snapshots/{name}"
        size = int(source.body["properties"]["diskSizeBytes"])
        snapshot = DiskResource({"id": snapshot_id, "name": name, "type": "Microsoft.Compute/snapshots",
                                 "location": location, "sku": {"name": "Standard_LRS", "tier": "Standard"},
                                 "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": source.id},
                                                "diskSizeGB": max(1, -(-size // 2**30)), "diskSizeBytes": size,
                                                "incremental": False, "provisioningState": "Updating",
                                                "timeCreated": _iso(self.clock.now())}},
                                operation=str(uuid.uuid4()))
        # A snapshot is of the disk as it is now: its bytes are fixed here, copied in the background.
        point_in_time = BlobClient.from_blob_url(source.blob_url, credential=self.blob_service.credential) \
            .create_snapshot()["snapshot"]
        self._register(self._snapshots, key, snapshot, body, "Snapshot", "creationData")
        self._in_background(f"snapshot-{name}", self._restore, snapshot, f"{source.blob_url}?snapshot={point_in_time}",
                            source.blob_url, f"{group.lower()}-{name}.snapshot.vhd", transient=True)
        return 202, snapshot.body, self._lro_headers(snapshot.operation, disks=True)

    def _register(self, registry: dict[tuple[str, str], DiskResource], key: tuple[str, str], resource: DiskResource,
                body: Any, kind: str, fixed: str) -> None:
        with self._lock:
            if key in registry:
                # A PUT of an existing one is an update, and how it was created cannot change.
                raise ComputeApiError(409, "PropertyChangeNotAllowed", f"{kind} '{key[1]}' exists: changing "
                                                                       f"property '{fixed}' is not allowed.")
            if isinstance((body or {}).get("tags"), dict):
                resource.body["tags"] = {str(k): str(v) for k, v in body["tags"].items()}
            registry[key] = resource
            self._operations[resource.operation] = ("resource", resource)

    def _deleted(self, found: DiskResource | None, name: str) -> Answer:
        """A disk or snapshot's deletion: 204 when there was none, else its bytes go and 202 with a Location."""
        if found is None:
            return 204, None, {}
        if found.blob_url:
            try:
                BlobClient.from_blob_url(found.blob_url, credential=self.blob_service.credential).delete_blob()
            except AzureError as exc:
                log.warning("could not delete the blob of %s: %s", name, exc)
        operation = str(uuid.uuid4())
        with self._lock:
            self._operations[operation] = ("done", None)
        return 202, None, self._lro_headers(operation, disks=True)

    def _check_location(self, location: str, source: str) -> None:
        if location.replace(" ", "").lower() != LOCATION:
            # Azure looks the source up in the new resource's region: one elsewhere is not found there.
            raise ComputeApiError(404, "NotFound", f"Resource '{source}' is not found in location '{location}'.")

    def _in_background(self, name: str, work: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        worker = threading.Thread(target=work, args=args, kwargs=kwargs, name=name, daemon=True)
        self._workers.append(worker)
        worker.start()

    def _restore(self, resource: DiskResource, source_url: str, next_to: str, blob_name: str, *,
                 transient: bool = False) -> None:
        """The platform's copy of a disk restore point (or a disk, for a snapshot) into the new resource's
        page blob, in the background as in Azure; ``transient``: the source is a blob snapshot made for it."""
        name = resource.body["name"]
        try:
            data, blob_url = self._copy_blob(source_url, next_to, blob_name)
            if transient:
                BlobClient.from_blob_url(source_url, credential=self.blob_service.credential).delete_blob()
        except (AzureError, OSError) as exc:
            log.warning("%s could not be created: %s", name, exc)
            with self._lock:
                resource.error = (500, "InternalExecutionError", f"'{name}' could not be created ({type(exc).__name__}).")
                resource.body["properties"]["provisioningState"] = "Failed"
            return
        with self._lock:
            resource.blob_url = blob_url
            if not transient:
                resource.body["tags"] = {**resource.body.get("tags", {}), SOURCE_DIGEST_TAG: hashlib.sha256(data).hexdigest()}
            resource.body["properties"].update(diskSizeBytes=len(data), diskSizeGB=max(1, -(-len(data) // 2**30)),
                                               provisioningState="Succeeded")

    def _disk_answer(self, disk: DiskResource) -> dict[str, Any]:
        """The disk as GET answers it: attached or not, and for a restored disk the digest of its bytes now."""
        with self._lock:
            owner = self._attached_to(disk.id) if disk.body["type"] == "Microsoft.Compute/disks" else None
        answer = {**disk.body, "properties": dict(disk.body["properties"])}
        if disk.body["type"] == "Microsoft.Compute/disks":
            answer["properties"]["diskState"] = "Attached" if owner else "Unattached"
            if owner is not None:
                answer["managedBy"] = owner.id
        if disk.blob_url and SOURCE_DIGEST_TAG in disk.body.get("tags", {}):
            data = BlobClient.from_blob_url(disk.blob_url, credential=self.blob_service.credential) \
                .download_blob().readall()
            answer["tags"] = {**disk.body["tags"], CONTENT_DIGEST_TAG: hashlib.sha256(data).hexdigest()}
        return answer

    def _copy_blob(self, source_url: str, next_to: str, blob_name: str) -> tuple[bytes, str]:
        """A blob's (or blob snapshot's) bytes in a new page blob in the container of ``next_to``."""
        container = BlobClient.from_blob_url(next_to).container_name
        target = self.blob_service.get_blob_client(container, blob_name)
        data = BlobClient.from_blob_url(source_url, credential=self.blob_service.credential).download_blob().readall()
        target.create_page_blob(len(data))
        for offset in range(0, len(data), 4 * 1024 * 1024):
            chunk = data[offset: offset + 4 * 1024 * 1024]
            if chunk.strip(b"\0"):
                target.upload_page(chunk, offset=offset, length=len(chunk))
        return data, target.url

    def _disk_body(self, disk_id: str, name: str, size: int, source: str | None, *,
                   location: str | None = None, state: str = "Succeeded") -> dict[str, Any]:
        creation = {"createOption": "Restore", "sourceResourceId": source} if source else {"createOption": "Empty"}
        return {"id": disk_id, "name": name, "type": "Microsoft.Compute/disks", "location": location or LOCATION,
                "sku": {"name": "Standard_LRS", "tier": "Standard"},
                "properties": {"creationData": creation, "diskSizeGB": max(1, -(-size // 2**30)),
                               "diskSizeBytes": size, "provisioningState": state, "timeCreated": _iso(self.clock.now())}}

    def _disk_by_id(self, disk_id: str) -> DiskResource | None:
        """(under the lock)"""
        return next((d for d in self._disks.values() if d.id.lower() == disk_id.lower()), None)

    def _attached_to(self, disk_id: str) -> LocalVm | None:
        """The VM the disk is attached to (under the lock)."""
        return next((vm for vm in self._vms.values() if any(d.id.lower() == disk_id.lower() for d in vm.disks)), None)

    # --- VM updates: the disks in its storage profile ----------------------------------------------
    def _vm_update(self, vm: LocalVm, body: dict[str, Any]) -> Answer:
        """VirtualMachines_Update (PATCH) of the storage profile: each disk at its LUN as the body names it
        (the OS disk only while the VM is deallocated); 200 with the VM Updating, Location and Retry-After;
        the operation ends after ``update_seconds``, as ``fail_next_update`` says."""
        properties = body.get("properties") or {}
        if set(properties) - {"storageProfile"} or set(body) - {"properties"}:
            raise ComputeApiError(400, "InvalidParameter", "The local endpoint updates a VM's storage profile only.")
        profile = properties.get("storageProfile") or {}
        entries = ([(OS_DISK_LUN, profile["osDisk"])] if profile.get("osDisk") else []) + \
            [(d.get("lun"), d) for d in profile.get("dataDisks") or []]
        with self._lock:
            # A PATCH keeps what it leaves out: the OS disk without osDisk, the data disks without dataDisks.
            wanted = {d.lun: d.id for d in vm.disks
                      if ("osDisk" if d.lun == OS_DISK_LUN else "dataDisks") not in profile}
            for lun, entry in entries:
                if not isinstance(lun, int) or lun < OS_DISK_LUN or lun in wanted:
                    raise ComputeApiError(400, "InvalidParameter", f"Each data disk needs a LUN of its own "
                                                                   f"from 0 ({lun!r} given).")
                wanted[lun] = str((entry.get("managedDisk") or {}).get("id") or "")
            disks = []
            for lun, disk_id in sorted(wanted.items()):
                found = self._disk_by_id(disk_id)
                if found is None or not found.ready:
                    raise ComputeApiError(404, "NotFound", f"Disk '{disk_id}' at LUN {lun} is not found.")
                disks.append(LocalManagedDisk(lun, found.body["name"], found.blob_url, found.id,
                                              int(found.body["properties"]["diskSizeBytes"])))
            os_disk = next(d.id for d in vm.disks if d.lun == OS_DISK_LUN)
            if vm.running and wanted.get(OS_DISK_LUN, "").lower() != os_disk.lower():
                raise ComputeApiError(409, "PropertyChangeNotAllowed", "Changing property 'osDisk.managedDisk.id' "
                                                                       "is not allowed: deallocate the VM first.")
            vm.disks = disks
            vm.provisioning_state, vm.update_operation = "Updating", str(uuid.uuid4())
            vm.update_started = time.monotonic()
            failure = self.fail_next_update.pop(0) if self.fail_next_update else None
            vm.update_error = (_FAILURE_STATUS.get(failure[0], 409), *failure) if failure else None
            self._operations[vm.update_operation] = ("update", vm)
            return 200, self._vm_body(vm), self._lro_headers(vm.update_operation)

    def _disk_point(self, disk_point_id: str) -> DiskRestorePoint:
        with self._lock:
            for point in self.restore_points():
                for dpoint in point.disk_points:
                    if dpoint.id.lower() == disk_point_id.lower() and dpoint.snapshot_url and \
                            point.state == "Succeeded":
                        return dpoint
        raise ComputeApiError(404, "NotFound", f"Resource '{disk_point_id}' is not found.")

    # --- bodies ------------------------------------------------------------------------------------
    def _vm_by_id(self, vm_id: str) -> LocalVm:
        with self._lock:
            for vm in self._vms.values():
                if vm.id.lower() == vm_id.lower():
                    return vm
        raise ComputeApiError(400, "InvalidParameter", f"source.id {vm_id!r} is not a VM of this subscription.")

    def _collection_id(self, name: str) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{RESOURCE_GROUP}{_PROVIDER}" \
               f"restorePointCollections/{name}"

    def _vm_body(self, vm: LocalVm, *, expand: str = "") -> dict[str, Any]:
        def disk(d: LocalManagedDisk) -> dict[str, Any]:
            entry = {"name": d.name, "caching": "ReadWrite" if d.lun == OS_DISK_LUN else "None",
                     "createOption": "FromImage" if d.lun == OS_DISK_LUN else "Attach",
                     "diskSizeGB": max(1, -(-d.size_bytes // 2**30)),
                     "managedDisk": {"id": d.id, "storageAccountType": "Standard_LRS"}}
            if d.lun == OS_DISK_LUN:
                entry["osType"] = "Linux"
            else:
                entry["lun"] = d.lun
            return entry

        os_disks = [disk(d) for d in vm.disks if d.lun == OS_DISK_LUN]
        properties: dict[str, Any] = {
            "vmId": vm.vm_id, "hardwareProfile": {"vmSize": "Standard_B1s"}, "provisioningState": vm.provisioning_state,
            "storageProfile": {"osDisk": os_disks[0] if os_disks else None,
                               "dataDisks": [disk(d) for d in vm.disks if d.lun != OS_DISK_LUN]},
            "osProfile": {"computerName": vm.name, "adminUsername": "azureuser",
                          "linuxConfiguration": {"provisionVMAgent": True}, "allowExtensionOperations": True}}
        if "instanceview" in expand.lower():
            power = "PowerState/running" if vm.running else "PowerState/deallocated"
            # As Azure reports a failed update: ProvisioningState/failed/<code>, at level Error.
            provisioning = (_status(f"ProvisioningState/failed/{vm.update_error[1]}", "Error", vm.update_error[2])
                            if vm.provisioning_state == "Failed" and vm.update_error else
                            _status(f"ProvisioningState/{vm.provisioning_state.lower()}", "Info"))
            properties["instanceView"] = {"statuses": [provisioning, _status(power, "Info")]}
        return {"id": vm.id, "name": vm.name, "type": "Microsoft.Compute/virtualMachines", "location": LOCATION,
                "properties": properties}

    def _collection_body(self, coll: Collection, *, expand: bool) -> dict[str, Any]:
        properties: dict[str, Any] = {"source": {"id": coll.vm.id, "location": LOCATION},
                                      "restorePointCollectionId": coll.guid, "provisioningState": "Succeeded"}
        if expand:
            properties["restorePoints"] = [self._point_body(p, expand=False) for p in coll.points.values()]
        return {"id": coll.id, "name": coll.name, "type": "Microsoft.Compute/restorePointCollections",
                "location": LOCATION, "properties": properties}

    def _point_body(self, point: RestorePoint, *, expand: bool) -> dict[str, Any]:
        by_disk = {d.disk.id: d for d in point.disk_points}

        def disk(d: LocalManagedDisk) -> dict[str, Any]:
            entry: dict[str, Any] = {"name": d.name, "caching": "ReadWrite" if d.lun == OS_DISK_LUN else "None",
                                     "managedDisk": {"id": d.id, "storageAccountType": "Standard_LRS"},
                                     "diskRestorePoint": {"id": by_disk[d.id].id}}
            if d.lun == OS_DISK_LUN:
                entry["osType"] = "Linux"
            else:
                entry["lun"] = d.lun
            return entry

        # As in the API's examples, an excluded disk is named in excludeDisks only.
        kept = [d for d in point.vm.disks if d.id in by_disk]
        os_disks = [disk(d) for d in kept if d.lun == OS_DISK_LUN]
        properties: dict[str, Any] = {
            "excludeDisks": [{"id": e} for e in point.excluded],
            "sourceMetadata": {
                "vmId": point.vm.vm_id, "hardwareProfile": {"vmSize": "Standard_B1s"}, "location": LOCATION,
                "storageProfile": {"osDisk": os_disks[0] if os_disks else None,
                                   "dataDisks": [disk(d) for d in kept if d.lun != OS_DISK_LUN]},
                "osProfile": {"computerName": point.vm.name, "adminUsername": "azureuser",
                              "linuxConfiguration": {"provisionVMAgent": True}, "allowExtensionOperations": True}},
            "provisioningState": point.state,
            "consistencyMode": point.consistency,
            "timeCreated": _iso(point.time_created),
        }
        if expand:
            properties["instanceView"] = self._instance_view(point)
        return {"id": point.id, "name": point.name,
                "type": "Microsoft.Compute/restorePointCollections/restorePoints", "properties": properties}

    def _instance_view(self, point: RestorePoint) -> dict[str, Any]:
        """As RestorePoint_Get_WithInstanceView.json: per disk restore point its copy's progress (the final
        ``ReplicationState/succeeded`` once copied), the restore point's status once all are."""
        if point.state == "Failed":
            return {"diskRestorePoints": [], "statuses": []}
        percent = self._replicated(point)
        replication: dict[str, Any] = {"completionPercent": percent}
        if percent >= 100:
            replication["status"] = _status("ReplicationState/succeeded", "Info")
        return {"diskRestorePoints": [{"id": d.id, "replicationStatus": dict(replication)} for d in point.disk_points],
                "statuses": [_status("ReplicationState/succeeded", "Info")] if percent >= 100 else []}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        compute: LocalCompute = self.server.compute          # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers: dict[str, str] = {}
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            status, body = 401, _error("AuthenticationFailed", "Authentication failed: no valid bearer token.")
        else:
            try:
                status, body, headers = compute.handle(method, parts.path, query, json.loads(raw) if raw else None)
            except ComputeApiError as exc:
                status, body = exc.status, _error(exc.code, str(exc))
            except ValueError as exc:
                status, body = 400, _error("InvalidRequestContent", f"The request content was invalid: {exc}")
            except AzureError as exc:          # Azurite failed under us: what ARM says for its own outages
                status, body = 500, _error("InternalServerError", f"storage failed: {type(exc).__name__}")
        with compute._lock:
            compute.answered.append((method, parts.path, status))
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("local compute: " + format, *args)


def _check_api_version(given: str | None, accepted: str, resource_type: str) -> None:
    """ARM's answer to a request without the api-version this endpoint serves for ``resource_type``."""
    if not given:
        raise ComputeApiError(400, "MissingApiVersionParameter",
                              "The api-version query parameter (?api-version=) is required for all requests.")
    if given != accepted:
        raise ComputeApiError(400, "NoRegisteredProviderFound",
                              f"No registered resource provider found for location '{LOCATION}' and API version "
                              f"'{given}' for type '{resource_type}'. The supported api-versions are '{accepted}'.")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _status(code: str, level: str, message: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"code": code, "level": level, "displayStatus": code.rsplit("/", 1)[-1].capitalize()}
    if message:
        status["message"] = message
    return status


def _code_name(code: int | None) -> str:
    try:
        return ExtensionCode(code if code is not None else -1).name
    except ValueError:
        return f"code{code}"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat()


def _self_signed_certificate(cert_file: Path, key_file: Path) -> None:
    """A certificate for 127.0.0.1 and localhost, made now; the client trusts exactly this file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vmsnap local compute")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
