"""One meaning per SDK failure, whichever service raised it, and one ETag retry loop."""
from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ServiceRequestError
from azure.servicebus.exceptions import ServiceBusAuthorizationError, ServiceBusConnectionError

from shared.adapters.azure_errors import EtagRetry, Failure, classify, translate
from shared.errors import (AccessRefusedError, ConfigurationError, ConflictError, NotFoundError, PermanentError,
                           TransientError)


def http_error(status: int, code: str | None = None) -> HttpResponseError:
    error = HttpResponseError(message=f"status {status}")
    error.status_code = status
    error.error_code = code
    return error


@pytest.mark.parametrize(("status", "code", "kind"), [
    (None, None, Failure.TRANSIENT), (408, None, Failure.TRANSIENT), (429, None, Failure.TRANSIENT),
    (500, None, Failure.TRANSIENT), (503, "ServerBusy", Failure.TRANSIENT),
    (401, None, Failure.REFUSED), (403, "AuthorizationPermissionMismatch", Failure.REFUSED),
    (404, "BlobNotFound", Failure.NOT_FOUND), (409, "EntityAlreadyExists", Failure.CONFLICT),
    (409, "OperationNotAllowed", Failure.TRANSIENT), (412, "UpdateConditionNotSatisfied", Failure.CONFLICT),
    (400, "InvalidInput", Failure.PERMANENT),
])
def test_status_and_code_decide_the_kind(status, code, kind):
    """Each status (and the few codes that change its meaning) has one kind of failure."""
    assert classify(status, code) is kind


@pytest.mark.parametrize("exc", [http_error(403, "AuthorizationFailure"), ServiceBusAuthorizationError(message="no")])
def test_a_refusal_means_the_same_everywhere(exc):
    """A 403 from Storage and an authorization error from Service Bus both say which role to grant, and
    neither is retried: the error is a configuration problem and permanent at once."""
    error = translate(exc, "doing work", service="X", refused_hint="grant the identity a role")
    assert isinstance(error, AccessRefusedError)
    assert isinstance(error, ConfigurationError) and isinstance(error, PermanentError)
    assert "grant the identity a role" in str(error)


@pytest.mark.parametrize(("exc", "kind"), [
    (ServiceRequestError("connection refused"), TransientError), (ServiceBusConnectionError(message="gone"),
                                                                  TransientError),
    (http_error(404), NotFoundError), (http_error(412), ConflictError), (http_error(400), PermanentError),
])
def test_translate_gives_the_project_error(exc, kind):
    """Callers see only the project's errors, named by what they mean."""
    assert type(translate(exc, "reading", service="X")) is kind


def test_translated_errors_carry_no_sas():
    """The reason the service gives is redacted before it reaches a message."""
    exc = http_error(400)
    exc.reason = "bad request for https://a.blob.core.windows.net/c/b?sv=1&sig=SECRET"
    assert "SECRET" not in str(translate(exc, "reading", service="X"))


def test_lost_races_are_retried_with_growing_random_pauses():
    """A write that loses the ETag race is tried again after a pause that grows, until it wins."""
    pauses: list[float] = []
    outcomes = iter([ResourceModifiedError("lost"), ResourceModifiedError("lost"), "won"])

    def attempt() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    retry = EtagRetry(base_pause=0.1, sleep=pauses.append, random=lambda: 0.5)
    assert retry.run(attempt, what="job j") == "won"
    assert pauses == [0.05, 0.1]


def test_a_write_that_never_wins_is_transient():
    """After the last attempt the caller gets a TransientError naming what kept changing, not a hang."""
    def attempt() -> None:
        raise ResourceModifiedError("lost")

    retry = EtagRetry(attempts=3, sleep=lambda _: None, random=lambda: 1.0)
    with pytest.raises(TransientError, match="job j kept changing during 3"):
        retry.run(attempt, what="job j")
