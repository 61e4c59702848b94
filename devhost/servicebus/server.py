"""The local Service Bus server: ``LocalServiceBus`` runs the AMQP handler in a proton Container on a daemon
thread, started and stopped by the caller, with inspection helpers for tests; ``main`` runs it alone
(``python -m devhost.servicebus``), and ``ServiceBusProcess`` starts that command for a caller that wants the
broker out of its own process (a benchmark counting the broker's CPU apart, as Azurite's is)."""
from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from proton.reactor import ApplicationEvent, Container, EventInjector

from devhost.processes import cpu_seconds, end_process
from devhost.servicebus.amqp import ROUTINE_DISCONNECTS, STOP_EVENT, AmqpHandler
from devhost.servicebus.broker import Broker, QueueOptions

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"local Service Bus listening on (\S+):(\d+)")
START_LIMIT = 60.0


def connection_string(host: str, port: int) -> str:
    """What an unmodified SDK client is given to reach the local Service Bus on ``host:port``."""
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    return (f"Endpoint=sb://{host}:{port};SharedAccessKeyName=RootManageSharedAccessKey;"
            f"SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;")


class CannotListenError(OSError):
    """The server cannot listen where it was told: the port is taken, or the address is not this machine's."""

    def __init__(self, host: str, port: int, code: int, message: str):
        super().__init__(code, message)
        self.host = host
        self.port = port

    def __str__(self) -> str:
        # OSError's own would prefix "[Errno 98]": the user reads the message alone.
        return self.strerror or super().__str__()


class PortInUseError(CannotListenError):
    """The listening port is taken by another process (or another LocalServiceBus)."""

    def __init__(self, host: str, port: int):
        super().__init__(host, port, errno.EADDRINUSE,
                         f"port {port} is in use; stop what holds it or set another port (0 picks a free one)")


class LocalServiceBus:
    """The server: a proton Container on a daemon thread, started and stopped by the caller."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, queues: dict[str, QueueOptions] | None = None,
                 default_queue_options: QueueOptions | None = None, auto_create_queues: bool = True):
        self._host = host
        self._port = port
        self._broker = Broker(queues or {}, default_queue_options or QueueOptions(), auto_create_queues)
        self._thread: threading.Thread | None = None
        self._injector: EventInjector | None = None
        self._stopped = False

    @property
    def port(self) -> int:
        return self._port

    @property
    def connection_string(self) -> str:
        return connection_string(self._host, self._port)

    def start(self) -> "LocalServiceBus":
        """Listen and serve on a daemon thread; returns once the port accepts connections."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("a LocalServiceBus starts once; create a new one")
        logging.getLogger("proton").addFilter(ROUTINE_DISCONNECTS)    # a no-op when already there
        handler = AmqpHandler(self._broker)
        container = Container(handler)
        try:
            # proton annotates the port as a string (or its Url.Port) and calls int() on it.
            acceptor = container.acceptor(self._host, str(self._port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(self._host, self._port) from exc
            raise CannotListenError(self._host, self._port, exc.errno or 0,
                                    f"cannot listen on {self._host}:{self._port}: {exc.strerror or exc}; "
                                    f"give an address of this machine (--host)") from exc
        # Proton has no public accessor for the listening socket; its selectable wraps it.
        listener = acceptor._selectable._delegate
        assert isinstance(listener, socket.socket), "an acceptor's selectable wraps its listening socket"
        self._port = listener.getsockname()[1]
        self._injector = EventInjector()
        container.selectable(self._injector)
        handler.bind(container, acceptor, self._injector)
        self._thread = threading.Thread(target=self._serve, args=(container, listener), daemon=True,
                                        name=f"local-servicebus-{self._port}")
        self._thread.start()
        log.info("local Service Bus listening on %s:%s", self._host, self._port)
        return self

    def _serve(self, container: Container, listener: socket.socket) -> None:
        try:
            container.run()
        except Exception:    # the thread has nobody to raise to: the log is where this surfaces
            log.exception("local Service Bus on port %s stopped on an error", self._port)
        finally:
            listener.close()    # normally closed already; not when the reactor failed

    def stop(self) -> None:
        """Close the listener and every connection and wait for the thread; safe to repeat."""
        thread, injector, self._thread = self._thread, self._injector, None
        if thread is None or injector is None:    # never started, or stopped already
            return
        self._stopped = True
        if thread.is_alive():
            injector.trigger(ApplicationEvent(STOP_EVENT))
        thread.join(timeout=10)
        if thread.is_alive():
            log.warning("local Service Bus on port %s did not stop within 10 s", self._port)
            return
        for fd in injector.pipe:     # EventInjector never closes its wake-up pipe
            os.close(fd)
        log.info("local Service Bus on port %s stopped", self._port)

    def __enter__(self) -> "LocalServiceBus":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # inspection helpers for tests; a queue nobody has used yet reads as empty

    def queue_depth(self, queue: str) -> int:
        """Active messages: available plus locked, not scheduled ones."""
        return self._broker.depth(queue)

    def dead_letter_depth(self, queue: str) -> int:
        return self._broker.depth(queue, dead_letter=True)

    def scheduled_count(self, queue: str) -> int:
        return self._broker.scheduled_count(queue)

    def stats(self) -> dict[str, int]:
        """Operation counters since start, e.g. transfers_in, messages_in, management_requests."""
        return self._broker.stats()


class ServiceBusProcess:
    """``python -m devhost.servicebus`` on a free port, in a process of its own: started by ``start`` (or
    ``with``), which returns once it listens; stopped by SIGTERM, killed if it does not end within 10 s."""

    def __init__(self, host: str = "127.0.0.1"):
        self._host = host
        self._port = 0
        self._process: subprocess.Popen | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(self._host, self._port)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def cpu_seconds(self) -> float | None:
        """CPU time the broker's process has used so far (None before start)."""
        return None if self._process is None else cpu_seconds(self._process.pid)

    def start(self) -> "ServiceBusProcess":
        self._process = subprocess.Popen([sys.executable, "-m", "devhost.servicebus", "--host", self._host,
                                          "--port", "0"], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        # Its first line says where it listens; nothing at all means it ended, or hangs (given a minute: a busy
        # machine starts it in seconds).
        try:
            ready, _, _ = select.select([self._process.stdout], [], [], START_LIMIT)
            line = self._process.stdout.readline() if ready else ""
        except BaseException:       # Ctrl-C or SIGTERM while it starts: ``with`` has no exit to run yet
            self.stop()
            raise
        listening = _LISTENING.fullmatch(line.strip())
        if listening is None:
            self.stop()
            raise RuntimeError(f"the local Service Bus process did not say where it listens within "
                               f"{START_LIMIT:.0f} s (it printed {line.strip()!r}; its errors are above)")
        self._port = int(listening.group(2))
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        end_process(process, 10)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> "ServiceBusProcess":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost.servicebus",
                                     description="Run the local Service Bus until SIGINT or SIGTERM.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5672)
    parser.add_argument("--queue", action="append", default=[],
                        help="declare a queue (repeatable); other queues are created on first use")
    parser.add_argument("--lock-duration", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument("--max-delivery-count", type=int, default=10)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    options = QueueOptions(lock_duration=timedelta(seconds=args.lock_duration),
                           max_delivery_count=args.max_delivery_count)
    server = LocalServiceBus(args.host, args.port, queues={name: options for name in args.queue},
                             default_queue_options=options)
    try:
        server.start()
    except CannotListenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"local Service Bus listening on {args.host}:{server.port}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
    return 0
