"""Every port has a contract: each Protocol in shared/ports.py is named in the ``PORTS`` of a contract
module beside this one, whose cases run on the port's fake and its real adapter (docs/contracts.md)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def protocols(ports: Path) -> set[str]:
    """The classes of ``ports`` that derive from ``Protocol``."""
    tree = ast.parse(ports.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef)
            and any((isinstance(b, ast.Name) and b.id == "Protocol") or
                    (isinstance(b, ast.Attribute) and b.attr == "Protocol") for b in node.bases)}


def declared(contracts: Path) -> dict[str, list[str]]:
    """Port name -> the contract modules whose ``PORTS`` name it."""
    found: dict[str, list[str]] = {}
    for module in sorted(contracts.glob("test_*.py")):
        for node in ast.parse(module.read_text(encoding="utf-8")).body:
            if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PORTS" for t in node.targets)
                    and isinstance(node.value, ast.Tuple)):
                for element in node.value.elts:
                    name = element.id if isinstance(element, ast.Name) else getattr(element, "attr", None)
                    if name:
                        found.setdefault(name, []).append(module.name)
    return found


def ports_without_contract(ports: Path, contracts: Path) -> set[str]:
    return protocols(ports) - set(declared(contracts))


def test_every_port_has_a_contract_suite():
    """A port with no suite fails, naming it: a new port comes with its suite (docs/contracts.md)."""
    missing = ports_without_contract(ROOT / "shared" / "ports.py", ROOT / "tests" / "contracts")
    assert missing == set(), f"ports without a contract suite: {sorted(missing)}"


def test_declared_ports_are_ports():
    """A ``PORTS`` entry that names no Protocol of shared/ports.py (a typo, a renamed port) is an error."""
    assert set(declared(ROOT / "tests" / "contracts")) <= protocols(ROOT / "shared" / "ports.py")


@pytest.mark.parametrize(("suite", "missing"), [("", {"Queue", "Store"}), ("PORTS = (Store,)", {"Queue"}),
                                               ("PORTS = (ports.Store, Queue)", set())])
def test_the_check_names_a_planted_port_without_a_suite(tmp_path, suite, missing):
    ports = tmp_path / "ports.py"
    ports.write_text("from typing import Protocol\n\n\nclass Queue(Protocol):\n    def send(self) -> None: ...\n\n\n"
                     "class Store(Protocol):\n    def get(self) -> int: ...\n\n\nclass Value:\n    pass\n")
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    (contracts / "test_planted.py").write_text(f"from ports import Queue, Store\n\n{suite}\n")
    assert ports_without_contract(ports, contracts) == missing
