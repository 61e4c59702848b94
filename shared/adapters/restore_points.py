"""The RestorePoints port over ``azure-mgmt-compute``: restore point collections, restore points
(created without waiting), disks restored from disk restore points. ARM errors become ours here."""
from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.mgmt.core.tools import is_valid_resource_id, parse_resource_id

from shared.domain.restore_point import (ConsistencyMode, DiskRestorePointState, InstanceStatus, ManagedDiskState,
                                         RestorePointState, collection_name)
from shared.errors import PermanentError, TransientError
from shared.ports import RestorePointRefused
from shared.redaction import redact

log = logging.getLogger(__name__)

_FAILED_STATUS = "provisioningstate/failed/"
# Digests of a disk's bytes, which only the local Compute endpoint (devhost/compute.py) puts in a
# disk's tags: Azure exposes none, so there a restore is verified by size alone.
CONTENT_DIGEST_TAG = "vmsnapContentSha256"
SOURCE_DIGEST_TAG = "vmsnapSourceSha256"
# The ARM actions the calls below need: the custom role in infra/app/vm-access.bicep grants exactly these.
ARM_ACTIONS = frozenset({
    "Microsoft.Compute/virtualMachines/read",                      # the VM (inventory, collection source)
    "Microsoft.Compute/disks/read",                                # its disks; the restored disk (verify)
    "Microsoft.Compute/disks/write",                               # restore_disk
    "Microsoft.Compute/restorePointCollections/read",              # ensure_collection
    "Microsoft.Compute/restorePointCollections/write",
    "Microsoft.Compute/restorePointCollections/restorePoints/read",    # get, begin_create
    "Microsoft.Compute/restorePointCollections/restorePoints/write",
    "Microsoft.Compute/restorePointCollections/restorePoints/delete",  # delete (retention)
    "Microsoft.Compute/restorePointCollections/restorePoints/diskRestorePoints/read",   # restore source
    "Microsoft.Compute/locations/operations/read",                 # polling long-running operations
})


class ComputeRestorePoints:
    """One ``ComputeManagementClient`` per subscription, built on first use.

    ``client_options`` go to the client: ``base_url`` and ``connection_verify`` (the local endpoint),
    ``transport``, and the retry policy (``retry_total``, ``retry_backoff_factor``): ARM throttling
    (429 with ``Retry-After``) is retried there, with backoff, before anything reaches the caller.
    """

    def __init__(self, credential: Any, **client_options: Any):
        self._credential = credential
        self._options = {"retry_total": 5, "retry_backoff_factor": 2.0, **client_options}
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- the port ----------------------------------------------------------------------------------
    def ensure_collection(self, vm_resource_id: str, location: str) -> str:
        """The VM's restore point collection (``vmsnap-<vm>``, source the VM), created if missing; its id."""
        client, group, vm_name = self._locate(vm_resource_id)
        name = collection_name(vm_name)
        with _arm_errors(f"restore point collection {name} of VM {vm_name}"):
            try:
                return str(client.restore_point_collections.get(group, name).id)
            except HttpResponseError as exc:
                if exc.status_code != 404:
                    raise
            created = client.restore_point_collections.create_or_update(
                group, name, {"location": location, "properties": {"source": {"id": vm_resource_id}}})
        log.info("restore point collection %s created for VM %s", name, vm_name)
        return str(created.id)

    def begin_create(self, vm_resource_id: str, name: str, *, consistency: ConsistencyMode,
                     exclude_disk_ids: Sequence[str] = ()) -> RestorePointState:
        """Start creating restore point ``name`` and return at once (the platform finishes it).

        An existing restore point of that name is returned as it is: a redelivered task finds the one
        its first delivery started instead of making a second.
        """
        existing = self.get(vm_resource_id, name)
        if existing is not None:
            return existing
        client, group, vm_name = self._locate(vm_resource_id)
        body: dict[str, Any] = {"properties": {"consistencyMode": consistency.value}}
        if exclude_disk_ids:
            body["properties"]["excludeDisks"] = [{"id": disk} for disk in exclude_disk_ids]
        with _arm_errors(f"restore point {name} of VM {vm_name}"):
            try:
                poller = client.restore_points.begin_create(group, collection_name(vm_name), name, body,
                                                            polling=False)
                return _state(poller.result())
            except HttpResponseError as exc:
                if exc.status_code != 409 or "existing restore point" not in str(exc.message or ""):
                    raise
        # Another delivery created it between our read and our create: that one stands.
        found = self.get(vm_resource_id, name)
        if found is None:
            raise TransientError(f"restore point {name} of VM {vm_name} is neither creatable nor readable yet")
        return found

    def get(self, vm_resource_id: str, name: str) -> RestorePointState | None:
        """The restore point with its instance view, or None when there is none of that name."""
        client, group, vm_name = self._locate(vm_resource_id)
        with _arm_errors(f"restore point {name} of VM {vm_name}"):
            try:
                model = client.restore_points.get(group, collection_name(vm_name), name, expand="instanceView")
            except HttpResponseError as exc:
                if exc.status_code == 404:
                    return None
                raise
        return _state(model)

    def delete(self, restore_point_id: str) -> bool:
        """Delete a restore point and wait until it is gone (its disk restore points go with it).

        False when there was none: retention counts that as done (another run, or someone by hand)."""
        client, group, collection = self._locate(restore_point_id)
        name = str(parse_resource_id(restore_point_id).get("child_name_1") or "")
        if not name:
            raise PermanentError(f"{restore_point_id!r} is not the id of a restore point")
        with _arm_errors(f"deleting restore point {name} of collection {collection}"):
            try:
                client.restore_points.get(group, collection, name)
            except HttpResponseError as exc:
                if exc.status_code != 404:
                    raise
                log.info("restore point %s of collection %s was already gone", name, collection)
                return False
            client.restore_points.begin_delete(group, collection, name).result()
        log.info("restore point %s of collection %s deleted", name, collection)
        return True

    def restore_disk(self, disk_restore_point_id: str, disk_id: str, *, location: str) -> str:
        """A new managed disk ``disk_id`` from a disk restore point (``createOption: Restore``); its id."""
        client, group, name = self._locate(disk_id)
        body = {"location": location,
                "properties": {"creationData": {"createOption": "Restore", "sourceResourceId": disk_restore_point_id}}}
        with _arm_errors(f"disk {name} from {disk_restore_point_id}"):
            disk = client.disks.begin_create_or_update(group, name, body).result()
        log.info("disk %s restored from %s", disk.id, disk_restore_point_id)
        return str(disk.id)

    def get_disk(self, disk_id: str) -> ManagedDiskState | None:
        client, group, name = self._locate(disk_id)
        with _arm_errors(f"disk {name}"):
            try:
                disk = client.disks.get(group, name)
            except HttpResponseError as exc:
                if exc.status_code == 404:
                    return None
                raise
        size = disk.disk_size_bytes if disk.disk_size_bytes is not None else (
            disk.disk_size_gb * 2**30 if disk.disk_size_gb is not None else None)
        tags = disk.tags or {}
        return ManagedDiskState(id=str(disk.id), size_bytes=size, location=disk.location,
                                provisioning_state=disk.provisioning_state,
                                content_sha256=tags.get(CONTENT_DIGEST_TAG), source_sha256=tags.get(SOURCE_DIGEST_TAG))

    # --- helpers -----------------------------------------------------------------------------------
    def _locate(self, resource_id: str) -> tuple[Any, str, str]:
        """(client of the id's subscription, resource group, top-level resource name)."""
        if not resource_id or not is_valid_resource_id(resource_id):
            raise PermanentError(f"{resource_id!r} is not an ARM resource id; restore points need the VM's id")
        parts = parse_resource_id(resource_id)
        subscription, group, name = str(parts["subscription"]), str(parts["resource_group"]), str(parts["name"])
        with self._lock:
            client = self._clients.get(subscription)
            if client is None:
                from azure.mgmt.compute import ComputeManagementClient

                client = ComputeManagementClient(self._credential, subscription, **self._options)
                self._clients[subscription] = client
        return client, group, name


