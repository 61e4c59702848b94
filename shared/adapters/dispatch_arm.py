"""Dispatch through Azure Resource Manager: put the VMSnapshotLinux extension on the VM with the
command's settings (``azure-mgmt-compute``), and return once ARM has accepted the request. It also
reads the extension's instance view, where the handler's result survives when its blob upload failed."""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError
from azure.mgmt.core.tools import is_valid_resource_id, parse_resource_id

from shared.adapters.azure_errors import Failure, SdkFailure, read_failure
from shared.domain.remediation import VM_NOT_FOUND
from shared.domain.command import EXTENSION_NAME, ExtensionCommand, to_extension_resource
from shared.domain.inventory import Vm
from shared.errors import PermanentError, TransientError
from shared.ports import DispatchRefused
from shared.redaction import redact

if TYPE_CHECKING:   # the Compute SDK loads on first use: a worker that never dispatches to ARM never pays for it
    from azure.core.credentials import TokenCredential
    from azure.core.pipeline.transport import HttpTransport
    from azure.mgmt.compute import ComputeManagementClient

log = logging.getLogger(__name__)

# The agent reports each substatus of the handler as "ComponentStatus/<name>/<status>"; VMSnapshot puts
# its whole status document in the name of its one substatus (extension source: main/Utils/HandlerUtil.py).
_COMPONENT_STATUS = "ComponentStatus/"

NO_PERMISSION = "UserErrorExtensionDispatchNotAuthorized"
DISPATCH_REJECTED = "UserErrorExtensionDispatchRejected"


