"""The unit tier keeps its promise: a unit test that reaches for the network or a process fails."""
from __future__ import annotations

import socket
import subprocess

import pytest

from tests.conftest import UnitTierViolation


def test_a_unit_test_cannot_connect_anywhere():
    """A unit test that opens a connection fails at once, naming the rule, instead of waiting on a service."""
    with pytest.raises(UnitTierViolation, match="network"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def test_a_unit_test_cannot_start_a_process():
    """A unit test that starts a process fails, naming the rule."""
    with pytest.raises(UnitTierViolation, match="process"):
        subprocess.run(["true"], check=False)


@pytest.mark.integration
def test_an_integration_test_may_start_a_process():
    """Outside the unit tier nothing is refused."""
    assert subprocess.run(["true"], check=False).returncode == 0


def test_this_module_is_in_the_unit_tier(request: pytest.FixtureRequest):
    """A test that names no service fixture is classified unit without saying so."""
    assert request.node.get_closest_marker("unit") is not None


def test_a_unit_test_cannot_fork():
    """Forking (multiprocessing's way to start a worker) is refused too."""
    import os

    with pytest.raises(UnitTierViolation, match="process"):
        os.fork()
