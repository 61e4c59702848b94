"""A local Compute endpoint: the few Microsoft.Compute calls a restore-point backup makes, over HTTPS,
answered in the REST API's shapes so the unmodified ``azure-mgmt-compute`` client talks to it.

Calls served (under ``/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute``):
``GET virtualMachines/{vm}`` (``$expand=instanceView`` adds the power state); ``PUT/GET/DELETE
restorePointCollections/{rpc}`` (``$expand=restorePoints``); ``PUT restorePointCollections/{rpc}/
restorePoints/{rp}`` (201 + ``Azure-AsyncOperation``, polled at ``locations/{loc}/operations/{id}``),
``GET`` (``$expand=instanceView``) and ``DELETE`` of a restore point; ``GET disks/{name}`` (a VM's
disk or a restored one) and ``PUT disks/{name}`` with ``createOption: Restore`` from a disk restore
point, in any resource group the endpoint knows (``local``, plus ``add_resource_group``).

A managed disk is a page blob in Azurite; a disk restore point is a blob snapshot of it. An
application-consistent restore point drives the bundled extension on the local VM as the platform
does (through the local dispatcher: the guest agent's layout, protected settings sealed to the VM's
certificate; pre/post scripts and freeze as ``VMSNAP_EXTENSION_ETC``, the VM's ``/etc/azure``, says)
and takes its result from the status blob; a crash-consistent one snapshots the blobs directly.

A restored disk is a page blob copy of the disk restore point's snapshot; its tags carry the sha256 of
its bytes now and of the snapshot it came from (not something Azure offers: here only, so a restore can
be verified byte for byte). Creating a disk whose name is taken is refused (409), never a replacement.

Left out: every other call and property (no VM create/update, no disk list/delete, no
incremental-snapshot accounting, no regions, no cross-region copy, no restore point ``Updating``,
no encryption or security profiles); ``sourceMetadata`` carries only what the examples show for a
Linux VM; background replication completes at once (``completionPercent`` 100); the api-version is
accepted as given; one token (``TOKEN``) is the only identity and every call is allowed.

Test hooks: ``throttle`` (answer the next calls 429 with ``Retry-After``), ``hold`` (restore points
stay ``Creating`` for good), ``fail_next`` (the next restore points fail with an ARM error),
``set_running`` (a stopped VM refuses restore points), ``max_restore_points``, ``add_resource_group``.
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

from azure.core.credentials import AccessToken
from azure.core.exceptions import AzureError
from azure.storage.blob import BlobClient, BlobServiceClient

from extension.codes import ExtensionCode
from shared.adapters.blob_sas import BlobSasMinter
from shared.adapters.dispatch_local import LocalDispatcher
from shared.clock import Clock, SystemClock
from shared.domain.command import ExtensionCommand, encode_object_str
from shared.domain.inventory import OS_DISK_LUN, Disk, DiskKind, Vm, VmKind
from shared.domain.status import ParseError, StatusReport, parse_status_blob
from shared.domain.ticks import ticks_string
from shared.errors import VmsnapError

log = logging.getLogger(__name__)

LOCAL_SUBSCRIPTION = "00000000-0000-0000-0000-00000000c0de"
RESOURCE_GROUP = "local"
LOCATION = "local"
TOKEN = "local-compute-token"
PLATFORM_CONTAINER = "local-compute"       # status and log blobs of the platform's extension runs
_PROVIDER = "/providers/Microsoft.Compute/"
Answer = tuple[int, Any, dict[str, str]]      # HTTP status, JSON body (None: empty), extra headers
_ROUTE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)(?:/resourceGroups/(?P<rg>[^/]+))?/providers/Microsoft\.Compute/"
                    r"(?P<rest>.+)$", re.IGNORECASE)


class StaticTokenCredential:
    """The one credential the local endpoint accepts (azure-core's TokenCredential protocol)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(TOKEN, int(time.time()) + 3600)


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

    def as_inventory_vm(self) -> Vm:
        """How the local inventory records this VM: managed disks, known by their ids."""
        return Vm(name=self.name, kind=VmKind.LOCAL, resource_id=self.id, location=LOCATION,
                  disks=tuple(Disk(lun=d.lun, blob_url="", name=d.name, size_bytes=d.size_bytes,
                                   kind=DiskKind.MANAGED, managed_disk_id=d.id) for d in self.disks))


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
    requested: str                      # consistency asked for
    excluded: list[str]
    time_created: dt.datetime
    operation: str
    state: str = "Creating"
    consistency: str | None = None      # consistency obtained
    disk_points: list[DiskRestorePoint] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, str] | None = None


