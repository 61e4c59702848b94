"""`./dev`, the project's front door: its help is its usage and nothing else, and a wrong command or
option ends with an error and exit 2, never a traceback."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

# Runs ./dev and the CLI as processes.
pytestmark = pytest.mark.integration

DEV = Path(__file__).resolve().parents[2] / "dev"


def _dev(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(DEV), *args], capture_output=True, text=True, timeout=120)


def test_help_prints_the_usage_block_only():
    """`./dev help` prints the usage comment of the script: no line of the script's code."""
    done = _dev("help")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].startswith("The project's front door") and any("./dev run" in line for line in lines)
    assert not any(word in done.stdout for word in ("set -euo", "pipefail", "cd \"$(dirname"))


@pytest.mark.parametrize("args", [("bogus",), ("run", "--no-such-flag"), ("run", "--blob-port", "abc")])
def test_wrong_usage_is_exit_2_without_traceback(args):
    """A mistyped command or option says so and exits 2; nothing is started."""
    done = _dev(*args)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error:" in done.stderr
