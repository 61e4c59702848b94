"""Reading the Bicep templates with the tree-sitter Bicep grammar: syntax errors, declarations,
module parameters and literal values. No Bicep compiler runs here (it is not in the registries
this project may use), so the tests check what a parser can: syntax, names and literal values."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

_PARSER = Parser(Language(tree_sitter_bicep.language()))
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Template:
    path: Path
    root: Node

    @classmethod
    def load(cls, path: Path) -> "Template":
        return cls(path, _PARSER.parse(path.read_bytes()).root_node)

    def syntax_errors(self) -> list[str]:
        found = []

        def walk(node: Node) -> None:
            if node.type == "ERROR" or node.is_missing:
                row, col = node.start_point
                found.append(f"{self.path.name}:{row + 1}:{col + 1}: {node.text.decode()[:60]!r}")
            for child in node.children:
                walk(child)

        walk(self.root)
        return found

    def declarations(self, kind: str) -> dict[str, Node]:
        """``parameter``, ``variable``, ``resource``, ``module`` or ``output`` declarations by name."""
        return {_name(node): node for node in self.root.named_children if node.type == f"{kind}_declaration"}

    def literal(self, node: Node | None):
        """A string, number or boolean node's value, a param's literal default, a var's literal; else None."""
        if node is None:
            return None
        if node.type == "string":
            parts = node.named_children
            if any(part.type == "interpolation" for part in parts):
                return None
            return "".join(part.text.decode() for part in parts)
        if node.type == "number":
            return int(node.text.decode())
        if node.type == "boolean":
            return node.text.decode() == "true"
        if node.type == "identifier":
            declared = self.declarations("parameter").get(node.text.decode()) or \
                self.declarations("variable").get(node.text.decode())
            return self.literal(value_of(declared)) if declared is not None else None
        return None

    def assigned_roles(self) -> set[str]:
        """Role definition ids this template's role assignments grant (through vars or literally)."""
        granted = set()
        for resource in self.declarations("resource").values():
            if "Microsoft.Authorization/roleAssignments@" not in _child(resource, "string").text.decode():
                continue
            for node in _descendants(resource):
                value = self._role_reference(node)
                if isinstance(value, str) and _GUID.fullmatch(value):
                    granted.add(value)
        return granted

    def _role_reference(self, node: Node):
        if node.type == "member_expression":           # roles.storageBlobDataOwner
            target, field = node.named_children[0], node.named_children[-1]
            declared = self.declarations("variable").get(target.text.decode())
            value = value_of(declared) if declared is not None else None
            if value is not None and value.type == "object":
                return self.literal(properties(value).get(field.text.decode()))
            return None
        if node.type in ("identifier", "string"):
            return self.literal(node)
        return None

    def module_params(self, module: str) -> dict[str, Node]:
        body = _child(self.declarations("module")[module], "object")
        return properties(properties(body)["params"])

    def module_paths(self) -> list[Path]:
        return [self.path.parent / self.literal(_child(node, "string"))
                for node in self.declarations("module").values()]


def properties(obj: Node) -> dict[str, Node]:
    """An object literal's properties: name -> value node."""
    result = {}
    for prop in obj.named_children:
        if prop.type == "object_property":
            key, value = prop.named_children[0], prop.named_children[-1]
            result[key.text.decode().strip("'")] = value
    return result


def value_of(declaration: Node) -> Node | None:
    """The expression after ``=`` in a declaration (a param's default), if any."""
    children = [c for c in declaration.named_children if c.type not in ("decorators", "decorator")]
    return children[-1] if len(children) >= 3 or declaration.type == "variable_declaration" else None


def find_property(node: Node, name: str) -> Node | None:
    """The value of the first ``name:`` property anywhere below ``node``."""
    if node.type == "object_property" and node.named_children[0].text.decode() == name:
        return node.named_children[-1]
    for child in node.named_children:
        found = find_property(child, name)
        if found is not None:
            return found
    return None


def _descendants(node: Node):
    for child in node.named_children:
        yield child
        yield from _descendants(child)


def _name(declaration: Node) -> str:
    return _child(declaration, "identifier").text.decode()


def _child(node: Node, kind: str) -> Node:
    return next(c for c in node.named_children if c.type == kind)
