"""Ports for the local stack: never one already promised to a listener not yet bound; and waiting for a
local server's port as long as a slow start takes on a busy machine, no longer than its process lives."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from devhost import ports
from devhost.ports import DEFAULT_PORTS, _choosable, ephemeral_range, free_port, free_ports, wait_for_port

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


def test_chosen_ports_are_outside_the_range_the_system_hands_out_itself():
    """A chosen port stays free until its listener binds it: no port-0 listener or outgoing connection of
    another process can be given it meanwhile, as those come from the ephemeral range. Nor is it one of
    the stack's default ports."""
    chosen = free_ports(200)
    assert len(set(chosen)) == 200
    assert not set(chosen) & set(ephemeral_range())
    assert not set(chosen) & DEFAULT_PORTS


def test_a_port_something_listens_on_is_never_chosen(monkeypatch):
    """Of a small stretch of the range, all ports but three are held: the choice is those three, and a
    fourth cannot be had (a clear error, not a port in use)."""
    stretch = range(_choosable().start + 1000, _choosable().start + 1012)
    monkeypatch.setattr(ports, "_choosable", lambda: stretch)
    held: list[socket.socket] = []
    try:
        for port in stretch:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
                sock.listen()
            except OSError:             # another process's: held all the same
                sock.close()
                continue
            held.append(sock)
        assert len(held) >= 3
        left = [sock.getsockname()[1] for sock in held[-3:]]
        for sock in held[-3:]:
            sock.close()
        del held[-3:]
        assert sorted(free_ports(3)) == sorted(left)
        with pytest.raises(OSError, match="fewer than 4 free ports"):
            free_ports(4)
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize("listening", [False, True], ids=["bound-only", "listening"])
def test_azurite_chooses_again_when_another_process_takes_a_chosen_port_first(listening: bool):
    """Its ports are checked when chosen, then let go until Azurite binds them: another process may bind one
    in between (seen in a full run: EADDRINUSE on the blob port). Azurite starts on ports chosen again. A
    socket only bound is missed by the check before the start and fails Azurite's own bind; a listening
    one is caught by that check."""
    from azure.data.tables import TableServiceClient

    from devhost.azurite import Azurite

    azurite = Azurite()
    taken = azurite.blob_port
    squatter = socket.socket()          # no SO_REUSEADDR: Node's bind of the same port fails
    squatter.bind(("127.0.0.1", taken))
    if listening:
        squatter.listen()
    try:
        with azurite:
            assert azurite.blob_port != taken
            service = TableServiceClient.from_connection_string(azurite.connection_string)
            service.create_table("chosenagain")
            assert [table.name for table in service.list_tables()] == ["chosenagain"]
    finally:
        squatter.close()


def test_azurite_on_a_port_the_caller_gave_that_is_taken_says_so():
    """A port the caller names is the caller's to free: no other is chosen in its place."""
    from devhost.azurite import Azurite
    from shared.errors import ConfigurationError

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        with pytest.raises(ConfigurationError, match=f"port {port} for Azurite blob is in use"):
            Azurite(blob_port=port, table_port=free_port()).start()
    finally:
        squatter.close()
