"""Source scanners behind the codebase's rules (docs/testing.md, "Rules as checks"): each reads Python
source with ``ast`` and names every violation as ``path:line: what``, so a failing check says where."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterable, Iterator

ROOT = Path(__file__).resolve().parents[2]

# What an SDK exception says about its failure; only the error map reads these.
SDK_ERROR_FIELDS = frozenset({"status_code", "error_code", "reason"})
ERROR_MAP = "shared/adapters/azure_errors.py"


def python_files(root: Path, *parts: str) -> Iterator[Path]:
    for part in parts:
        path = root / part
        yield from ([path] if path.is_file() else sorted(path.rglob("*.py")))


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _sdk_names(tree: ast.AST) -> set[str]:
    """Local names bound to something imported from the Azure SDK (``azure.*``, not ``azure.functions``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and _is_sdk(node.module):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names if _is_sdk(alias.name))
    return names


def _is_sdk(module: str) -> bool:
    return (module == "azure" or module.startswith("azure.")) and not module.startswith("azure.functions")


def _mentions(node: ast.AST | None, names: set[str]) -> bool:
    return node is not None and any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node))


def _sdk_error_names(tree: ast.AST, sdk: set[str]) -> set[str]:
    """Names that hold an SDK exception: bound by ``except <SDK type> as name``, or a parameter typed
    as one (or as ``BaseException``/``Exception`` in a module that imports the SDK)."""
    broad = {"BaseException", "Exception"} if sdk else set()
    held: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.name and (
                _mentions(node.type, sdk) or (isinstance(node.type, ast.Name) and node.type.id in broad)):
            held.add(node.name)
        elif isinstance(node, ast.arg) and node.annotation is not None and (
                _mentions(node.annotation, sdk | broad)):
            held.add(node.arg)
    return held


def error_map_violations(root: Path = ROOT, parts: Iterable[str] = ("shared", "functions", "function_app.py"),
                         allowed: str = ERROR_MAP) -> list[str]:
    """Every place outside the error map that reads an SDK error's status, code or reason, or compares
    its text: ``exc.status_code``, ``getattr(exc, "error_code")``, ``"TableNotFound" in str(exc)``."""
    found: list[str] = []
    for path in python_files(root, *parts):
        where = _relative(path, root)
        if where == allowed:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        held = _sdk_error_names(tree, _sdk_names(tree))
        if not held:
            continue
        for node in ast.walk(tree):
            what = None
            if (isinstance(node, ast.Attribute) and node.attr in SDK_ERROR_FIELDS
                    and isinstance(node.value, ast.Name) and node.value.id in held):
                what = f"reads {node.value.id}.{node.attr}"
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                  and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id in held
                  and isinstance(node.args[1], ast.Constant) and node.args[1].value in SDK_ERROR_FIELDS):
                what = f"reads {node.args[0].id}.{node.args[1].value} through getattr"
            elif isinstance(node, ast.Compare) and any(
                    isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "str"
                    and _mentions(n, held) for n in [node.left, *node.comparators]):
                what = "compares an SDK error's text"
            if what:
                found.append(f"{where}:{node.lineno}: {what}; ask shared/adapters/azure_errors.py instead")
    return found


# Front ends (the CLI, the dashboard, the triggers) reach storage through ports and use cases.
FRONT_ENDS = ("shared/cli", "shared/web", "functions", "function_app.py")
# The error map reaches no storage: it is how any layer asks what an SDK failure means (cli/failures.py).
FRONT_END_MAY_IMPORT = frozenset({"shared.adapters.azure_errors"})


def front_end_violations(root: Path = ROOT, parts: Iterable[str] = FRONT_ENDS) -> list[str]:
    """Every import of an Azure SDK module (``azure.functions`` aside) or an adapter in a front end."""
    found: list[str] = []
    for path in python_files(root, *parts):
        where = _relative(path, root)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # ``from shared.adapters import x`` imports the module x: judge x, not the package.
                modules = ([f"{node.module}.{a.name}" for a in node.names] if node.module == "shared.adapters"
                           else [node.module])
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for module in modules:
                adapter = (module == "shared.adapters" or module.startswith("shared.adapters.")) \
                    and module not in FRONT_END_MAY_IMPORT
                if _is_sdk(module) or adapter:
                    found.append(f"{where}:{node.lineno}: imports {module}; reach storage through a port "
                                 f"(shared/ports.py) and a use case (shared/services/)")
    return found