class ArmDispatcher:
    """``PUT .../virtualMachines/<vm>/extensions/VMSnapshotLinux`` with ``forceUpdateTag`` = taskId.

    ``transport`` replaces the HTTP transport (tests record requests with it); ``poll=True`` waits
    for the extension's provisioning to finish, which the worker never does. ``client_options``
    go to ``ComputeManagementClient`` (e.g. ``retry_total``).
    """

    def __init__(self, credential: TokenCredential, subscription_id: str, *,
                 transport: HttpTransport[Any, Any] | None = None, poll: bool = False, **client_options: Any):
        self._credential = credential
        self._subscription_id = subscription_id
        self._poll = poll
        self._options = dict(client_options)
        if transport is not None:
            self._options["transport"] = transport
        self._client: ComputeManagementClient | None = None
        self._lock = threading.Lock()

    def dispatch(self, vm: Vm, command: ExtensionCommand) -> None:
        resource_group, vm_name = self._locate(vm)
        resource = to_extension_resource(command, vm, redact=False)
        body = {"location": resource.get("location"), "properties": resource["properties"]}
        if not body["location"]:
            raise PermanentError(f"VM {vm.name} has no location in the inventory; ARM needs one for "
                                 f"its extension")
        try:
            poller = self._compute().virtual_machine_extensions.begin_create_or_update(
                # The SDK serializes a dict body as it is (the extension's settings, unmodelled keys and
                # all); its overloads name only the model and a byte stream.
                resource_group, vm_name, EXTENSION_NAME, body,  # type: ignore[call-overload]
                polling=self._poll)
            if self._poll:
                poller.result()
        except HttpResponseError as exc:
            failure = read_failure(exc)
            if failure.no_credential:
                # No token at all (identity endpoint unreachable): may well work next time.
                raise TransientError(f"could not get a token for ARM: {failure.detail}") from exc
            raise self._translate(failure, vm, resource_group) from exc
        except ServiceRequestError as exc:
            raise TransientError(f"ARM could not be reached for VM {vm.name}: {redact(str(exc))}") from exc
        log.info("ARM accepted extension %s on VM %s (resource group %s), task %s",
                 EXTENSION_NAME, vm_name, resource_group, command.task_id)

    def extension_status(self, vm: Vm) -> bytes | None:
        """The status document the handler last reported through the VM agent, from the instance view.

        ``GET .../extensions/VMSnapshotLinux?$expand=instanceView``; None when the VM, the extension
        or a status document is not there.
        """
        resource_group, vm_name = self._locate(vm)
        try:
            extension = self._compute().virtual_machine_extensions.get(
                resource_group, vm_name, EXTENSION_NAME, expand="instanceView")
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            failure = read_failure(exc)
            if failure.no_credential:
                raise TransientError(f"could not get a token for ARM: {failure.detail}") from exc
            if failure.kind is Failure.REFUSED:
                raise PermanentError(f"the worker's identity may not read extension {EXTENSION_NAME} on VM "
                                     f"{vm.name} ({failure.status}); grant it 'Reader' on the VM") from exc
            if failure.kind is Failure.NOT_FOUND:
                return None
            error = self._translate(failure, vm, resource_group)
            raise (error if isinstance(error, TransientError) else PermanentError(
                f"ARM refused to show extension {EXTENSION_NAME} on VM {vm.name} ({failure.status}): "
                f"{failure.detail}")) from exc
        except ServiceRequestError as exc:
            raise TransientError(f"ARM could not be reached for VM {vm.name}: {redact(str(exc))}") from exc
        view = getattr(extension, "instance_view", None)
        for status in getattr(view, "substatuses", None) or []:
            for text in (_component_name(status.code), status.message):
                if text and text.lstrip().startswith(("[", "{")):
                    return text.encode("utf-8")
        return None

    def _locate(self, vm: Vm) -> tuple[str, str]:
        if not vm.resource_id or not is_valid_resource_id(vm.resource_id):
            raise PermanentError(f"VM {vm.name} has no ARM resource id; DISPATCHER=arm works only "
                                 f"for Azure VMs")
        parts = {key: str(value) for key, value in parse_resource_id(vm.resource_id).items()}
        if (parts.get("namespace", "").lower() != "microsoft.compute"
                or parts.get("type", "").lower() != "virtualmachines"):
            raise PermanentError(f"resource id of VM {vm.name} is not a Microsoft.Compute virtual "
                                 f"machine: {vm.resource_id}")
        if parts.get("subscription", "").lower() != self._subscription_id.lower():
            raise PermanentError(f"VM {vm.name} is in subscription {parts.get('subscription')}, but the "
                                 f"worker is set to {self._subscription_id} (AZURE_SUBSCRIPTION_ID)")
        return parts["resource_group"], parts["name"]

    def _compute(self) -> ComputeManagementClient:
        with self._lock:
            if self._client is None:
                from azure.mgmt.compute import ComputeManagementClient

                self._client = ComputeManagementClient(self._credential, self._subscription_id,
                                                       **self._options)
            return self._client

    @staticmethod
    def _translate(failure: SdkFailure, vm: Vm, resource_group: str) -> Exception:
        status, code, detail = failure.status, failure.code or "unknown", failure.detail
        where = f"VM {vm.name} (resource group {resource_group})"
        kind = failure.kind
        if kind is Failure.NOT_FOUND:
            return DispatchRefused(f"{where} was not found in Azure ({code}, BCMV2VMNotFound); it was "
                                   f"deleted or moved", error_code=VM_NOT_FOUND)
        if kind is Failure.REFUSED:
            return DispatchRefused(
                f"the worker's identity may not put extensions on {where} ({status} {code})",
                error_code=NO_PERMISSION,
                recommendation="Grant the worker's identity the 'Virtual Machine Contributor' role on "
                               "the VM or its resource group.")
        if kind in (Failure.TRANSIENT, Failure.CONFLICT):
            # Throttling or an outage; a conflict on an extension PUT is another operation on the VM.
            return TransientError(f"ARM did not accept the extension on {where} yet ({status} {code}): "
                                  f"{detail}")
        return DispatchRefused(f"ARM refused the extension on {where} ({status} {code}): {detail}",
                               error_code=DISPATCH_REJECTED,
                               recommendation="Check the VM's state and the error above, then retry "
                                              "the backup.")


def _component_name(code: str | None) -> str | None:
    """The name inside ``ComponentStatus/<name>/<status>`` (the name itself may hold slashes)."""
    if not code or not code.startswith(_COMPONENT_STATUS):
        return None
    return code[len(_COMPONENT_STATUS):].rpartition("/")[0]
