"""Ports for the local stack: never one already promised to a listener not yet bound; and waiting for a
local server's port as long as a slow start takes on a busy machine, no longer than its process lives."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from devhost.ports import free_port, free_ports, wait_for_port

# The waits below have an hour-long limit: a wait that ended only by its limit fails on this timeout.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_the_wait_ends_when_the_process_that_should_listen_is_gone():
    """A server that exits without listening ends the wait at once, not at its hour-long limit."""
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    assert wait_for_port(free_port(), 3600.0, alive=lambda: process.poll() is None) is False


def test_a_listener_that_comes_late_is_waited_for():
    """The wait lasts while the server is still starting: a port that opens after many polls is found."""
    polls = threading.Semaphore(0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def alive() -> bool:          # called once per poll: the listener opens after the twentieth
        polls.release()
        return True

    def open_late() -> None:
        for _ in range(20):
            polls.acquire()
        listener.listen()

    opener = threading.Thread(target=open_late)
    opener.start()
    try:
        assert wait_for_port(port, 3600.0, alive=alive) is True
    finally:
        opener.join()
        listener.close()


def test_ports_promised_but_not_bound_are_never_handed_out_again():
    """`./dev run --table-port P` names a port the system still sees as free until Azurite binds it:
    Azurite's own spare (Queue) port must not be P (seen: EADDRINUSE on the table port)."""
    promised = set(free_ports(40))
    chosen = free_ports(3, besides=promised)
    assert len(set(chosen)) == 3 and not promised & set(chosen)
