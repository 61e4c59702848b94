"""Shared fixtures: one Azurite and one local Service Bus per test session (real parts, not mocks),
and per-test Settings with their own table prefix and container so tests never see each other's data."""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from devhost.azurite import Azurite
from shared.settings import Settings

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def azurite():
    with Azurite() as instance:
        yield instance


@pytest.fixture(scope="session")
def storage_connection_string(azurite) -> str:
    return azurite.connection_string


@pytest.fixture(scope="session")
def local_servicebus():
    from devhost.servicebus import LocalServiceBus, QueueOptions
    from datetime import timedelta

    server = LocalServiceBus(default_queue_options=QueueOptions(
        lock_duration=timedelta(seconds=5), max_delivery_count=3,
        duplicate_detection_window=timedelta(minutes=10)))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def unique_name():
    """A short name unique within the session: table prefixes, containers, queues."""
    return lambda stem="t": f"{stem}{os.getpid() % 1000}x{next(_counter)}"


@pytest.fixture
def make_settings(storage_connection_string, unique_name, tmp_path: Path):
    """Settings on the session's Azurite, isolated per test (own tables, container, queue, VM root)."""

    def factory(service_bus: str = "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=x;SharedAccessKey=y;"
                                    "UseDevelopmentEmulator=true;", **env) -> Settings:
        name = unique_name("v")
        base = {
            "BackupStorage": storage_connection_string,
            "ServiceBusConnection": service_bus,
            "TABLE_PREFIX": name,
            "STATUS_CONTAINER": f"status-{name}",
            "SNAPSHOT_TASKS_QUEUE": f"tasks-{name}",
            "LOCAL_VM_ROOT": str(tmp_path / "vms"),
        }
        base.update(env)
        return Settings.from_env(base)

    return factory
