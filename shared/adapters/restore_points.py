# Over 400 lines on purpose: one client's calls sharing the ARM error and long-running-call handling.
"""The RestorePoints port over ``azure-mgmt-compute``: restore point collections, restore points
(created without waiting, their create operation kept), disks restored from disk restore points. ARM
errors become ours here, judged by HTTP status and error code through the one error map."""
from __future__ import annotations

import json
import logging
import threading
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.rest import HttpRequest
from azure.mgmt.core.tools import is_valid_resource_id, parse_resource_id

from shared.adapters.azure_errors import Failure, is_failure, read_failure
from shared.domain.restore import OWNER_KEY
from shared.domain.inventory import OS_DISK_LUN
from shared.domain.jobs import Consistency
from shared.domain.restore_point import (ArmFailure, DiskRestorePointState, InstanceStatus,
                                         ManagedDiskState, RestorePointState, VmDisks, collection_name,
                                         restore_point_request, swap_request)
from shared.errors import EndpointUnavailableError, PermanentError, TransientError
from shared.ports import RestorePointRefused
from shared.redaction import redact

log = logging.getLogger(__name__)

ARM_ENDPOINT = "https://management.azure.com"
POWER_STATE = "powerstate/"
# Digests of a disk's bytes, which only the local Compute endpoint (devhost/compute.py) puts in a
# disk's tags: Azure exposes none, so there a restore is verified by size alone.
CONTENT_DIGEST_TAG = "vmsnapContentSha256"
SOURCE_DIGEST_TAG = "vmsnapSourceSha256"
# The ARM actions the calls below need: the custom role in infra/app/vm-access.bicep grants exactly these.
ARM_ACTIONS = frozenset({
    "Microsoft.Compute/virtualMachines/read",                      # the VM (inventory, source, power state)
    "Microsoft.Compute/virtualMachines/write",                     # swap_disks (OriginalLocation)
    "Microsoft.Compute/disks/read",                                # its disks; the restored disk (verify)
    "Microsoft.Compute/disks/write",                               # restore_disk; attaching it (swap_disks)
    "Microsoft.Compute/disks/delete",                              # a failed restore, a drill's disks
    "Microsoft.Compute/snapshots/read",                            # a replaced disk's safety snapshot
    "Microsoft.Compute/snapshots/write",
    "Microsoft.Compute/snapshots/delete",                          # a rolled-back OriginalLocation restore
    "Microsoft.Compute/disks/beginGetAccess/action",               # a drill reads a restored disk
    "Microsoft.Compute/disks/endGetAccess/action",
    "Microsoft.Compute/restorePointCollections/read",              # ensure_collection
    "Microsoft.Compute/restorePointCollections/write",
    "Microsoft.Compute/restorePointCollections/restorePoints/read",    # get, begin_create
    "Microsoft.Compute/restorePointCollections/restorePoints/write",
    "Microsoft.Compute/restorePointCollections/restorePoints/delete",  # delete (retention, timeouts)
    "Microsoft.Compute/restorePointCollections/restorePoints/diskRestorePoints/read",   # restore source
    "Microsoft.Compute/locations/operations/read",                 # long-running operations (VMs, restore points)
    "Microsoft.Compute/locations/diskOperations/read",             # ... and of disks and snapshots
})


