"""A TCP proxy to put in front of one port of the local stack (Azurite's table or blob port, the local
Service Bus), for fault-injection tests: it forwards bytes until told to fail.

- ``outage("refuse")``: the port stops listening, so new connections are refused; open ones are reset.
- ``outage("reset")``: connections are accepted and reset at once (a load balancer with no backend).
- ``reset_every(n)``: every n-th HTTP request is answered with a connection reset instead.

    with TcpProxy(azurite.table_port) as proxy:
        conn = azurite.connection_string.replace(f":{azurite.table_port}/", f":{proxy.port}/")
        with proxy.outage():
            ...                      # the table is down
        proxy.reset_every(3)         # and now merely flaky
"""
from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from typing import Iterator

_METHODS = (b"GET ", b"PUT ", b"POST ", b"DELETE ", b"HEAD ", b"PATCH ", b"MERGE ", b"OPTIONS ")


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target_host:target_port``; faults switch on and off at any time."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int = 0):
        self.target = (target_host, target_port)
        self.port = port
        self.requests = 0                   # HTTP requests seen (forwarded or reset)
        self.resets = 0                     # connections this proxy reset on purpose
        self._mode: str | None = None       # None | "refuse" | "reset"
        self._every = 0
        self._listener: socket.socket | None = None
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- control --------------------------------------------------------------------------------
    def start(self) -> "TcpProxy":
        self._listen()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._close_listener()
        self._reset_all()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)

    def down(self, mode: str = "refuse") -> None:
        """Start an outage: ``refuse`` new connections, or accept and ``reset`` them; open ones are reset."""
        if mode not in ("refuse", "reset"):
            raise ValueError(f"outage mode {mode!r}: use 'refuse' or 'reset'")
        with self._lock:
            self._mode = mode
        if mode == "refuse":
            self._close_listener()
        self._reset_all()

    def up(self) -> None:
        """End the outage: forward again on the same port."""
        with self._lock:
            was, self._mode = self._mode, None
        if was == "refuse":
            self._listen()

    @contextlib.contextmanager
    def outage(self, mode: str = "refuse") -> Iterator["TcpProxy"]:
        self.down(mode)
        try:
            yield self
        finally:
            self.up()

    def reset_every(self, n: int) -> None:
        """Reset the connection carrying every ``n``-th HTTP request (0 switches it off)."""
        with self._lock:
            self._every = max(0, n)

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- internals ------------------------------------------------------------------------------
    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept_loop, listener)

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return                      # closed: an outage or stop
            if self._mode == "reset":
                self.resets += 1
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._reset(client)
                continue
            pair = (client, upstream)
            with self._lock:
                self._pairs.add(pair)
            self._spawn(self._pump, pair)

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, upstream = pair
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([client, upstream], [], [], 0.5)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    if source is client and data.startswith(_METHODS) and self._count_request():
                        return
                    (upstream if source is client else client).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._pairs.discard(pair)
            self._reset(client)
            self._reset(upstream)

    def _count_request(self) -> bool:
        """Count one request; True when this one is to be reset."""
        with self._lock:
            self.requests += 1
            doomed = self._every and self.requests % self._every == 0
        if doomed:
            self.resets += 1
        return bool(doomed)

    def _reset_all(self) -> None:
        with self._lock:
            pairs, self._pairs = list(self._pairs), set()
        for client, upstream in pairs:
            self._reset(client)
            self._reset(upstream)

    def _reset(self, sock: socket.socket) -> None:
        # SO_LINGER 0: close sends RST, as a crashed peer does, not a polite FIN.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.close()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"proxy-{self.port}")
        thread.start()
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
