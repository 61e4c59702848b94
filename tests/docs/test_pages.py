"""The documentation holds together: docs/README.md indexes every page, every relative link of README.md
and docs/ leads somewhere, the README stays short enough to read in five minutes, and docs/cli.md names
every command the ``vmsnap`` parser has.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README_LIMIT = 250
# [text](target): the target up to a space, a closing parenthesis or an anchor.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s#]*)(#[^)\s]*)?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def relative_links(page: Path) -> list[str]:
    """The relative link targets of a page, outside code blocks (a sample's brackets are not links)."""
    text = FENCE.sub("", page.read_text())
    return [target for target, _ in LINK.findall(text)
            if target and not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def unindexed(index_text: str, names: list[str]) -> list[str]:
    linked = {target for target, _ in LINK.findall(index_text)}
    return [name for name in names if name not in linked]


def broken_links(files: list[Path]) -> list[str]:
    return [f"{page.name} -> {target}" for page in files for target in relative_links(page)
            if not (page.parent / target).exists()]


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[str]:
    """Every runnable command of the parser, as typed: 'job list', 'restore-test plan create', ..."""
    groups = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not groups:
        return [" ".join(prefix)]
    return [command for group in groups for name, sub in group.choices.items()
            for command in commands(sub, prefix + (name,))]


def undocumented(cli_text: str, names: list[str]) -> list[str]:
    """Commands not written as the start of a code span in cli.md (`job list ...` or `job list`)."""
    return [name for name in names if not re.search(r"`" + re.escape(name) + r"[ `]", cli_text)]


def test_the_index_links_every_page():
    """A page nobody links from docs/README.md is a page nobody finds."""
    names = [page.name for page in pages() if page.name != "README.md"]
    assert unindexed((DOCS / "README.md").read_text(), names) == []


def test_the_index_check_catches_a_missing_page():
    assert unindexed("- [a.md](a.md): a page", ["a.md", "b.md"]) == ["b.md"]


def test_every_relative_link_resolves():
    """Links in README.md and docs/ point at files that exist (the pages moved; the links followed)."""
    assert broken_links([ROOT / "README.md", *pages()]) == []


def test_the_link_check_catches_a_broken_link(tmp_path):
    (tmp_path / "there.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [web](https://example.com) [gone](gone.md#part)\n```\n[code](nope.md)\n```\n")
    assert [link.rsplit(" -> ", 1)[1] for link in broken_links([page])] == ["gone.md"]


def test_the_readme_reads_in_five_minutes():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_LIMIT, f"README.md has {lines} lines; move detail to docs/ (limit {README_LIMIT})"


def test_the_cli_page_covers_every_command():
    """docs/cli.md names every command `vmsnap` has: a new command without a line there fails."""
    from shared.cli import build_parser

    names = commands(build_parser())
    assert "job list" in names and "restore-test plan create" in names    # the walk reaches nested commands
    assert undocumented((DOCS / "cli.md").read_text(), names) == []


def test_the_command_check_catches_a_missing_command():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    job = sub.add_parser("job").add_subparsers()
    job.add_parser("list")
    job.add_parser("stop")
    assert undocumented("| `job list [--vm]` | az |", commands(parser)) == ["job stop"]