class ComputeRestorePoints:
    """One ``ComputeManagementClient`` per subscription, built on first use.

    ``client_options`` go to the client: ``base_url`` and ``connection_verify`` (a Compute endpoint
    other than ARM: the local one), ``transport``, and the retry policy (``retry_total``,
    ``retry_backoff_factor``): ARM throttling (429 with ``Retry-After``) is retried there, with
    backoff, before anything reaches the caller.
    """

    def __init__(self, credential: Any, **client_options: Any):
        self._credential = credential
        # Throttling waits what Retry-After says, five times; a refused connection is tried once more at
        # once, so an endpoint that is not there is reported in seconds (the callers retry later anyway).
        self._options = {"retry_total": 5, "retry_backoff_factor": 2.0, "retry_connect": 1, **client_options}
        self._base_url = str(self._options.get("base_url") or ARM_ENDPOINT).rstrip("/")
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """Where the calls go, as an operator would name it."""
        if self._base_url == ARM_ENDPOINT:
            return f"Azure Resource Manager ({ARM_ENDPOINT})"
        return f"the Compute endpoint {self._base_url} (setting ComputeConnection)"

    # --- the port ----------------------------------------------------------------------------------
    def ensure_collection(self, vm_resource_id: str, location: str) -> str:
        """The VM's restore point collection (``vmsnap-<vm>``, source the VM), created if missing; its id."""
        client, group, vm_name = self._locate(vm_resource_id)
        name = collection_name(vm_name)
        with self._arm_errors(f"restore point collection {name} of VM {vm_name}"):
            try:
                return str(client.restore_point_collections.get(group, name).id)
            except HttpResponseError as exc:
                if not is_failure(exc, Failure.NOT_FOUND):
                    raise
            created = client.restore_point_collections.create_or_update(
                group, name, {"location": location, "properties": {"source": {"id": vm_resource_id}}})
        log.info("restore point collection %s created for VM %s", name, vm_name)
        return str(created.id)

    def begin_create(self, vm_resource_id: str, name: str, *, consistency: Consistency,
                     exclude_disk_ids: Sequence[str] = ()) -> RestorePointState:
        """Start creating restore point ``name`` and return at once (the platform finishes it).

        A restore point of that name is this task's (the name is its task id): one found before the
        create, or found after ARM answered 409 because another delivery created it meanwhile, is
        returned as it is instead of making a second.
        """
        existing = self.get(vm_resource_id, name)
        if existing is not None:
            return existing
        client, group, vm_name = self._locate(vm_resource_id)
        what = f"restore point {name} of VM {vm_name}"
        with self._arm_errors(what):
            try:
                model, headers = client.restore_points.begin_create(
                    group, collection_name(vm_name), name, restore_point_request(consistency, exclude_disk_ids),
                    polling=False, cls=lambda response, model, headers: (model, headers)).result()
                return _state(model, operation=headers.get("Location"))
            except HttpResponseError as exc:
                # A 409 (ARM calls it OperationNotAllowed, "busy", when the name exists), or an answer
                # lost on the way: the restore point may be there all the same.
                if not is_failure(exc, Failure.CONFLICT, Failure.TRANSIENT):
                    raise
                found = self.get(vm_resource_id, name)
                if found is None:
                    raise
        log.info("%s was created by another delivery meanwhile; that one stands", what)
        return found

    def get(self, vm_resource_id: str, name: str) -> RestorePointState | None:
        """The restore point with its instance view, or None when there is none of that name."""
        client, group, vm_name = self._locate(vm_resource_id)
        with self._arm_errors(f"restore point {name} of VM {vm_name}"):
            try:
                model = client.restore_points.get(group, collection_name(vm_name), name, expand="instanceView")
            except HttpResponseError as exc:
                if is_failure(exc, Failure.NOT_FOUND):
                    return None
                raise
        return _state(model)

    def operation_failure(self, operation: str) -> ArmFailure | None:
        """The error of a failed long-running operation (its Location URL answers it with ARM's error
        body, as ARM's asynchronous operations do); None while it runs, once it succeeded, or when ARM
        no longer knows it. Only URLs of this client's endpoint are read: the token goes nowhere else."""
        parts = urlsplit(operation)
        if f"{parts.scheme}://{parts.netloc}".lower() != self._base_url.lower():
            log.warning("operation %s is not on %s; not read", operation.split("?", 1)[0], self.endpoint)
            return None
        subscription = parts.path.split("/")[2] if parts.path.lower().startswith("/subscriptions/") else ""
        name = parts.path.rsplit("/", 1)[-1]
        with self._arm_errors(f"operation {name}"):
            response = self._client(subscription).send_request(HttpRequest("GET", operation))
        status = response.status_code
        if status < 400 or status == 404:
            return None
        if status == 429:           # the poll was throttled (past the client's retries), not the operation
            raise TransientError(f"{self.endpoint} throttled reading operation {name}")
        try:
            error = json.loads(response.text() or "{}").get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        if not error.get("code") and status >= 500:     # an outage in front of the operation, no verdict
            raise TransientError(f"{self.endpoint} did not answer operation {name} ({status})")
        return ArmFailure(str(error.get("code") or ""), redact(str(error.get("message") or response.reason or "")),
                          status)

    def vm_power_state(self, vm_resource_id: str) -> str | None:
        """The VM's ``PowerState/<state>`` from its instance view; None when it has none (or no VM)."""
        found = self.vm_disks(vm_resource_id)
        return found.power_state if found is not None else None

    def vm_disks(self, vm_resource_id: str) -> VmDisks | None:
        """The VM's managed disks by LUN, its provisioning state and its power state (one GET with the
        instance view); None when there is no such VM."""
        found = self._get_vm(vm_resource_id)
        if found is None:
            return None
        profile = found.storage_profile
        disks: dict[int, str] = {}
        if profile is not None:
            entries = [(OS_DISK_LUN, profile.os_disk)] + [(d.lun, d) for d in profile.data_disks or []]
            disks = {lun: str(d.managed_disk.id) for lun, d in entries
                     if d is not None and d.managed_disk is not None and d.managed_disk.id}
        statuses = getattr(getattr(found, "instance_view", None), "statuses", None) or []
        power = next((s.code for s in statuses if (s.code or "").lower().startswith(POWER_STATE)), None)
        return VmDisks(disks, provisioning_state=_text(found.provisioning_state), power_state=power)

    def swap_disks(self, vm_resource_id: str, disks: Mapping[int, str]) -> None:
        """Put managed disk ``disks[lun]`` at each LUN (``PATCH virtualMachines/{vm}``: the storage profile
        as read, those disks changed), and wait for the VM's update (its Location operation)."""
        found = self._get_vm(vm_resource_id)
        client, group, vm_name = self._locate(vm_resource_id)
        if found is None:
            raise RestorePointRefused(f"VM {vm_name} does not exist", arm_code="NotFound", arm_message="",
                                      status=404)
        body = swap_request(found["properties"].get("storageProfile") or {}, disks)
        with self._arm_errors(f"replacing the disks of VM {vm_name}"):
            client.virtual_machines.begin_update(group, vm_name, body).result()
        log.info("VM %s: disks at LUN(s) %s replaced", vm_name, ", ".join(str(lun) for lun in sorted(disks)))

    def _get_vm(self, vm_resource_id: str) -> Any:
        client, group, vm_name = self._locate(vm_resource_id)
        with self._arm_errors(f"VM {vm_name}"):
            try:
                return client.virtual_machines.get(group, vm_name, expand="instanceView")
            except HttpResponseError as exc:
                if is_failure(exc, Failure.NOT_FOUND):
                    return None
                raise

    def delete(self, restore_point_id: str) -> bool:
        """Delete a restore point and wait until it is gone (its disk restore points go with it).

        False when there was none: retention counts that as done (another run, or someone by hand)."""
        client, group, collection = self._locate(restore_point_id)
        name = str(parse_resource_id(restore_point_id).get("child_name_1") or "")
        if not name:
            raise PermanentError(f"{restore_point_id!r} is not the id of a restore point")
        with self._arm_errors(f"deleting restore point {name} of collection {collection}"):
            try:
                client.restore_points.get(group, collection, name)
            except HttpResponseError as exc:
                if not is_failure(exc, Failure.NOT_FOUND):
                    raise
                log.info("restore point %s of collection %s was already gone", name, collection)
                return False
            client.restore_points.begin_delete(group, collection, name).result()
        log.info("restore point %s of collection %s deleted", name, collection)
        return True

    def restore_disk(self, disk_restore_point_id: str, disk_id: str, *, location: str,
                     tags: dict[str, str] | None = None) -> str:
        """A new managed disk ``disk_id`` from a disk restore point (``createOption: Restore``); its id."""
        client, group, name = self._locate(disk_id)
        body: dict[str, Any] = {"location": location, "properties": {"creationData": {
            "createOption": "Restore", "sourceResourceId": disk_restore_point_id}}}
        if tags:
            body["tags"] = dict(tags)
        with self._arm_errors(f"disk {name} from {disk_restore_point_id}"):
            disk = client.disks.begin_create_or_update(group, name, body).result()
        log.info("disk %s restored from %s", disk.id, disk_restore_point_id)
        return str(disk.id)

    def delete_disk(self, disk_id: str) -> bool:
        """Delete a managed disk and wait until it is gone (Disks_Delete, long-running); False when none."""
        return self._delete("disks", disk_id)

    def snapshot_disk(self, disk_id: str, snapshot_id: str, *, location: str, tags: dict[str, str]) -> str:
        """A snapshot of a managed disk (Snapshots_CreateOrUpdate, ``createOption: Copy`` from the disk,
        long-running); its id."""
        client, group, name = self._locate(snapshot_id)
        body = {"location": location, "tags": dict(tags),
                "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": disk_id}}}
        with self._arm_errors(f"snapshot {name} of {disk_id}"):
            snapshot = client.snapshots.begin_create_or_update(group, name, body).result()
        log.info("snapshot %s taken of disk %s", snapshot.id, disk_id)
        return str(snapshot.id)

    def get_snapshot(self, snapshot_id: str) -> ManagedDiskState | None:
        return self._read("snapshots", snapshot_id)

    def delete_snapshot(self, snapshot_id: str) -> bool:
        """Delete a disk snapshot and wait until it is gone (Snapshots_Delete); False when there was none."""
        return self._delete("snapshots", snapshot_id)

    def _delete(self, kind: str, resource_id: str) -> bool:
        client, group, name = self._locate(resource_id)
        operations = getattr(client, kind)
        with self._arm_errors(f"deleting {kind[:-1]} {name}"):
            try:
                operations.get(group, name)
            except HttpResponseError as exc:
                if not is_failure(exc, Failure.NOT_FOUND):
                    raise
                return False
            operations.begin_delete(group, name).result()
        log.info("%s %s deleted", kind[:-1], resource_id)
        return True

    def grant_read(self, disk_id: str, seconds: int) -> str:
        """A read SAS on the disk (Disks_GrantAccess, ``access: Read``), valid ``seconds``."""
        client, group, name = self._locate(disk_id)
        with self._arm_errors(f"a read grant on disk {name}"):
            access = client.disks.begin_grant_access(group, name, {"access": "Read",
                                                                   "durationInSeconds": seconds}).result()
        return str(access.access_sas)

    def revoke_read(self, disk_id: str) -> None:
        client, group, name = self._locate(disk_id)
        with self._arm_errors(f"ending the read grant on disk {name}"):
            client.disks.begin_revoke_access(group, name).result()

    def get_disk(self, disk_id: str) -> ManagedDiskState | None:
        return self._read("disks", disk_id)

    def _read(self, kind: str, resource_id: str) -> ManagedDiskState | None:
        """A disk or a snapshot (both Disk RP resources of the same shape), or None when there is none."""
        client, group, name = self._locate(resource_id)
        with self._arm_errors(f"{kind[:-1]} {name}"):
            try:
                found = getattr(client, kind).get(group, name)
            except HttpResponseError as exc:
                if is_failure(exc, Failure.NOT_FOUND):
                    return None
                raise
        size = found.disk_size_bytes if found.disk_size_bytes is not None else (
            found.disk_size_gb * 2**30 if found.disk_size_gb is not None else None)
        tags = found.tags or {}
        return ManagedDiskState(id=str(found.id), size_bytes=size, location=found.location,
                                provisioning_state=found.provisioning_state,
                                content_sha256=tags.get(CONTENT_DIGEST_TAG), source_sha256=tags.get(SOURCE_DIGEST_TAG),
                                owner=tags.get(OWNER_KEY))

    # --- helpers -----------------------------------------------------------------------------------
    def _locate(self, resource_id: str) -> tuple[Any, str, str]:
        """(client of the id's subscription, resource group, top-level resource name)."""
        if not resource_id or not is_valid_resource_id(resource_id):
            raise PermanentError(f"{resource_id!r} is not an ARM resource id; restore points need the VM's id")
        parts = parse_resource_id(resource_id)
        return self._client(str(parts["subscription"])), str(parts["resource_group"]), str(parts["name"])

    def _client(self, subscription: str) -> Any:
        with self._lock:
            client = self._clients.get(subscription)
            if client is None:
                from azure.mgmt.compute import ComputeManagementClient

                client = ComputeManagementClient(self._credential, subscription, **self._options)
                self._clients[subscription] = client
        return client

    def _arm_errors(self, what: str) -> "_ArmErrors":
        return _ArmErrors(what, self.endpoint)