class _arm_errors:
    """Translate Compute API failures: throttling and outages are transient, refusals are kept with
    ARM's code and message (never a token or a SAS) for the remediation catalogue."""

    def __init__(self, what: str):
        self._what = what

    def __enter__(self) -> "_arm_errors":
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:
            raise TransientError(f"no token for ARM ({self._what}): {redact(str(exc.message))}") from exc
        if isinstance(exc, HttpResponseError):
            status = exc.status_code
            code = str(getattr(exc.error, "code", None) or exc.reason or "unknown")
            message = redact(str(getattr(exc.error, "message", None) or exc.reason or ""))
            if status in (408, 429) or (status or 0) >= 500 or (status == 409 and "in progress" in message.lower()):
                raise TransientError(f"ARM did not answer {self._what} yet ({status} {code}): {message}") from exc
            raise RestorePointRefused(f"ARM refused {self._what} ({status} {code}): {message}", arm_code=code,
                                      arm_message=message, status=status) from exc
        if isinstance(exc, ServiceRequestError):
            raise TransientError(f"ARM could not be reached for {self._what}: {redact(str(exc))}") from exc


def _state(model: Any) -> RestorePointState:
    properties = model
    profile = getattr(getattr(properties, "source_metadata", None), "storage_profile", None)
    disk_of: dict[str, str | None] = {}
    if profile is not None:
        for disk in [profile.os_disk, *(profile.data_disks or [])]:
            point = getattr(disk, "disk_restore_point", None) if disk is not None else None
            if point is not None and point.id:
                managed = getattr(disk, "managed_disk", None)
                disk_of[point.id] = managed.id if managed is not None else None
    view = getattr(properties, "instance_view", None)
    replication: dict[str, tuple[str | None, int | None]] = {}
    statuses: list[InstanceStatus] = []
    if view is not None:
        for entry in view.disk_restore_points or []:
            status = entry.replication_status
            replication[(entry.id or "").lower()] = (
                status.status.code if status is not None and status.status is not None else None,
                status.completion_percent if status is not None else None)
        statuses = [InstanceStatus(code=s.code or "", level=_text(s.level) or "Info", message=s.message)
                    for s in view.statuses or []]
    disks = tuple(DiskRestorePointState(id=point_id, disk_id=disk_id,
                                        replication=replication.get(point_id.lower(), (None, None))[0],
                                        completion_percent=replication.get(point_id.lower(), (None, None))[1])
                  for point_id, disk_id in disk_of.items())
    failed = next((s for s in statuses if s.code.lower().startswith(_FAILED_STATUS)), None)
    return RestorePointState(
        name=str(model.name), id=str(model.id), provisioning_state=_text(properties.provisioning_state) or "Creating",
        consistency_mode=_text(properties.consistency_mode),
        time_created=properties.time_created, disks=disks, statuses=tuple(statuses),
        error_code=failed.code[len(_FAILED_STATUS):] if failed else None,
        error_message=failed.message if failed else None)


def _text(value: Any) -> str | None:
    """An SDK enum or string as the plain string ARM sent."""
    if value is None:
        return None
    return str(getattr(value, "value", value))
