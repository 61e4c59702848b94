"""``plant``: write a module into a throw-away tree, so a rule's check can be shown to fail on it."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture
def plant(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(relative: str, text: str) -> Path:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return tmp_path
    return write
