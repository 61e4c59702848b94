"""Use cases reach each other only through the seams docs/contracts.md names: a new import of one
service module by another fails here until it is added to that list (and its reason to the page).
And none reaches for the composition root: each takes the narrow Protocol of what it reads."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "shared" / "services"
# Shared pieces every use case may use: what a use case needs, retrying through an outage, the feed margin.
COMMON = {"needs", "outages", "outcomes"}
# (importer, imported): the seams of docs/contracts.md, "Use cases and their seams".
SEAMS = {
    ("dispatch", "restore_point_backup"),    # the worker backs up a managed-disk VM by a restore point
    ("dispatch", "claims"), ("protection", "claims"),           # one backup of a VM at a time
    ("dispatch", "recovery"),                # the snapshot-limit guard before a dispatch
    ("ingestion", "recovery"), ("restore_point_backup", "recovery"), ("retention", "recovery"),
                                             # a successful backup becomes a recovery point: one writer
    ("restore", "point_data"), ("retention", "point_data"), ("alerting", "point_data"), ("ingestion", "point_data"),
                                             # is a point's data still there
    ("point_data", "restore_point_backup"), ("retention", "restore_point_backup"),
                                             # a VM's ARM id, as the backup found it
    ("restore_testing", "restore"), ("restore", "restore_testing"),
                                             # a drill is a restore, then checks run in its worker
    ("recovery", "alerting"),                # a disk near the snapshot limit raises an alert
    ("sweeping", "ingestion"),               # the sweep re-ingests what the trigger missed
    ("dashboard", "compliance"),             # the overview shows the compliance report
    ("alerting", "retention"), ("alerting", "rollup"),
                                             # alerts are raised on what those use cases found
}


def service_imports() -> set[tuple[str, str]]:
    found = set()
    for path in SERVICES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shared.services."):
                imported = node.module.split(".")[2]
                if imported not in COMMON and imported != path.stem:
                    found.add((path.stem, imported))
    return found


def test_use_cases_import_each_other_only_at_named_seams():
    """Every import of one service module by another is a seam listed here and in docs/contracts.md."""
    assert service_imports() - SEAMS == set()


def test_every_named_seam_is_still_used():
    """A seam that is gone leaves the list (and the page) too."""
    assert SEAMS - service_imports() == set()


def test_the_seams_are_documented():
    """docs/contracts.md names each seam as ``importer -> imported``."""
    page = (ROOT / "docs" / "contracts.md").read_text()
    assert [f"{a} -> {b}" for a, b in sorted(SEAMS) if f"`{a} -> {b}`" not in page] == []


# Service modules that may import the composition root, each with why. None: every use case takes the
# Protocol of what it reads (shared/services/needs.py), which Services satisfies at the call site.
ROOT_ALLOWED: dict[str, str] = {}


def composition_root_imports(folder: Path) -> set[str]:
    """The modules of ``folder`` that import shared.bootstrap (its ``Services``), even only for typing."""
    found = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            if any(name == "shared.bootstrap" or name.startswith("shared.bootstrap.") for name in names):
                found.add(path.stem)
    return found


def test_no_use_case_imports_the_composition_root():
    """A use case declares what it needs: no service module imports Services (shared.bootstrap)."""
    assert composition_root_imports(SERVICES) - set(ROOT_ALLOWED) == set()


def test_an_import_of_the_composition_root_is_found(tmp_path):
    """The check sees the import in each form it takes: for typing only, plain, inside a function."""
    (tmp_path / "typed.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                       "    from shared.bootstrap import Services\n")
    (tmp_path / "plain.py").write_text("import shared.bootstrap\n")
    (tmp_path / "late.py").write_text("def f():\n    from shared.bootstrap import services\n")
    (tmp_path / "clean.py").write_text("from shared.services.needs import HasJobs\n")
    assert composition_root_imports(tmp_path) == {"typed", "plain", "late"}
