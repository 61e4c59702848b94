"""The one place that says what an Azure SDK failure means for vmsnap, and the one ETag retry loop.

``classify`` maps a status code and service error code to a ``Failure`` kind, the same for Blob,
Table, Service Bus and ARM (a 403 is always ``REFUSED``); ``translate`` turns an SDK exception into
the project's error for that kind. Adapters add their own wording, never their own judgement.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from typing import Callable, Iterator, TypeVar

from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ResourceModifiedError

from shared.errors import (AccessRefusedError, ConflictError, NotFoundError, PermanentError, TransientError,
                           VmsnapError)
from shared.redaction import redact

log = logging.getLogger(__name__)

T = TypeVar("T")


class Failure(Enum):
    TRANSIENT = "transient"     # a retry may cure it: no answer, timeout, throttling, busy, outage
    NOT_FOUND = "not found"     # the named thing does not exist
    CONFLICT = "conflict"       # it exists already, or changed since it was read (ETag)
    REFUSED = "refused"         # the identity or key may not do this: a role or setting to fix
    PERMANENT = "permanent"     # the request itself is wrong; sending it again changes nothing


# 409s that mean "busy, try again" rather than "already exists": ARM's concurrent-operation codes
# and Storage's "being deleted" states.
_BUSY_CODES = frozenset({
    "OperationNotAllowed", "AnotherOperationInProgress", "OperationPreempted", "RetryableError",
    "ContainerBeingDeleted", "TableBeingDeleted", "ServerBusy",
})
_TRANSIENT_STATUS = frozenset({408, 429})
TABLE_REFUSED_HINT = ("check the BackupStorage setting and grant the identity 'Storage Table Data Contributor' "
                      "on the storage account")
SERVICE_BUS_REFUSED_HINT = ("check the ServiceBusConnection setting and grant the identity 'Azure Service Bus "
                            "Data Sender' on the namespace")
BLOB_REFUSED_HINT = ("check the BackupStorage setting and grant the identity 'Storage Blob Data Contributor' "
                     "on the storage account")


def classify(status: int | None, error_code: str | None = None) -> Failure:
    """What a failure with this HTTP status (None: no response at all) and service error code means."""
    if status is None or status in _TRANSIENT_STATUS or status >= 500:
        return Failure.TRANSIENT
    if status in (401, 403):
        return Failure.REFUSED
    if status == 404:
        return Failure.NOT_FOUND
    if status == 409:
        return Failure.TRANSIENT if error_code in _BUSY_CODES else Failure.CONFLICT
    if status == 412:
        return Failure.CONFLICT
    return Failure.PERMANENT


_SERVICE_BUS = "azure.servicebus"


@cache
def _service_bus_status() -> tuple[tuple[type[AzureError], int], ...]:
    """Service Bus speaks AMQP: its exceptions carry no HTTP status, so each kind maps to the status the
    same condition has over HTTP. Its SDK is imported when one of its exceptions is read, not before: a
    process that never touches Service Bus (most CLI commands) does not pay for loading it."""
    from azure.servicebus.exceptions import (MessageSizeExceededError, MessagingEntityAlreadyExistsError,
                                             MessagingEntityDisabledError, MessagingEntityNotFoundError,
                                             ServiceBusAuthenticationError, ServiceBusAuthorizationError)

    return ((ServiceBusAuthenticationError, 401), (ServiceBusAuthorizationError, 403),
            (MessagingEntityNotFoundError, 404), (MessagingEntityAlreadyExistsError, 409),
            (MessagingEntityDisabledError, 400), (MessageSizeExceededError, 413))


def _from_service_bus(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by the Service Bus client: its class or one it derives from is one of that SDK's."""
    return any(kind.__module__.startswith(_SERVICE_BUS) for kind in type(exc).__mro__)


def status_and_code(exc: AzureError) -> tuple[int | None, str | None]:
    """The HTTP status and the service's error code of an SDK exception (None when there was no answer)."""
    if _from_service_bus(exc):
        for kind, status in _service_bus_status():
            if isinstance(exc, kind):
                return status, type(exc).__name__
    if not isinstance(exc, HttpResponseError):
        return None, None
    code = getattr(exc, "error_code", None) or getattr(getattr(exc, "error", None), "code", None)
    return exc.status_code, code


def table_missing(exc: BaseException) -> bool:
    """Whether a Table write failed because the table itself does not exist (yet)."""
    # The SDK does not always parse the error code out of a write's 404 (it stays in the body).
    return isinstance(exc, AzureError) and (status_and_code(exc)[1] == "TableNotFound" or "TableNotFound" in str(exc))


