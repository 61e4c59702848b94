"""Small helpers for the local stack: free ports and waiting for a listener."""
from __future__ import annotations

import socket
import time
from typing import Collection


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int, *, besides: Collection[int] = ()) -> list[int]:
    """``count`` distinct free ports, none of ``besides``: all are held at once while they are chosen (one
    at a time, the system may hand out a port it just gave, and a process then binds two listeners to
    it). ``besides``: ports already promised to a listener that has not bound them yet, which the
    system would see as free."""
    sockets: list[socket.socket] = []
    try:
        while len([s for s in sockets if s.getsockname()[1] not in besides]) < count:
            sockets.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sockets[-1].bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets if s.getsockname()[1] not in besides][:count]
    finally:
        for s in sockets:
            s.close()


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_in_use(port, host):
            return True
        time.sleep(0.05)
    return False