@dataclass
class Collection:
    id: str
    name: str
    vm: LocalVm
    guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    points: dict[str, RestorePoint] = field(default_factory=dict)


class ComputeApiError(VmsnapError):
    """An ARM error answer: HTTP status, ARM error code, message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


class LocalCompute:
    """The endpoint, its state and its test hooks. ``start()`` serves on 127.0.0.1; ``stop()`` ends it."""

    def __init__(self, blob_connection_string: str, vm_root: Path, *, port: int = 0,
                 clock: Clock | None = None, extension_timeout: float = 120.0, max_restore_points: int = 500):
        self.blob_service = BlobServiceClient.from_connection_string(blob_connection_string)
        self.vm_root = Path(vm_root)
        self.clock = clock or SystemClock()
        self.extension_timeout = extension_timeout
        self.max_restore_points = max_restore_points
        self.subscription_id = LOCAL_SUBSCRIPTION
        self.requests: list[tuple[str, str, float]] = []   # (method, path, monotonic time) of every call
        self.hold = False
        self.fail_next: list[tuple[str, str]] = []      # (ARM error code, message) for the next restore points
        self._port = port
        self._lock = threading.RLock()
        self._vms: dict[str, LocalVm] = {}
        self._collections: dict[str, Collection] = {}
        self._disks: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}   # (rg, name) -> (answer, blob URL)
        self.resource_groups = {RESOURCE_GROUP}
        self._throttle: list[tuple[int, str, str]] = []   # (Retry-After seconds, method, path part) of next 429s
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

    def client_options(self) -> dict[str, Any]:
        """What ``ComputeManagementClient`` needs besides the credential to reach this endpoint."""
        return {"base_url": self.url, "connection_verify": str(self.ca_file),
                "credential_scopes": ["https://management.azure.com/.default"]}

    # --- the local VMs -------------------------------------------------------------------------
    def add_vm(self, name: str, disks: Sequence[tuple[int, str, str, int]], *, running: bool = True) -> LocalVm:
        """Register a VM whose managed disks are the given page blobs: ``(lun, disk name, blob URL, bytes)``."""
        base = f"/subscriptions/{self.subscription_id}/resourceGroups/{RESOURCE_GROUP}{_PROVIDER}"
        vm = LocalVm(name=name, id=f"{base}virtualMachines/{name}", vm_id=str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                     disks=[LocalManagedDisk(lun, disk, url.split("?", 1)[0], f"{base}disks/{disk}", size)
                            for lun, disk, url, size in sorted(disks)], running=running)
        with self._lock:
            self._vms[name.lower()] = vm
        return vm

    def set_running(self, name: str, running: bool) -> None:
        with self._lock:
            self._vms[name.lower()].running = running

    def throttle(self, count: int, retry_after: int = 1, *, method: str = "", path_contains: str = "") -> None:
        """Answer the next ``count`` calls (of ``method``, with ``path_contains`` in the path, when given)
        with 429 Too Many Requests and ``Retry-After``."""
        with self._lock:
            self._throttle.extend([(retry_after, method.upper(), path_contains)] * count)

    def add_resource_group(self, name: str) -> None:
        """A resource group restored disks can be created in (VMs and restore points stay in ``local``)."""
        with self._lock:
            self.resource_groups.add(name.lower())

    def restored_disk_blob(self, resource_group: str, name: str) -> str | None:
        """The page blob URL that holds a restored disk's bytes, or None."""
        with self._lock:
            found = self._disks.get((resource_group.lower(), name.lower()))
        return found[1] if found else None

    def restore_points(self, vm_name: str | None = None) -> list[RestorePoint]:
        with self._lock:
            return [p for c in self._collections.values() for p in c.points.values()
                    if vm_name is None or p.vm.name.lower() == vm_name.lower()]

    # --- request handling ------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        with self._lock:
            self.requests.append((method, path, time.monotonic()))
            if self._throttle and self._throttle[0][1] in ("", method) and self._throttle[0][2] in path:
                wait, _, _ = self._throttle.pop(0)
                return 429, _error("TooManyRequests", "The request is being throttled; retry after "
                                   f"{wait} second(s)."), {"Retry-After": str(wait)}
        match = _ROUTE.match(path)
        if not match or match["sub"] != self.subscription_id:
            raise ComputeApiError(404, "SubscriptionNotFound", f"no such subscription or path: {path}")
        rest = match["rest"].split("/")
        kind = rest[0].lower()
        if kind == "locations" and len(rest) == 4 and method == "GET":
            return 200, self._operation(rest[3]), {}
        if match["rg"] is None or match["rg"].lower() not in self.resource_groups or (
                kind != "disks" and match["rg"].lower() != RESOURCE_GROUP):
            raise ComputeApiError(404, "ResourceGroupNotFound", f"Resource group '{match['rg']}' could not be found.")
        if kind == "virtualmachines" and len(rest) == 2 and method == "GET":
            return 200, self._vm_body(self._vm(rest[1]), expand=query.get("$expand", "")), {}
        if kind == "restorepointcollections" and len(rest) == 2:
            return self._collection_call(method, rest[1], query, body)
        if kind == "restorepointcollections" and len(rest) == 4 and rest[2].lower() == "restorepoints":
            return self._restore_point_call(method, rest[1], rest[3], query, body)
        if kind == "disks" and len(rest) == 2:
            return self._disk_call(method, match["rg"], rest[1], body)
        raise ComputeApiError(404, "NotFound", f"the local Compute endpoint does not serve {method} {path}")

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
        raise ComputeApiError(405, "MethodNotAllowed", f"{method} is not supported on a restore point collection")

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
                if point is not None:
                    self._drop_snapshots(point)
                    del coll.points[name.lower()]
                return (200 if point is not None else 204), None, {}
            if method != "PUT":
                raise ComputeApiError(405, "MethodNotAllowed", f"{method} is not supported on a restore point")
            if point is not None:
                raise ComputeApiError(409, "OperationNotAllowed", "Updating properties of an existing restore "
                                                                  "point is not allowed.")
            point = self._new_point(coll, name, body or {})
            coll.points[name.lower()] = point
        worker = threading.Thread(target=self._create, args=(point,), name=f"rp-{name}", daemon=True)
        self._workers.append(worker)
        worker.start()
        async_url = (f"{self.url}/subscriptions/{self.subscription_id}{_PROVIDER}locations/{LOCATION}/operations/"
                     f"{point.operation}?api-version={query.get('api-version', '')}")
        return 201, self._point_body(point, expand=False), {"Azure-AsyncOperation": async_url}

    def _new_point(self, coll: Collection, name: str, body: dict[str, Any]) -> RestorePoint:
        vm = coll.vm
        properties = body.get("properties") or {}
        mode = properties.get("consistencyMode") or "ApplicationConsistent"
        if mode not in ("ApplicationConsistent", "CrashConsistent"):
            raise ComputeApiError(400, "InvalidParameter", f"consistencyMode {mode!r} is not supported; use "
                                                           f"ApplicationConsistent or CrashConsistent.")
        excluded = [str(d.get("id", "")) for d in properties.get("excludeDisks") or []]
        known = {d.id.lower() for d in vm.disks}
        unknown = [d for d in excluded if d.lower() not in known]
        if unknown:
            raise ComputeApiError(400, "InvalidParameter", f"excludeDisks names disks not attached to the VM: "
                                                           f"{', '.join(unknown)}")
        if not vm.running:
            raise ComputeApiError(409, "OperationNotAllowed",
                                  f"Restore point creation on VM '{vm.name}' is not allowed: the VM is not running "
                                  f"(PowerState/deallocated). Start the VM and retry.")
        if len(coll.points) >= self.max_restore_points:
            raise ComputeApiError(409, "UserErrorRpCollectionLimitReached",
                                  f"Restore point collection '{coll.name}' has reached its limit of "
                                  f"{self.max_restore_points} restore points. Delete older restore points and retry.")
        point_id = f"{coll.id}/restorePoints/{name}"
        included = [d for d in vm.disks if d.id.lower() not in {e.lower() for e in excluded}]
        return RestorePoint(
            id=point_id, name=name, collection=coll.name, vm=vm, requested=mode, excluded=excluded,
            time_created=self.clock.now(), operation=str(uuid.uuid4()),
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
                failure = self.fail_next.pop(0) if self.fail_next else None
            if failure is not None:
                self._finish(point, error=failure)
            elif point.requested == "CrashConsistent":
                self._snapshot_directly(point)
            else:
                self._snapshot_through_extension(point)
        except (AzureError, OSError, VmsnapError, ParseError) as exc:
            log.warning("restore point %s failed: %s", point.name, exc)
            self._finish(point, error=("VMRestorePointInternalError", f"Restore point creation failed: {exc}"))

    def _snapshot_directly(self, point: RestorePoint) -> None:
        for dpoint in point.disk_points:
            blob = BlobClient.from_blob_url(dpoint.disk.blob_url, credential=self.blob_service.credential)
            taken = blob.create_snapshot(metadata={"restorePoint": point.name})
            dpoint.snapshot_url = f"{dpoint.disk.blob_url}?snapshot={taken['snapshot']}"
        self._finish(point, consistency="CrashConsistent")

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
            return
        if not report.succeeded:
            name = _code_name(report.code)
            self._finish(point, error=("VMSnapshotExtensionFailed",
                                       f"The VMSnapshot extension failed with code {report.code} ({name}): "
                                       f"{report.message}"),
                         statuses=[_status(f"VMSnapshotExtension/{name}", "Error", report.message)])
            return
        for entry in report.disks or ():
            if entry.index < len(point.disk_points) and entry.successful:
                point.disk_points[entry.index].snapshot_url = entry.snapshot_uri
        missing = [d.disk.name for d in point.disk_points if not d.snapshot_url]
        if missing:
            self._finish(point, error=("VMRestorePointInternalError", f"No snapshot of disk(s) {', '.join(missing)}"))
            return
        statuses = []
        if report.health_code not in (None, 0, 1):
            statuses.append(_status(f"VMSnapshotExtension/{_code_name(report.health_code)}", "Warning",
                                    f"The application-consistent step failed (code {report.health_code}); the "
                                    f"restore point is file-system consistent."))
        self._finish(point, consistency="ApplicationConsistent" if report.code == 0 else "FileSystemConsistent",
                     statuses=statuses)

    def _wait_for_result(self, download: Callable[[], Any], task_id: str) -> StatusReport | None:
        deadline = time.monotonic() + self.extension_timeout
        while not self._stopping.is_set():
            data = download().readall()
            if data.strip():
                try:
                    report = parse_status_blob(data)
                except ParseError:
                    report = None              # caught mid-write: read again
                if report is not None and report.task_id == task_id and not report.in_progress:
                    return report
            if time.monotonic() > deadline:
                raise VmsnapError(f"the VMSnapshot extension gave no result within {self.extension_timeout:.0f} s")
            time.sleep(0.1)
        return None

    def _finish(self, point: RestorePoint, *, consistency: str | None = None, error: tuple[str, str] | None = None,
                statuses: Sequence[dict[str, Any]] = ()) -> None:
        with self._lock:
            if error is not None:
                point.state, point.error = "Failed", {"code": error[0], "message": error[1]}
                point.statuses = [_status(f"ProvisioningState/failed/{error[0]}", "Error", error[1]), *statuses]
            else:
                point.state, point.consistency = "Succeeded", consistency
                point.statuses = [_status("ProvisioningState/succeeded", "Info", None), *statuses]

    def _drop_snapshots(self, point: RestorePoint) -> None:
        for dpoint in point.disk_points:
            if dpoint.snapshot_url:
                try:
                    BlobClient.from_blob_url(dpoint.snapshot_url, credential=self.blob_service.credential).delete_blob()
                except AzureError as exc:
                    log.warning("could not delete snapshot %s: %s", dpoint.snapshot_url, exc)

    # --- disks from disk restore points ------------------------------------------------------------
    def _disk_call(self, method: str, group: str, name: str, body: Any) -> Answer:
        key = (group.lower(), name.lower())
        if method == "GET":
            with self._lock:
                found = self._disks.get(key)
                attached = next((d for vm in self._vms.values() for d in vm.disks
                                 if group.lower() == RESOURCE_GROUP and d.name.lower() == name.lower()), None)
            if found is not None and found[1]:
                answer, blob_url = found
                data = BlobClient.from_blob_url(blob_url, credential=self.blob_service.credential) \
                    .download_blob().readall()
                tags = {**answer.get("tags", {}), "vmsnapContentSha256": hashlib.sha256(data).hexdigest()}
                return 200, {**answer, "tags": tags}, {}
            if attached is not None:
                return 200, self._disk_body(attached.id, attached.name, attached.size_bytes, None), {}
            raise ComputeApiError(404, "ResourceNotFound", f"Disk '{name}' was not found.")
        if method != "PUT":
            raise ComputeApiError(405, "MethodNotAllowed", f"{method} is not supported on a disk here")
        creation = ((body or {}).get("properties") or {}).get("creationData") or {}
        if creation.get("createOption") != "Restore":
            raise ComputeApiError(400, "InvalidParameter", "the local endpoint only creates disks with "
                                                           "createOption Restore")
        source = str(creation.get("sourceResourceId") or "")
        dpoint = self._disk_point(source)
        with self._lock:
            if key in self._disks or (group.lower() == RESOURCE_GROUP and any(
                    d.name.lower() == name.lower() for vm in self._vms.values() for d in vm.disks)):
                raise ComputeApiError(409, "OperationNotAllowed", f"Disk '{name}' already exists; changing the "
                                                                  f"creation data of a disk is not allowed.")
            self._disks[key] = ({}, "")     # reserved: a second PUT of the name meanwhile is refused
        try:
            data, blob_url = self._copy_snapshot(dpoint, group, name)
        except BaseException:
            with self._lock:
                self._disks.pop(key, None)
            raise
        disk_id = f"/subscriptions/{self.subscription_id}/resourceGroups/{group}{_PROVIDER}disks/{name}"
        answer = self._disk_body(disk_id, name, len(data), source, location=(body or {}).get("location"))
        answer["tags"] = {"vmsnapSourceSha256": hashlib.sha256(data).hexdigest()}
        with self._lock:
            self._disks[key] = (answer, blob_url)
        return 200, answer, {}

    def _copy_snapshot(self, dpoint: DiskRestorePoint, group: str, name: str) -> tuple[bytes, str]:
        """The disk restore point's bytes in a new page blob next to its disk's: (bytes, blob URL)."""
        source_blob = BlobClient.from_blob_url(dpoint.disk.blob_url)
        target = self.blob_service.get_blob_client(source_blob.container_name, f"{group.lower()}-{name}.vhd")
        data = BlobClient.from_blob_url(dpoint.snapshot_url or "", credential=self.blob_service.credential) \
            .download_blob().readall()
        target.create_page_blob(len(data))
        for offset in range(0, len(data), 4 * 1024 * 1024):
            chunk = data[offset: offset + 4 * 1024 * 1024]
            if chunk.strip(b"\0"):
                target.upload_page(chunk, offset=offset, length=len(chunk))
        return data, target.url

    def _disk_body(self, disk_id: str, name: str, size: int, source: str | None, *,
                   location: str | None = None) -> dict[str, Any]:
        creation = {"createOption": "Restore", "sourceResourceId": source} if source else {"createOption": "Empty"}
        return {"id": disk_id, "name": name, "type": "Microsoft.Compute/disks", "location": location or LOCATION,
                "sku": {"name": "Standard_LRS", "tier": "Standard"},
                "properties": {"creationData": creation, "diskSizeGB": max(1, -(-size // 2**30)),
                               "diskSizeBytes": size, "provisioningState": "Succeeded",
                               "diskState": "Unattached" if source else "Attached",
                               "timeCreated": _iso(self.clock.now())}}

    def _disk_point(self, disk_point_id: str) -> DiskRestorePoint:
        with self._lock:
            for point in self.restore_points():
                for dpoint in point.disk_points:
                    if dpoint.id.lower() == disk_point_id.lower() and dpoint.snapshot_url:
                        return dpoint
        raise ComputeApiError(404, "ResourceNotFound", f"Disk restore point '{disk_point_id}' was not found.")

    # --- bodies ------------------------------------------------------------------------------------
    def _vm_by_id(self, vm_id: str) -> LocalVm:
        with self._lock:
            for vm in self._vms.values():
                if vm.id.lower() == vm_id.lower():
                    return vm
        raise ComputeApiError(400, "InvalidParameter", f"source.id {vm_id!r} is not a VM of this subscription")

    def _collection_id(self, name: str) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{RESOURCE_GROUP}{_PROVIDER}" \
               f"restorePointCollections/{name}"

    def _operation(self, operation_id: str) -> dict[str, Any]:
        for point in self.restore_points():
            if point.operation == operation_id:
                status = {"Creating": "InProgress", "Succeeded": "Succeeded", "Failed": "Failed"}[point.state]
                body: dict[str, Any] = {"name": operation_id, "status": status, "startTime": _iso(point.time_created)}
                if point.error is not None:
                    body["error"] = dict(point.error)
                return body
        raise ComputeApiError(404, "NotFound", f"Operation {operation_id} was not found.")

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
            "vmId": vm.vm_id, "hardwareProfile": {"vmSize": "Standard_B1s"}, "provisioningState": "Succeeded",
            "storageProfile": {"osDisk": os_disks[0] if os_disks else None,
                               "dataDisks": [disk(d) for d in vm.disks if d.lun != OS_DISK_LUN]},
            "osProfile": {"computerName": vm.name, "adminUsername": "azureuser",
                          "linuxConfiguration": {"provisionVMAgent": True}, "allowExtensionOperations": True}}
        if "instanceview" in expand.lower():
            power = "PowerState/running" if vm.running else "PowerState/deallocated"
            properties["instanceView"] = {"statuses": [_status("ProvisioningState/succeeded", "Info", None),
                                                       _status(power, "Info", None)]}
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
            "consistencyMode": point.consistency or point.requested,
            "timeCreated": _iso(point.time_created),
        }
        if expand:
            done = point.state == "Succeeded"
            properties["instanceView"] = {
                "diskRestorePoints": [{"id": d.id, "replicationStatus": {
                    "status": _status("ReplicationState/succeeded" if done else "ReplicationState/unavailable",
                                      "Info", None),
                    "completionPercent": 100 if done else 0}} for d in point.disk_points],
                "statuses": list(point.statuses) or [_status("ProvisioningState/creating", "Info", None)],
            }
        return {"id": point.id, "name": point.name,
                "type": "Microsoft.Compute/restorePointCollections/restorePoints", "properties": properties}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

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


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _status(code: str, level: str, message: str | None) -> dict[str, Any]:
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
