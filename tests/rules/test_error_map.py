"""One error map: no module but shared/adapters/azure_errors.py reads what an SDK failure says, so the
same HTTP 403 means the same thing (AccessRefusedError, naming the role) whichever adapter met it."""
from __future__ import annotations

import textwrap

import pytest

from shared.errors import AccessRefusedError, ConflictError
from tests.rules.scan import error_map_violations
from tests.test_azure_errors import http_error


def test_no_module_but_the_error_map_reads_an_sdk_error_s_status_or_code():
    """Adapters, CLI and functions ask the error map (classify, is_failure, read_failure, translate)."""
    assert error_map_violations() == []


@pytest.mark.parametrize("body", [
    "except HttpResponseError as exc:\n    if exc.status_code == 404:\n        pass",
    "except (ResourceNotFoundError, AzureError) as exc:\n    code = getattr(exc, 'error_code', None)",
    "except AzureError as exc:\n    if 'TableNotFound' in str(exc):\n        pass",
    "except TableTransactionError as failed:\n    print(failed.reason)",
])
def test_the_check_names_a_planted_violation(plant, body):
    """A module that classifies an SDK error itself is named with its line, whichever way it reads it."""
    root = plant("shared/adapters/planted.py",
                 "from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError\n"
                 "from azure.data.tables import TableTransactionError\n\n"
                 "def call(fn):\n    try:\n        fn()\n" + textwrap.indent(body, "    ") + "\n")
    found = error_map_violations(root, ["shared"])
    assert len(found) == 1 and found[0].startswith("shared/adapters/planted.py:")


def test_the_check_leaves_the_project_s_own_errors_alone(plant):
    """Our own errors' fields (a ParseError's reason, a JobError's error_code) are not SDK errors."""
    root = plant("shared/ok.py", "from shared.domain.status import ParseError\n\n"
                                 "def read(fn):\n    try:\n        fn()\n    except ParseError as exc:\n"
                                 "        return exc.reason, exc.error_code\n")
    assert error_map_violations(root, ["shared"]) == []


def _raising(exc: BaseException):
    def call(*_args, **_kwargs):
        raise exc
    return call


def test_a_403_from_the_recovery_point_table_is_a_refusal_naming_the_role():
    """Before: the recovery point table called a 403 a PermanentError; now it says which role to grant."""
    from shared.adapters.table_recovery import TableRecoveryPointStore

    store = TableRecoveryPointStore.__new__(TableRecoveryPointStore)
    store._name = "points"
    with pytest.raises(AccessRefusedError, match="Storage Table Data Contributor"):
        store._call(_raising(http_error(403, "AuthorizationFailure")))


def test_a_403_from_blob_snapshots_is_a_refusal_not_a_transient_failure():
    """Before: listing a disk's snapshots turned a 403 into a TransientError, retried for ever."""
    from shared.adapters.snapshots import BlobSnapshots

    snapshots = BlobSnapshots.__new__(BlobSnapshots)
    snapshots._locate = lambda url: ("vhds", "os.vhd")
    snapshots._service = type("Service", (), {"get_container_client": _raising(http_error(403))})()
    with pytest.raises(AccessRefusedError, match="Storage Blob Data Contributor"):
        snapshots.count_snapshots("http://127.0.0.1:10000/devstoreaccount1/vhds/os.vhd")


def test_a_copy_onto_a_blob_that_changed_is_a_conflict_by_the_error_map():
    """The copy's 412 (the target appeared meanwhile) is a ConflictError, decided by the map's kinds."""
    from shared.adapters.snapshots import BlobSnapshots

    snapshots = BlobSnapshots.__new__(BlobSnapshots)
    snapshots._read_sas = lambda base, snapshot: "sig=x"
    target = type("Blob", (), {"start_copy_from_url": _raising(http_error(412, "ConditionNotMet"))})()
    snapshots._service = type("Service", (), {"create_container": lambda self, name: None,
                                              "get_blob_client": lambda self, c, n: target})()
    with pytest.raises(ConflictError):
        snapshots.start_copy("http://h/a/os.vhd?snapshot=2026-03-01T22:31:00.0000000Z", "c", "b", owner="job")
