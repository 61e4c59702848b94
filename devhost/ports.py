"""Small helpers for the local stack: free ports and waiting for a listener."""
from __future__ import annotations

import socket
import time
from typing import Callable, Collection


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