def failure_of(exc: AzureError) -> Failure:
    return classify(*status_and_code(exc))


def is_failure(exc: BaseException, *kinds: Failure) -> bool:
    """Whether ``exc`` is an SDK failure of one of ``kinds``: adapters branch on this, never on a status."""
    return isinstance(exc, AzureError) and failure_of(exc) in kinds


@dataclass(frozen=True)
class SdkFailure:
    """What an SDK exception says, read once here so no other module reads its status or codes."""

    kind: Failure
    status: int | None
    code: str | None
    detail: str                 # the service's own message, redacted: safe for a user and a log
    unreachable: bool = False   # no answer at all: the endpoint is down, mistyped, or not started
    no_credential: bool = False  # no token could be had (the identity endpoint, az login): nothing was sent
    service_bus: bool = False   # raised by the Service Bus client rather than Storage or ARM

    @property
    def said(self) -> str:
        """``"403 AuthorizationFailed"``, ``"404"``, or the exception's kind when nothing answered."""
        return f"{self.status} {self.code}" if self.status and self.code else str(self.status or self.code or "")


_UNREACHABLE = ("ServiceRequestError", "ServiceBusConnectionError", "OperationTimeoutError")


def read_failure(exc: AzureError) -> SdkFailure:
    status, code = status_and_code(exc)
    error = getattr(exc, "error", None)
    detail = redact(str(getattr(error, "message", None) or getattr(exc, "reason", None) or exc.message or ""))
    names = {kind.__name__ for kind in type(exc).__mro__}
    return SdkFailure(classify(status, code), status, code, detail, unreachable=bool(names & set(_UNREACHABLE)),
                      no_credential=isinstance(exc, ClientAuthenticationError) and status is None,
                      service_bus=_from_service_bus(exc))


def failures_in(exc: BaseException) -> Iterator[SdkFailure]:
    """The SDK failures in ``exc``'s chain (causes, contexts, and the SDK's wrapped ``inner_exception``),
    outermost first: what a front end reads to explain an error that reached it."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, AzureError):
            yield read_failure(current)
        # ``raise ... from None`` hides the context on purpose: its message is already the whole story.
        context = None if current.__suppress_context__ else current.__context__
        pending += [current.__cause__, context, getattr(current, "inner_exception", None)]


def translate(exc: AzureError, doing: str, *, service: str, refused_hint: str = "") -> VmsnapError:
    """The project's error for ``exc``, raised ``from exc`` by the caller; never carries a SAS.

    ``doing`` completes "while ...", ``service`` names the service ("Table Storage"),
    ``refused_hint`` says which role or setting to fix when access is refused.
    """
    status, code = status_and_code(exc)
    kind = classify(status, code)
    said = f"{status} {code}" if code else str(status) if status else type(exc).__name__
    if kind is Failure.TRANSIENT:
        return TransientError(f"{service} unavailable while {doing} ({said}); a retry may succeed")
    if kind is Failure.REFUSED:
        hint = refused_hint or "check the connection setting and the identity's role on the resource"
        return AccessRefusedError(f"{service} refused access while {doing} ({said}); {hint}")
    if kind is Failure.NOT_FOUND:
        return NotFoundError(f"{service} found nothing while {doing} ({said})")
    if kind is Failure.CONFLICT:
        return ConflictError(f"{service} reported a conflict while {doing} ({said})")
    reason = redact(getattr(exc, "reason", None) or "")
    return PermanentError(f"{service} refused {doing} ({said}{': ' + reason if reason else ''})")


@dataclass(frozen=True)
class EtagRetry:
    """Read-modify-write under optimistic concurrency: run ``attempt`` until its conditional write
    wins, pausing a random, growing while between lost races so racing writers spread out.

    ``sleep`` and ``random`` are injectable so tests neither wait nor depend on chance.
    """

    attempts: int = 10
    base_pause: float = 0.02
    max_pause: float = 0.64
    races: tuple[type[BaseException], ...] = (ResourceModifiedError,)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    random: Callable[[], float] = field(default=random.random, compare=False)

    def run(self, attempt: Callable[[], T], *, what: str) -> T:
        for number in range(1, self.attempts + 1):
            try:
                return attempt()
            except self.races:
                log.info("%s changed under us (attempt %s of %s); re-reading", what, number, self.attempts)
                if number < self.attempts:
                    self.sleep(self.random() * min(self.max_pause, self.base_pause * 2 ** (number - 1)))
        raise TransientError(f"{what} kept changing during {self.attempts} update attempts; try again")
