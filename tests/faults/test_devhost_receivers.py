"""A receiver process killed while it holds messages: the local Service Bus stops delivering to it
and gives its locked messages back, so a live host is not starved. Real client processes, SIGKILL.

Run as a module (``python -m tests.faults.test_devhost_receivers CONNECTION QUEUE``) this file is
such a receiver: it takes messages in peek-lock mode, never settles them, and prints each id."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage

from devhost.servicebus import LocalServiceBus, QueueOptions
from tests.polling import eventually

pytestmark = pytest.mark.timeout(120)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOCK = timedelta(seconds=20)
QUEUE = "tasks"


class _ReceiverProcess:
    """One receiver process; its stdout lines are collected on a thread."""

    def __init__(self, connection: str, queue: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.faults.test_devhost_receivers", connection, queue],
                                     cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip() == "ready":
                self.ready.set()
            self.lines.append(line.strip())

    @property
    def received(self) -> list[str]:
        return [line.split(" ", 1)[1] for line in list(self.lines) if line.startswith("got ")]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)


@pytest.fixture
def server():
    with LocalServiceBus(queues={QUEUE: QueueOptions(lock_duration=LOCK, max_delivery_count=10)}) as bus:
        yield bus


@pytest.fixture
def receivers(server):
    started = [_ReceiverProcess(server.connection_string, QUEUE) for _ in range(3)]
    try:
        assert all(r.ready.wait(60) for r in started), "a receiver process did not start"
        yield started
    finally:
        for receiver in started:
            receiver.kill()


def _send(client: ServiceBusClient, ids: list[str]) -> None:
    with client.get_queue_sender(QUEUE) as sender:
        sender.send_messages([ServiceBusMessage(i, message_id=i) for i in ids])




def test_killed_receivers_neither_starve_a_live_one_nor_keep_their_messages(server, receivers, caplog):
    """Three host processes killed mid-receive: new tasks and the tasks they held reach the live host
    within one lock period (not after their locks expire), each held task with its delivery count raised."""
    held = [f"held-{i}" for i in range(6)]
    fresh = [f"new-{i}" for i in range(20)]
    with ServiceBusClient.from_connection_string(server.connection_string) as client:
        _send(client, held)
        assert eventually(lambda: sum(len(r.received) for r in receivers) == len(held), 30), \
            "the receiver processes did not take the first messages"
        taken_by_dead = sorted(m for r in receivers for m in r.received)
        assert taken_by_dead == sorted(held)

        caplog.set_level(logging.ERROR, logger="proton")
        with client.get_queue_receiver(QUEUE, max_wait_time=1) as live:
            # Open the live link first, so the dead links and this one are all in the rotation.
            live.peek_messages(max_message_count=1)
            killed_at = time.monotonic()
            # All at once: one by one, a receiver still alive would take the first one's messages.
            for receiver in receivers:
                os.kill(receiver.proc.pid, signal.SIGKILL)
            for receiver in receivers:
                receiver.kill()
            _send(client, fresh)
            got = {}
            while len(got) < len(held) + len(fresh) and time.monotonic() - killed_at < LOCK.total_seconds():
                for message in live.receive_messages(max_message_count=10, max_wait_time=1):
                    got[message.message_id] = message.delivery_count
                    live.complete_message(message)
    assert sorted(got) == sorted(held + fresh), f"missing after one lock period: {set(held + fresh) - set(got)}"
    # Raised by one, or by one more per dead receiver it was handed to before that one's end was seen.
    assert all(1 <= got[m] <= len(receivers) for m in held), {m: got[m] for m in held}
    assert {got[m] for m in fresh} == {0}
    assert server.queue_depth(QUEUE) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a client disconnect was logged as an error"


def _receive_forever(connection: str, queue: str) -> None:
    with ServiceBusClient.from_connection_string(connection) as client, client.get_queue_receiver(queue) as receiver:
        print("ready", flush=True)
        while True:
            for message in receiver.receive_messages(max_message_count=5, max_wait_time=60):
                print(f"got {message.message_id}", flush=True)


if __name__ == "__main__":
    _receive_forever(*sys.argv[1:3])
