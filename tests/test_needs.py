"""Each use case declares what it needs: its ``svc`` protocol lists exactly the dependencies it and the
use-case functions it calls read (mypy already refuses one that reads more than it lists; this refuses
one that lists more than it reads), and every ``Needs`` protocol is a flat, sorted list of ``Has``
protocols (docs/contracts.md, "Use cases and their seams", says why)."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "shared" / "services"


@dataclass
class Function:
    reads: set[str] = field(default_factory=set)        # svc.<attribute> read in its body
    passes_to: set[str] = field(default_factory=set)    # names of what it calls with svc as an argument
    declared: str | None = None                         # its svc annotation


@dataclass
class Module:
    functions: dict[str, Function] = field(default_factory=dict)
    imported: dict[str, str] = field(default_factory=dict)      # name -> module it came from
    needs: dict[str, list[str]] = field(default_factory=dict)   # protocol -> its bases


def read_module(source: str) -> Module:
    module = Module()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module.imported.update({alias.asname or alias.name: node.module for alias in node.names})
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and (node.name.endswith("Needs") or node.name.startswith("Has")):
            module.needs[node.name] = [ast.unparse(base) for base in node.bases]
            if node.name.startswith("Has"):     # one property: the attribute it grants
                module.needs[node.name] = [f".{n.name}" for n in node.body if isinstance(n, ast.FunctionDef)]
        if isinstance(node, ast.FunctionDef):
            svc = next((a for a in node.args.args + node.args.kwonlyargs if a.arg == "svc"), None)
            if svc is None:
                continue
            function = module.functions[node.name] = Function(declared=ast.unparse(svc.annotation)
                                                              if svc.annotation else None)
            for inner in ast.walk(node):
                if isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name) and inner.value.id == "svc":
                    function.reads.add(inner.attr)
                if isinstance(inner, ast.Call) and any(isinstance(a, ast.Name) and a.id == "svc"
                                                       for a in [*inner.args, *(k.value for k in inner.keywords)]):
                    function.passes_to.add(ast.unparse(inner.func))
    return module


def mismatches(modules: dict[str, Module]) -> list[str]:
    """Functions whose protocol differs from what they read, followed through the use-case functions
    they pass ``svc`` to; one that hands it to anything else (a class, a method) is not judged."""
    def home(mod: str, name: str) -> str | None:
        """The module defining protocol ``name`` as seen from ``mod`` (its own, or the one it imports it from)."""
        if name in modules[mod].needs:
            return mod
        origin = modules[mod].imported.get(name, "").rsplit(".", 1)[-1]
        return origin if origin in modules and name in modules[origin].needs else None

    def granted(mod: str, name: str) -> set[str]:
        bases = modules[mod].needs[name]
        return ({b[1:] for b in bases if b.startswith(".")}
                | {a for b in bases if (where := home(mod, b)) is not None for a in granted(where, b)})

    def reads(mod: str, name: str, seen: set[tuple[str, str]]) -> set[str] | None:
        if (mod, name) in seen:
            return set()
        seen.add((mod, name))
        function = modules[mod].functions[name]
        found = set(function.reads)
        for callee in function.passes_to:
            origin = modules[mod].imported.get(callee, f"shared.services.{mod}").rsplit(".", 1)[-1]
            if origin not in modules or callee not in modules[origin].functions:
                return None
            more = reads(origin, callee, seen)
            if more is None:
                return None
            found |= more
        return found

    found = []
    for mod, module in sorted(modules.items()):
        for name, function in sorted(module.functions.items()):
            used = reads(mod, name, set())
            where = home(mod, function.declared or "")
            if used is None or where is None:
                continue
            listed = granted(where, function.declared or "")
            if listed != used:
                found.append(f"{mod}.{name}({function.declared}): lists {sorted(listed - used)} unread, "
                             f"reads {sorted(used - listed)} unlisted")
    return found


def services() -> dict[str, Module]:
    return {path.stem: read_module(path.read_text()) for path in SERVICES.glob("*.py")}


def test_each_use_case_lists_exactly_what_it_reads():
    """A protocol wider than its function (a dependency listed, never read) is found."""
    assert mismatches(services()) == []


def test_needs_are_flat_sorted_lists_of_has_protocols():
    """Composing a Needs from another can make an inconsistent method resolution order at import."""
    wrong = [f"{mod}.{name}{tuple(bases)}" for mod, module in sorted(services().items())
             for name, bases in module.needs.items() if name.endswith("Needs")
             and (bases[-1:] != ["Protocol"] or bases[:-1] != sorted(bases[:-1])
                  or not all(b.startswith("Has") for b in bases[:-1]))]
    assert wrong == []


def test_a_wider_protocol_is_found():
    """The check follows a call into another use case and judges a protocol by what both read."""
    needs = read_module("from typing import Protocol\n"
                        "class HasJobs(Protocol):\n    @property\n    def jobs(self): ...\n"
                        "class HasClock(Protocol):\n    @property\n    def clock(self): ...\n")
    helper = read_module("from shared.services.needs import HasClock\n"
                         "def stamp(svc: HasClock):\n    return svc.clock.now()\n")
    caller = read_module("from shared.services.helper import stamp\n"
                         "from shared.services.needs import HasClock, HasJobs\n"
                         "class ExactNeeds(HasClock, HasJobs, Protocol): ...\n"
                         "class WideNeeds(HasClock, HasJobs, Protocol): ...\n"
                         "def exact(svc: ExactNeeds):\n    svc.jobs.get(stamp(svc))\n"
                         "def wide(svc: WideNeeds):\n    return stamp(svc)\n"
                         "def narrow(svc: HasJobs):\n    svc.jobs.get(stamp(svc))\n")
    assert mismatches({"needs": needs, "helper": helper, "caller": caller}) == [
        "caller.narrow(HasJobs): lists [] unread, reads ['clock'] unlisted",
        "caller.wide(WideNeeds): lists ['jobs'] unread, reads [] unlisted"]
