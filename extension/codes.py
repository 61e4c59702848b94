"""The extension's result codes, their health colours and their ``StatusCode.<Name>`` names.

Member names are the wire names of the real handler (``ExtensionErrorCodeHelper``), so
``code.name`` is what goes into messages and telemetry unchanged.
"""
from __future__ import annotations

from enum import IntEnum

GREEN, YELLOW, RED = 0, 128, 256


class ExtensionCode(IntEnum):
    success_appconsistent = 0
    success = 1
    error = 2
    SuccessAlreadyProcessedInput = 3
    ExtensionTempTerminalState = 4
    error_parameter = 11
    error_12 = 12
    error_http_failure = 15
    FailedHandlerGuestAgentCertificateNotFound = 16
    FailedRetryableSnapshotFailedNoNetwork = 76
    FailedSnapshotLimitReached = 85
    FailedRetryableFsFreezeFailed = 121
    FailedRetryableFsFreezeTimeout = 122
    FailedRetryableUnableToOpenMount = 123
    FailedRetryableSnapshotRateExceeded = 173
    FailedPrepostPreScriptFailed = 300
    FailedPrepostPostScriptFailed = 301
    FailedPrepostPreScriptNotFound = 302
    FailedPrepostPostScriptNotFound = 303
    FailedPrepostPluginhostConfigParsing = 304
    FailedPrepostPluginConfigParsing = 305
    FailedPrepostPreScriptPermissionError = 306
    FailedPrepostPostScriptPermissionError = 307
    FailedPrepostPreScriptTimeout = 308
    FailedPrepostPostScriptTimeout = 309
    FailedPrepostPluginhostPreTimeout = 310
    FailedPrepostPluginhostPostTimeout = 311
    FailedPrepostCheckSumMismatch = 312
    FailedPrepostPluginhostConfigNotFound = 313
    FailedPrepostPluginhostConfigPermissionError = 314
    FailedPrepostPluginhostConfigOwnershipError = 315
    FailedPrepostPluginConfigNotFound = 316
    FailedPrepostPluginConfigPermissionError = 317
    FailedPrepostPluginConfigOwnershipError = 318
    FailedGuestAgentInvokedCommandTooLate = 402
    FailedRetryableSnapshotFailedRestrictedNetwork = 761

    @property
    def health_state(self) -> int:
        """vmHealthState for this code when it is the sticky extension error (docs/error-codes.md; main/ExtensionErrorCodeHelper.py)."""
        return _HEALTH.get(self, YELLOW)

    def status_code_string(self) -> str:
        """The `` StatusCode.<Name>,`` suffix the real handler appends to error messages."""
        return f" StatusCode.{self.name},"


_GREEN_CODES = {0, 1, 2, 3, 4, 12, 173}
_RED_CODES = {15, 76, 85, 402, 761}
_HEALTH = {
    code: GREEN if code in _GREEN_CODES else RED if code in _RED_CODES else YELLOW
    for code in ExtensionCode
}

# Pre-check results that mean "app consistency is not configured": a plain FS-consistent backup
# follows and the code never reaches vmHealthStatusCode (handle.py's list, 314 included).
NOT_CONFIGURED = frozenset(
    {
        ExtensionCode.FailedPrepostPluginhostConfigParsing,
        ExtensionCode.FailedPrepostPluginConfigParsing,
        ExtensionCode.FailedPrepostPluginhostConfigNotFound,
        ExtensionCode.FailedPrepostPluginhostConfigPermissionError,
        ExtensionCode.FailedPrepostPluginConfigNotFound,
    }
)


class ExtErrorCode:
    """The sticky extension error behind ``vmHealthStatusCode``: the first non-success value wins."""

    def __init__(self) -> None:
        self.value = ExtensionCode.success

    def set(self, code: ExtensionCode) -> None:
        if self.value == ExtensionCode.success:
            self.value = ExtensionCode(code)
