"""A small alert receiver for the local stack: takes the app's webhook POSTs (Azure Monitor common alert
schema), prints one line per alert, keeps what it got (tests read it), and can play a receiver that is
down (503) to show delivery retried later, or one that answers any other status (``answer``). Development
infrastructure, like the rest of devhost/."""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

log = logging.getLogger(__name__)


def describe(document: dict[str, Any]) -> str:
    """One line for a notification: condition, severity, rule, item, name, description."""
    essentials = (document.get("data") or {}).get("essentials") or {}
    items = ", ".join(essentials.get("configurationItems") or [])
    return (f"alert {essentials.get('monitorCondition')} {essentials.get('severity')} {essentials.get('alertRule')} "
            f"{items} {essentials.get('originAlertId')}: {essentials.get('description')}")


class WebhookReceiver:
    def __init__(self, port: int = 0, *, printer: Callable[[str], None] | None = print, down: bool = False):
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        self.down = down
        self.answer: int | None = None      # a status to answer instead of taking the notification
        self._printer = printer
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:      # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = 503 if receiver.down else receiver.answer
                if status is not None:
                    with receiver._lock:
                        receiver.refused += 1
                    self.send_response(status)
                    self.end_headers()
                    return
                try:
                    document = json.loads(body)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.received.append(document)
                if receiver._printer is not None:
                    receiver._printer(describe(document))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:    # noqa: A002 - the base class's name
                log.debug("webhook receiver: " + format, *args)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def start(self) -> "WebhookReceiver":
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def conditions(self) -> list[tuple[str, str]]:
        """(monitorCondition, originAlertId) of each notification received, in order."""
        with self._lock:
            return [(d["data"]["essentials"]["monitorCondition"], d["data"]["essentials"]["originAlertId"])
                    for d in self.received]

    def __enter__(self) -> "WebhookReceiver":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
