"""The type checker is part of the test command: a type error in the product fails `./dev test`.

shared/, functions/ and extension/ are checked with everything ``--strict`` turns on (pyproject.toml);
devhost/ and bench/, the local stack and the benches, get a looser run: their public functions are
annotated and what they annotate holds, but the bodies of private helpers are not checked.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.integration, pytest.mark.long]

# The looser run: mypy's defaults (annotated functions are checked, unannotated ones are not) and no
# report on the modules they import.
TOOLS = ("devhost", "bench")
# Paths (prefixes) the looser run and the annotation check skip while they are being typed, each with why.
# None now: the local Service Bus package, the last, is typed.
TOOLS_LEFT_OUT: tuple[str, ...] = ()
LOOSE_CONFIG = """\
[mypy]
python_version = 3.11
follow_imports = silent
explicit_package_bases = True
warn_unused_ignores = True
untyped_calls_exclude = azure.functions

[mypy-croniter.*]
ignore_missing_imports = True
"""


def _mypy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_the_product_type_checks_strictly():
    """shared/, functions/ and extension/ pass mypy --strict, as configured in pyproject.toml."""
    done = _mypy()
    assert done.returncode == 0, done.stdout + done.stderr


CARELESS = ("shared/services/careless.py", "shared/adapters/careless.py", "shared/cli/careless.py",
            "functions/careless.py", "extension/careless.py")


def test_the_product_is_checked_strictly(tmp_path):
    """The strict settings reach every tree of the product: an unannotated function in any of them is reported."""
    for module in CARELESS:
        path = tmp_path / module
        path.parent.mkdir(parents=True, exist_ok=True)
        for package in {path.parent, *path.parent.parents} - {tmp_path, *tmp_path.parents}:
            (package / "__init__.py").write_text("")
        path.write_text("def use_case(svc, job_id):\n    return svc.jobs.get(job_id)\n")
    done = _mypy("--config-file", str(ROOT / "pyproject.toml"), *CARELESS, cwd=tmp_path)
    reported = {line.split(":")[0] for line in done.stdout.splitlines() if "missing a type annotation" in line}
    assert done.returncode == 1 and reported == set(CARELESS), done.stdout + done.stderr


def test_a_use_case_takes_what_it_needs_not_any(tmp_path):
    """In shared/services an explicit Any is reported, and so is a use case reading a port its Protocol leaves out."""
    package = tmp_path / "shared" / "services"
    package.mkdir(parents=True)
    (tmp_path / "shared" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "loose.py").write_text(
        "from typing import Any, Protocol\n\n"
        "class JobsOnly(Protocol):\n    @property\n    def jobs(self) -> list[str]: ...\n\n"
        "def use_case(svc: Any) -> None:\n    svc.jobs.clear()\n\n"
        "def narrow(svc: JobsOnly) -> object:\n    return svc.clock\n")
    done = _mypy("--config-file", str(ROOT / "pyproject.toml"), "shared/services/loose.py", cwd=tmp_path)
    assert 'loose.py:7: error: Explicit "Any" is not allowed' in done.stdout, done.stdout + done.stderr
    assert '"JobsOnly" has no attribute "clock"' in done.stdout, done.stdout + done.stderr


def test_no_use_case_takes_the_whole_bundle_untyped():
    """No ``svc: Any`` in shared/: each use case names a Protocol of what it reads (shared/services/needs.py)."""
    untyped = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "shared").rglob("*.py"))
               for n, line in enumerate(path.read_text().splitlines(), 1) if "svc: Any" in line]
    assert untyped == []


def test_the_product_takes_no_blanket_ignore():
    """An ignore in the product names the error it silences (and a comment says why), never all of them."""
    bare = [f"{path.relative_to(ROOT)}:{n}" for tree in ("shared", "functions", "extension")
            for path in sorted((ROOT / tree).rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if "# type: ignore" in line and "# type: ignore[" not in line]
    assert bare == []


def _tool_files() -> list[Path]:
    return [path for tree in TOOLS for path in sorted((ROOT / tree).rglob("*.py"))
            if not str(path.relative_to(ROOT)).startswith(TOOLS_LEFT_OUT)]


def test_the_tools_type_check_loosely(tmp_path):
    """devhost/ and bench/ pass mypy's default checks: what their functions annotate holds."""
    config = tmp_path / "mypy.ini"
    config.write_text(LOOSE_CONFIG)
    done = _mypy("--config-file", str(config), *(str(p.relative_to(ROOT)) for p in _tool_files()))
    assert done.returncode == 0, done.stdout + done.stderr


def _unannotated(source: str) -> list[str]:
    """Public functions and methods (of public classes) with a parameter or the return not annotated."""
    found = []

    def visit(body: list[ast.stmt], owner: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                visit(node.body, f"{owner}{node.name}.")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                public = not node.name.startswith("_") or node.name == "__init__"
                if not public:
                    continue
                args = node.args
                params = [*args.posonlyargs, *args.args, *args.kwonlyargs, *filter(None, [args.vararg, args.kwarg])]
                params = [p for p in params if not (owner and p.arg in ("self", "cls"))]
                if any(p.annotation is None for p in params) or (node.returns is None and node.name != "__init__"):
                    found.append(f"{owner}{node.name} (line {node.lineno})")

    visit(ast.parse(source).body, "")
    return found


def test_the_tools_annotate_their_public_functions():
    """Every public function of devhost/ and bench/ says what it takes and returns."""
    missing = [f"{path.relative_to(ROOT)}: {name}" for path in _tool_files()
               for name in _unannotated(path.read_text())]
    assert missing == []


def test_the_annotation_check_sees_a_gap():
    """The check above reports a public function without annotations, and leaves private ones alone."""
    source = "def run(port):\n    pass\n\ndef _helper(x):\n    pass\n\nclass Stack:\n    def start(self) -> None: ...\n" \
             "    def stop(self, wait):\n        pass\n"
    assert _unannotated(source) == ["run (line 1)", "Stack.stop (line 9)"]
