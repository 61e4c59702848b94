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


def test_a_unit_test_cannot_start_a_multiprocessing_worker():
    """A multiprocessing worker is a process too, whichever way it is started (fork, spawn, forkserver)."""
    import multiprocessing

    for method in ("fork", "spawn", "forkserver"):
        with pytest.raises(UnitTierViolation, match="process"):
            multiprocessing.get_context(method).Process(target=print).start()


def test_a_unit_test_cannot_forkpty():
    """A pseudo-terminal child (os.forkpty, pty.fork, pty.spawn) is refused."""
    import os
    import pty

    with pytest.raises(UnitTierViolation, match="process"):
        os.forkpty()
    with pytest.raises(UnitTierViolation, match="process"):
        pty.fork()


def test_a_unit_test_cannot_reach_a_process_below_subprocess():
    """The C-level fork-and-exec that subprocess and asyncio share is refused, not only Popen."""
    import _posixsubprocess
    import os

    with pytest.raises(UnitTierViolation, match="process"):
        _posixsubprocess.fork_exec()
    with pytest.raises(UnitTierViolation, match="process"):
        os.posix_spawn("/bin/true", ["true"], {})


def test_a_unit_test_cannot_send_udp():
    """A UDP datagram needs no connection: sending one is refused as well."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            pytest.raises(UnitTierViolation, match="network"):
        udp.sendto(b"x", ("127.0.0.1", 9))


def test_a_unit_test_cannot_look_up_a_host_name():
    """A DNS lookup (libc sends it, not our sockets) is refused at every resolver entry point."""
    for lookup, args in ((socket.getaddrinfo, ("example.invalid", 80)), (socket.gethostbyname, ("example.invalid",)),
                         (socket.gethostbyname_ex, ("example.invalid",)), (socket.gethostbyaddr, ("127.0.0.1",)),
                         (socket.getnameinfo, (("127.0.0.1", 80), 0))):
        with pytest.raises(UnitTierViolation, match="DNS"):
            lookup(*args)


def test_the_long_files_are_collected_first_each_file_whole(request: pytest.FixtureRequest):
    """In this run's collection, every test of a file marked ``long`` comes before every other test, and each
    file's tests stay together in their own order, so `./dev test` hands the long files out first."""
    items = request.session.items
    marked = [item.get_closest_marker("long") is not None for item in items]
    assert marked == sorted(marked, reverse=True)
    files = [item.path for item in items]
    runs = [path for n, path in enumerate(files) if n == 0 or files[n - 1] != path]
    assert len(runs) == len(set(runs)), "a file's tests are split"


def test_long_files_first_moves_whole_files_and_keeps_the_rest_in_order():
    """The ordering itself, on stand-in items: long files to the front, nothing else reordered."""
    from pathlib import Path

    from tests.conftest import long_files_first

    class Item:
        def __init__(self, path: str, name: str, long: bool = False):
            self.path, self.name, self.long = Path(path), name, long

        def get_closest_marker(self, name: str):
            return object() if name == "long" and self.long else None

    items = [Item("a.py", "a1"), Item("b.py", "b1", long=True), Item("a.py", "a2"), Item("c.py", "c1"),
             Item("b.py", "b2", long=True), Item("d.py", "d1", long=True)]
    long_files_first(items)
    assert [item.name for item in items] == ["b1", "b2", "d1", "a1", "a2", "c1"]


def test_a_file_of_twenty_seconds_is_named_until_it_is_marked():
    """The end-of-run hint (``unmarked_long_files``): docs/testing.md's 20 s, whatever is marked already."""
    from tests.conftest import unmarked_long_files

    seconds = {"tests/a.py": 30.0, "tests/b.py": 25.0, "tests/c.py": 20.0, "tests/d.py": 19.9, "tests/e.py": 3.0}
    assert unmarked_long_files(seconds, {"tests/a.py"}) == [("tests/b.py", 25.0), ("tests/c.py", 20.0)]
    assert unmarked_long_files(seconds, {"tests/a.py", "tests/b.py", "tests/c.py"}) == []
    # Marking files does not move the bar: the file just under it stays unnamed.
    assert unmarked_long_files(seconds, {"tests/a.py", "tests/b.py", "tests/c.py", "tests/e.py"}) == []
    assert unmarked_long_files({"tests/e.py": 3.0}, set()) == []
