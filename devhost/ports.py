"""Small helpers for the local stack: free ports and waiting for a listener."""
from __future__ import annotations

import random
import socket
import time
from pathlib import Path
from typing import Callable, Collection


# Ports the local stack listens on by default (./dev run, Azurite, Core Tools): never handed out.
DEFAULT_PORTS = frozenset({5672, 7071, 10000, 10001, 10002})
_start = random.SystemRandom()          # where a choice begins: from the system's randomness, so forked
                                        # processes do not all begin at the same port


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int, *, besides: Collection[int] = ()) -> list[int]:
    """``count`` distinct free ports, none of ``besides``, for listeners started a moment later.

    They are taken below the system's ephemeral range: a port from ``bind(0)`` or an outgoing
    connection's local port comes from that range, so between this choice and the listener's bind
    no other process's port-0 listener or client socket can take it (a test suite runs dozens of
    those at once). The search begins at a random port of that stretch; each port is checked by
    binding it, and all are held at once while they are chosen. ``besides``: ports already promised
    to a listener that has not bound them yet, which the system would see as free."""
    sockets: list[socket.socket] = []
    choosable = _choosable()
    first = _start.randrange(len(choosable))
    try:
        for port in (*choosable[first:], *choosable[:first]):
            if len(sockets) == count:
                break
            if port in besides or port in DEFAULT_PORTS:
                continue
            candidate = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                candidate.bind(("127.0.0.1", port))
            except OSError:                 # held, or still in TIME_WAIT of an earlier listener
                candidate.close()
                continue
            sockets.append(candidate)
        if len(sockets) < count:
            raise OSError(f"fewer than {count} free ports between {choosable.start} and {choosable.stop - 1}")
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def ephemeral_range() -> range:
    """The ports the system hands to ``bind(0)`` and outgoing connections (Linux; its default elsewhere)."""
    try:
        low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def _choosable() -> range:
    """The ports ``free_ports`` chooses from: below the ephemeral range, from half its start up
    (16384-32767 with Linux's default); above it if the range starts too low; any, if neither has room."""
    ephemeral = ephemeral_range()
    below, above = range(max(1024, ephemeral.start // 2), ephemeral.start), range(ephemeral.stop, 65536)
    roomier = max(below, above, key=len)
    return roomier if len(roomier) >= 1000 else range(1024, 65536)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1", *,
                  alive: Callable[[], bool] | None = None) -> bool:
    """Whether something listens on ``port`` within ``timeout`` seconds. With ``alive`` (is the process
    that should listen still running?) the wait ends as soon as that process is gone, so a caller can
    give a slow start on a busy machine a generous ``timeout`` and still learn of a failed one at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_in_use(port, host):
            return True
        if alive is not None and not alive():
            return port_in_use(port, host)
        time.sleep(0.05)
    return False
