"""A TCP proxy whose power switch simulates a storage outage: while off, open connections are cut
and new ones are accepted and closed at once (what a client sees when a front end goes away)."""
from __future__ import annotations

import socket
import threading


class TcpProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target_port>, one thread pair per connection."""

    def __init__(self, target_port: int, port: int = 0):
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = self._listener.getsockname()[1]
        self._on = threading.Event()
        self._on.set()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True)

    def start(self) -> "TcpProxy":
        self._thread.start()
        return self

    @property
    def on(self) -> bool:
        return self._on.is_set()

    def switch(self, on: bool) -> None:
        if on:
            self._on.set()
            return
        self._on.clear()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _close(sock)

    def stop(self) -> None:
        self._closed = True
        self.switch(False)
        _close(self._listener)
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._on.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass            # cut by switch(False) or by either end: both sides are closed below
        finally:
            for sock in (source, sink):
                with self._lock:
                    self._open.discard(sock)
                _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
