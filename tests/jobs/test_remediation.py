"""The remediation catalogue covers every code the extension can report and every error the service raises."""
from __future__ import annotations

import pytest

from shared.domain import remediation

EXTENSION_CODES = [0, 1, 2, 3, 4, 11, 12, 13, 14, 15, 16, 17, 76, 85, 121, 122, 123, 124, 173,
                   *range(300, 319), 402, *range(500, 513), 556, 761]


@pytest.mark.parametrize("code", EXTENSION_CODES)
def test_every_extension_code_has_actionable_remediation(code):
    """Each extension/health code maps to a service code, a title, a cause and at least one action."""
    fix = remediation.EXTENSION_CODES[code]
    assert fix.error_code and fix.title and fix.cause and fix.recommendations
    assert all(isinstance(r, str) and r for r in fix.recommendations)


def test_retryable_codes_follow_the_extension():
    """Codes the extension names 'Retryable', plus 2 and 402, are retryable; input errors are not."""
    for code in (2, 76, 121, 122, 123, 173, 402, 761):
        assert remediation.EXTENSION_CODES[code].retryable, code
    for code in (11, 17, 85, 124, 300, 302, 305, 306):
        assert not remediation.EXTENSION_CODES[code].retryable, code


@pytest.mark.parametrize("name", ["UserErrorVmNotFound", "UserErrorSasExpired", "GuestAgentSnapshotTaskStatusError",
                                  "UserErrorBackupOperationInProgress", "StatusBlobUnreadable"])
def test_service_errors_are_catalogued(name):
    """Errors the service raises itself have a title and recommended actions."""
    fix = remediation.for_service_error(name)
    assert fix.error_code == name and fix.title and fix.recommendations


def test_unknown_code_gets_an_honest_generic_answer():
    """A code the catalogue does not know still gets a title naming it and something to do."""
    fix = remediation.for_extension_code(9999)
    assert fix.error_code == "UserErrorCrpReportedUserError" and "9999" in fix.title and fix.recommendations