class _ArmErrors:
    """Translate Compute API failures by status and ARM error code (azure_errors.classify): throttling,
    busy and outages are transient; refusals keep ARM's code and message (never a token or a SAS) for
    the remediation catalogue; no token or no answer at all is an endpoint to check."""

    def __init__(self, what: str, endpoint: str):
        self._what, self._endpoint = what, endpoint

    def __enter__(self) -> "_ArmErrors":
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        failure = read_failure(exc) if isinstance(exc, AzureError) else None
        if failure is not None and failure.no_credential:
            # DefaultAzureCredential's account of every credential it tried stays in the log, not the error.
            log.info("no token for %s: %s", self._endpoint, redact(str(getattr(exc, "message", exc))))
            raise EndpointUnavailableError(
                f"no credential for {self._endpoint} ({self._what}): in Azure give the app a managed identity; "
                f"on a workstation sign in with 'az login', or run ./dev run in this folder for the local "
                f"stack") from None
        if isinstance(exc, ServiceRequestError):
            log.info("%s unreachable: %s", self._endpoint, redact(str(exc)))
            raise EndpointUnavailableError(f"cannot reach {self._endpoint} ({self._what}): start the local stack "
                                           f"(./dev run) or correct the setting") from None
        if isinstance(exc, ServiceResponseError):
            raise TransientError(f"{self._endpoint} dropped the answer to {self._what}; a retry may succeed") from exc
        if failure is not None and isinstance(exc, HttpResponseError):
            status, code, message = failure.status, failure.code or "", failure.detail
            said = f"({status} {code})" if code else f"({status})"
            if failure.kind is Failure.TRANSIENT:
                raise TransientError(f"ARM did not answer {self._what} yet {said}: {message}") from exc
            raise RestorePointRefused(f"ARM refused {self._what} {said}: {message}", arm_code=code,
                                      arm_message=message, status=status) from exc


