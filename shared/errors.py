"""The project's one exception hierarchy.

Adapters translate SDK exceptions into these at the boundary (``raise ... from exc``), so services
and triggers decide on retry versus record-and-stop without knowing which SDK failed.
"""


class VmsnapError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigurationError(VmsnapError):
    """A setting is missing or invalid, or a configured endpoint cannot be reached.

    The message says which setting and what to do; it is printed as one line, never a traceback.
    """


class ValidationError(VmsnapError):
    """Input from a user or a message is invalid; the message names the field."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class NotFoundError(VmsnapError):
    """A named thing (VM, policy, job, protected item) does not exist."""


class ConflictError(VmsnapError):
    """The request conflicts with current state (e.g. a backup already in progress)."""


class TransientError(VmsnapError):
    """A failure that a retry may cure (network, throttling, lost race). Triggers re-raise it."""


class PermanentError(VmsnapError):
    """A failure that no retry cures; it is recorded on the job and the message is settled."""


class AccessRefusedError(ConfigurationError, PermanentError):
    """Azure refused this identity or key (401/403): a role or a setting to fix, never cured by a retry.

    Both a configuration problem (the CLI prints it as one line) and permanent (a job records it).
    """


class EndpointUnavailableError(ConfigurationError, TransientError):
    """An Azure endpoint gave no token or no answer: no credential could be found, or nothing listens.

    Transient to the app (an identity or network hiccup may pass, the platform retries); a setting or a
    sign-in to check for an operator (the CLI prints it as one line, exit 5).
    """
