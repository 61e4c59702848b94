"""The CLI, the dashboard and the function triggers reach storage only through ports (shared/ports.py) and
use cases: no front-end module imports an Azure SDK client or an adapter."""
from __future__ import annotations

import pytest

from tests.rules.scan import front_end_violations


def test_no_front_end_imports_the_sdk_or_an_adapter():
    """What a command or a page needs from storage is a port on Services or a use case."""
    assert front_end_violations() == []


@pytest.mark.parametrize("line", [
    "from azure.storage.blob import BlobClient",
    "import azure.data.tables",
    "from azure.core.exceptions import HttpResponseError",
    "from shared.adapters.table_protection import TableInventory",
    "from shared.adapters import snapshots",
])
def test_the_check_names_a_planted_import(plant, line):
    """A front end importing the SDK or an adapter, even inside a function, is named with its line."""
    root = plant("shared/cli/planted.py", f"import os\n\n\ndef handler(args, svc):\n    {line}\n")
    assert [v.split(": ")[0] for v in front_end_violations(root, ["shared/cli"])] == ["shared/cli/planted.py:5"]


def test_azure_functions_and_the_error_map_are_not_storage(plant):
    """The Functions binding types and the error map (what an SDK failure means) reach no storage."""
    root = plant("functions/dashboard.py",
                 "import azure.functions as func\nfrom shared.adapters.azure_errors import failures_in\n")
    assert front_end_violations(root, ["functions/dashboard.py"]) == []
