"""The repository stands on its own: no path of a development machine, no pointer to notes outside
it, and the documentation of error codes covers the catalogue the code uses."""
from __future__ import annotations

import os
import re
from pathlib import Path

from shared.domain.remediation import EXTENSION_CODES, SERVICE_ERRORS

ROOT = Path(__file__).resolve().parent.parent
# Home and work folders of development machines, and section marks of notes kept elsewhere.
FORBIDDEN = re.compile(r"(?<![\w.$~])/(?:work|root|home|Users)/[\w.-]+|[A-Z]:\\Users\\|§")
# This file has to name what it forbids.
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()


SKIPPED_DIRS = {".git", ".venv", "node_modules", ".hypothesis", ".pytest_cache", ".local", ".mypy_cache",
                "__pycache__", "build"}


def tracked_files() -> list[Path]:
    """Every file of the checkout except what .gitignore keeps out (walked, not asked of git: unit tier)."""
    files = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
        # In a worktree .git is a file naming where the repository lives: not part of the project.
        files += [Path(folder, name) for name in names if name != ".git" and not name.endswith((".pyc", ".bin"))]
    return files


def offending_lines(files: list[Path]) -> list[str]:
    found = []
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        if relative == SELF:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if FORBIDDEN.search(line):
                found.append(f"{relative}:{number}: {line.strip()[:120]}")
    return found


def test_no_path_of_a_development_machine_anywhere():
    """A reader of the repository never meets a path that exists only on someone's machine."""
    assert offending_lines(tracked_files()) == []


def test_the_check_finds_a_planted_path(tmp_path):
    """The search above is able to fail: a planted machine path and a section mark are reported."""
    # Assembled at run time, so this file itself never holds what it forbids.
    machine_path, section = "/" + "work" + "/shared", "\u00a7"
    planted = tmp_path / "note.py"
    planted.write_text(f"# see {machine_path}/notes.md\n# as in {section}4.2\nurl = 'https://example.org/home'\n")
    found = [line for line in FORBIDDEN.finditer(planted.read_text())]
    assert [m.group(0) for m in found] == [machine_path, section]


def test_every_error_code_the_code_uses_is_documented():
    """docs/error-codes.md lists every extension code and service error a job can record."""
    text = (ROOT / "docs" / "error-codes.md").read_text(encoding="utf-8")
    missing = [str(code) for code in EXTENSION_CODES if not re.search(rf"^\| {code} \|", text, re.M)]
    missing += [code for code in SERVICE_ERRORS if f"`{code}`" not in text]
    missing += [r.error_code for r in [*EXTENSION_CODES.values(), *SERVICE_ERRORS.values()]
                if f"`{r.error_code}`" not in text]
    assert missing == []
