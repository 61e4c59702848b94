"""Fixtures for fault injection: the session's Azurite behind a switchable TCP proxy."""
from __future__ import annotations

import dataclasses

import pytest

from shared.settings import Connection, Settings
from tests.faults.proxy import TcpProxy


@pytest.fixture
def table_proxy(azurite):
    """A proxy in front of Azurite's table port (one per test, so faults never leak between tests)."""
    with TcpProxy(azurite.table_port) as proxy:
        yield proxy


@pytest.fixture
def through_table_proxy(azurite, table_proxy):
    """``settings`` with table traffic sent through ``table_proxy`` (blobs go straight to Azurite)."""

    def proxied(settings: Settings) -> Settings:
        conn = azurite.connection_string.replace(f":{azurite.table_port}/", f":{table_proxy.port}/")
        return dataclasses.replace(settings, storage=Connection(settings.storage.name, conn))

    return proxied
