"""The local server as a process component: queue configuration, inspection helpers, start and
stop, the port-in-use error and the command line. Local only: none of this exists on a namespace."""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.exceptions import MessagingEntityNotFoundError, ServiceBusError

from devhost.ports import port_in_use
from devhost.servicebus import LocalServiceBus, PortInUseError, QueueOptions
from devhost.servicebus.server import ServiceBusProcess

pytestmark = pytest.mark.timeout(30)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _in_use_message(port: int) -> str:
    return f"port {port} is in use; stop what holds it or set another port (0 picks a free one)"


@pytest.fixture
def taken_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _serving(port: int) -> bool:
    """Whether a server thread for this port runs (the contract suite's server may run too)."""
    return any(t.name == f"local-servicebus-{port}" for t in threading.enumerate())


class TestQueues:
    def test_declared_queue_uses_its_options_and_others_the_defaults(self):
        """A queue declared with a 1 s lock locks for 1 s; an auto-created one gets the default."""
        declared = QueueOptions(lock_duration=timedelta(seconds=1))
        defaults = QueueOptions(lock_duration=timedelta(seconds=20))
        with LocalServiceBus(queues={"short": declared}, default_queue_options=defaults) as server, \
                ServiceBusClient.from_connection_string(server.connection_string) as client:
            locks = {}
            for name in ("short", "other"):
                with client.get_queue_sender(name) as sender, client.get_queue_receiver(name) as receiver:
                    sender.send_messages(ServiceBusMessage(name))
                    [message] = receiver.receive_messages(max_wait_time=5)
                    locks[name] = (message.locked_until_utc - datetime.now(timezone.utc)).total_seconds()
                    receiver.complete_message(message)
        assert 0 < locks["short"] <= 1.0
        assert 19 < locks["other"] <= 20.0

    def test_without_auto_create_only_declared_queues_exist(self):
        """With auto_create_queues off, an undeclared queue is refused and nothing is stored."""
        with LocalServiceBus(queues={"known": QueueOptions()}, auto_create_queues=False) as server, \
                ServiceBusClient.from_connection_string(server.connection_string, retry_total=0) as client:
            with pytest.raises(MessagingEntityNotFoundError), client.get_queue_receiver("unknown") as receiver:
                receiver.receive_messages(max_wait_time=1)
            with pytest.raises(ServiceBusError), client.get_queue_sender("unknown") as sender:
                sender.send_messages(ServiceBusMessage("lost"))
            with client.get_queue_sender("KNOWN") as sender:      # entity names ignore case
                sender.send_messages(ServiceBusMessage("kept"))
            assert server.queue_depth("known") == 1
            assert server.stats()["messages_in"] == 1


class TestInspection:
    def test_helpers_and_counters_follow_what_the_client_does(self):
        """Depths, the scheduled count and the operation counters track sends, locks and settlements."""
        with LocalServiceBus() as server, \
                ServiceBusClient.from_connection_string(server.connection_string) as client, \
                client.get_queue_sender("tasks") as sender, client.get_queue_receiver("tasks") as receiver:
            sender.send_messages([ServiceBusMessage(f"m{i}") for i in range(3)])
            sender.schedule_messages(ServiceBusMessage("later"), datetime.now(timezone.utc) + timedelta(hours=1))
            assert (server.queue_depth("tasks"), server.scheduled_count("tasks")) == (3, 1)
            before = server.stats()

            [message] = receiver.receive_messages(max_wait_time=5)
            assert server.queue_depth("tasks") == 3           # a locked message is still in the queue
            receiver.dead_letter_message(message, reason="test")
            assert (server.queue_depth("tasks"), server.dead_letter_depth("tasks")) == (2, 1)
            receiver.peek_messages()
            after = server.stats()

        assert (before["transfers_in"], before["messages_in"]) == (1, 4)     # one batch transfer, one scheduled
        assert after["management_requests"] - before["management_requests"] == 1
        assert after["dead_lettered"] == 1
        assert server.queue_depth("never-used") == 0