def _state(model: Any, *, operation: str | None = None) -> RestorePointState:
    profile = getattr(getattr(model, "source_metadata", None), "storage_profile", None)
    disk_of: dict[str, str | None] = {}
    if profile is not None:
        for disk in [profile.os_disk, *(profile.data_disks or [])]:
            point = getattr(disk, "disk_restore_point", None) if disk is not None else None
            if point is not None and point.id:
                managed = getattr(disk, "managed_disk", None)
                disk_of[point.id] = managed.id if managed is not None else None
    view = getattr(model, "instance_view", None)
    replication: dict[str, tuple[str | None, int | None]] = {}
    statuses: tuple[InstanceStatus, ...] = ()
    if view is not None:
        for entry in view.disk_restore_points or []:
            status = entry.replication_status
            replication[(entry.id or "").lower()] = (
                status.status.code if status is not None and status.status is not None else None,
                status.completion_percent if status is not None else None)
        statuses = tuple(InstanceStatus(code=s.code or "", level=_text(s.level) or "Info", message=s.message)
                         for s in view.statuses or [])
    disks = tuple(DiskRestorePointState(id=point_id, disk_id=disk_id,
                                        replication=replication.get(point_id.lower(), (None, None))[0],
                                        completion_percent=replication.get(point_id.lower(), (None, None))[1])
                  for point_id, disk_id in disk_of.items())
    return RestorePointState(
        name=str(model.name), id=str(model.id), provisioning_state=_text(model.provisioning_state) or "Creating",
        consistency_mode=_text(model.consistency_mode), time_created=model.time_created, disks=disks,
        statuses=statuses, operation=operation)


def _text(value: Any) -> str | None:
    """An SDK enum or string as the plain string ARM sent."""
    if value is None:
        return None
    return str(getattr(value, "value", value))
