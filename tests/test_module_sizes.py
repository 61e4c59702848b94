"""Modules a reader can hold in mind: a product module over 400 lines says on its first line why it stays
long (``# Over 400 lines on purpose: ...``), or it is split."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("shared", "functions", "extension", "devhost")
LIMIT = 400
REASON = "# Over 400 lines on purpose: "


def long_without_reason(files: dict[str, str]) -> list[str]:
    """The modules (path -> text) over the limit whose first line gives no reason."""
    return sorted(path for path, text in files.items()
                  if text.count("\n") > LIMIT and not text.startswith(REASON))


def product_modules() -> dict[str, str]:
    return {path.relative_to(ROOT).as_posix(): path.read_text()
            for folder in PRODUCT for path in (ROOT / folder).rglob("*.py")}


def test_every_long_product_module_says_why():
    assert long_without_reason(product_modules()) == []


def test_the_check_catches_a_long_module_without_a_reason():
    body = "x = 1\n" * (LIMIT + 1)
    files = {"a.py": body, "b.py": REASON + "one state machine.\n" + body, "c.py": "x = 1\n"}
    assert long_without_reason(files) == ["a.py"]


def test_a_reason_keeps_the_module_docstring():
    """The reason line comes before the docstring; Python still takes the docstring as the module's."""
    import shared.ports

    assert (ROOT / "shared" / "ports.py").read_text().startswith(REASON)
    assert shared.ports.__doc__ and shared.ports.__doc__.startswith("Ports:")