class TestLifecycle:
    def test_stop_closes_everything_even_with_clients_connected(self):
        """stop() returns promptly with a client still connected, frees the port, ends the thread."""
        server = LocalServiceBus().start()
        client = ServiceBusClient.from_connection_string(server.connection_string, retry_total=0)
        sender = client.get_queue_sender("tasks")
        try:
            sender.send_messages(ServiceBusMessage("x"))
            assert _serving(server.port)
            server.stop()
            server.stop()                                     # idempotent
            assert not _serving(server.port)
            assert not port_in_use(server.port)
            with pytest.raises(ServiceBusError):
                sender.send_messages(ServiceBusMessage("after stop"))
        finally:
            client.close()
            server.stop()

    def test_port_zero_picks_a_free_port_named_in_the_connection_string(self):
        """Port 0 yields a real port, and the connection string points the client at it."""
        with LocalServiceBus() as server:
            assert server.port > 0
            assert server.connection_string == (
                f"Endpoint=sb://127.0.0.1:{server.port};SharedAccessKeyName=RootManageSharedAccessKey;"
                f"SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;")

    def test_start_on_a_taken_port_raises_port_in_use(self, taken_port):
        """Starting on a port another process listens on fails with a message saying what to do."""
        server = LocalServiceBus(port=taken_port)
        with pytest.raises(PortInUseError) as caught:
            server.start()
        assert isinstance(caught.value, OSError)
        assert str(caught.value) == _in_use_message(taken_port)
        assert not _serving(taken_port)


class TestCommandLine:
    def _run(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "devhost.servicebus", *args], cwd=PROJECT_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def test_serves_until_sigterm(self):
        """The command prints where it listens, serves the client, and exits 0 on SIGTERM."""
        process = self._run("--port", "0", "--queue", "snapshot-tasks")   # a port chosen here could be taken first
        try:
            line = process.stdout.readline()
            listening = re.fullmatch(r"local Service Bus listening on 127\.0\.0\.1:(\d+)\n", line)
            assert listening, line
            port = int(listening.group(1))
            connection = LocalServiceBus(port=port).connection_string
            with ServiceBusClient.from_connection_string(connection) as client, \
                    client.get_queue_sender("snapshot-tasks") as sender:
                sender.send_messages(ServiceBusMessage("x"))
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate()

    def test_taken_port_exits_2_with_one_line(self, taken_port):
        """On a taken port the command exits 2 with a single error line and no traceback."""
        process = self._run("--port", str(taken_port))
        stdout, stderr = process.communicate(timeout=20)
        assert process.returncode == 2
        assert stdout == ""
        assert stderr == f"error: {_in_use_message(taken_port)}\n"

    def test_a_process_of_its_own_serves_the_sdk_counts_its_cpu_and_ends(self):
        """ServiceBusProcess: the command on a port it picked, reached by the unmodified SDK client; its CPU is
        readable while it runs; stop ends the process."""
        with ServiceBusProcess() as bus:
            port = int(bus.connection_string.removeprefix("Endpoint=sb://127.0.0.1:").split(";")[0])
            assert port > 0 and bus.connection_string == LocalServiceBus(port=port).connection_string
            with ServiceBusClient.from_connection_string(bus.connection_string) as client:
                with client.get_queue_sender("apart") as sender:
                    sender.send_messages(ServiceBusMessage("across processes"))
                with client.get_queue_receiver("apart") as receiver:
                    (message,) = receiver.receive_messages(max_message_count=1, max_wait_time=20)
                    assert str(message) == "across processes"
                    receiver.complete_message(message)
            assert (bus.cpu_seconds() or 0) > 0
            pid = bus.pid
        assert pid is not None and not Path(f"/proc/{pid}").exists() and not port_in_use(port)

    def test_a_process_that_cannot_listen_is_a_clear_error_and_leaves_nothing_running(self, capfd):
        """Started on an address this machine does not have, the command exits at once with one line that
        names the address (no traceback); start raises, saying it heard no address, and no broker process
        is left. (That the raise comes at once, not after START_LIMIT, is not timed here: select wakes on
        the pipe's end when the child exits.)"""
        bus = ServiceBusProcess(host="192.0.2.1")       # TEST-NET-1: never a local address
        with pytest.raises(RuntimeError, match="did not say where it listens"):
            bus.start()
        assert bus.pid is None
        assert capfd.readouterr().err.startswith("error: cannot listen on 192.0.2.1:0: ")   # on the caller's stderr
