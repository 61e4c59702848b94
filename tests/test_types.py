"""The type checker is part of the test command: a type error in the core fails `./dev test`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def _mypy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_the_core_type_checks():
    """Domain, services, ports and the composition root pass mypy as configured in pyproject.toml."""
    done = _mypy()
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_core_is_checked_strictly(tmp_path):
    """The strict settings reach a use case: an unannotated one in shared/services is reported."""
    package = tmp_path / "shared" / "services"
    package.mkdir(parents=True)
    (tmp_path / "shared" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "careless.py").write_text("def use_case(svc, job_id):\n    return svc.jobs.get(job_id)\n")
    done = _mypy("--config-file", str(ROOT / "pyproject.toml"), "shared/services/careless.py", cwd=tmp_path)
    assert done.returncode == 1 and "missing a type annotation" in done.stdout, done.stdout + done.stderr
