"""Fixtures for the Service Bus client contract: every contract test runs against the local server
and, when VMSNAP_LIVE_SERVICEBUS holds a connection string, once more against that namespace
(those runs carry the ``live`` marker, so ``-m live`` selects only them).

Live runs share one pre-created queue (VMSNAP_LIVE_SERVICEBUS_QUEUE, default
``vmsnap-contract``), emptied before each test; tests that need the local server's short queue
options or its inspection helpers ask for ``local_server`` and skip in live runs.
"""
from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import pytest
from azure.servicebus import (ServiceBusClient, ServiceBusMessageState, ServiceBusReceiveMode, ServiceBusReceiver,
                              ServiceBusSender, ServiceBusSubQueue)

from devhost.servicebus import LocalServiceBus, QueueOptions

LIVE_CONNECTION_ENV = "VMSNAP_LIVE_SERVICEBUS"
LIVE_QUEUE_ENV = "VMSNAP_LIVE_SERVICEBUS_QUEUE"

# Short enough to keep the suite fast, long enough for a receive-and-settle round trip.
CONTRACT_QUEUE_OPTIONS = QueueOptions(lock_duration=timedelta(seconds=2), max_delivery_count=3,
                                      duplicate_detection_window=timedelta(seconds=1))

_TARGETS = ["local"] + ([pytest.param("live", marks=pytest.mark.live)] if os.environ.get(LIVE_CONNECTION_ENV)
                        else [])


@pytest.fixture(scope="session")
def contract_server():
    with LocalServiceBus(default_queue_options=CONTRACT_QUEUE_OPTIONS) as server:
        yield server


@pytest.fixture(params=_TARGETS)
def servicebus_target(request) -> str:
    """Where this run of a contract test goes: ``local`` or ``live``."""
    return request.param


@pytest.fixture
def servicebus_connection(servicebus_target, request) -> str:
    """The connection string of this run's target."""
    if servicebus_target == "live":
        return os.environ[LIVE_CONNECTION_ENV]
    return request.getfixturevalue("contract_server").connection_string


@pytest.fixture
def local_server(servicebus_target, request) -> LocalServiceBus:
    """The local server, for tests that depend on its queue options or inspect it."""
    if servicebus_target == "live":
        pytest.skip("needs the local server's short queue options or its inspection helpers")
    return request.getfixturevalue("contract_server")


@pytest.fixture
def client(servicebus_connection):
    """The real sync client, built the way the project builds it: from a connection string."""
    with ServiceBusClient.from_connection_string(servicebus_connection) as sb_client:
        yield sb_client


@pytest.fixture
def queue_name(servicebus_target, request) -> str:
    """A queue of this test's own: a fresh one locally, the emptied shared one live."""
    if servicebus_target == "local":
        return f"contract-{uuid.uuid4().hex[:12]}"
    name = os.environ.get(LIVE_QUEUE_ENV, "vmsnap-contract")
    _empty(request.getfixturevalue("client"), name)
    return name


def _empty(client: ServiceBusClient, queue: str) -> None:
    """Remove whatever earlier runs left: active, dead-lettered and scheduled messages."""
    with client.get_queue_sender(queue) as sender, client.get_queue_receiver(queue) as browser:
        scheduled = [m.sequence_number for m in browser.peek_messages(max_message_count=250)
                     if m.state == ServiceBusMessageState.SCHEDULED]
        if scheduled:
            sender.cancel_scheduled_messages(scheduled)
    for sub_queue in (None, ServiceBusSubQueue.DEAD_LETTER):
        with client.get_queue_receiver(queue, sub_queue=sub_queue,
                                       receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as receiver:
            while receiver.receive_messages(max_message_count=100, max_wait_time=1):
                pass


@dataclass
class QueueHandles:
    """The handlers a contract test works with, all on its queue."""

    name: str
    sender: ServiceBusSender
    receiver: ServiceBusReceiver
    dead_letter: ServiceBusReceiver


@pytest.fixture
def queue(client, queue_name) -> Iterator[QueueHandles]:
    """Handlers opened and closed concurrently: the client polls for about half a second to open
    one and takes up to a second to close one (it joins a keep-alive thread that sleeps in whole
    seconds), which one after another would dominate the suite's run time."""
    handles = QueueHandles(queue_name, client.get_queue_sender(queue_name), client.get_queue_receiver(queue_name),
                           client.get_queue_receiver(queue_name, sub_queue=ServiceBusSubQueue.DEAD_LETTER))
    handlers = [handles.sender, handles.receiver, handles.dead_letter]
    try:
        with ThreadPoolExecutor(len(handlers)) as pool:
            list(pool.map(lambda handler: handler.__enter__(), handlers))
        yield handles
    finally:
        with ThreadPoolExecutor(len(handlers)) as pool:
            list(pool.map(lambda handler: handler.close(), handlers))
