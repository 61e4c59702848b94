"""Each port's implementations, side by side: every contract test runs once on the in-memory fake
(what unit tests of services use) and once on the real adapter (Azurite, the local Service Bus).

A fixture here is parametrized by implementation name; a contract test asks for the port's fixture
and never knows which one it got, exactly as tests/servicebus/ runs one suite on local and live.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, TypeVar

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobClient, BlobServiceClient

from shared.adapters.blob_sas import StatusBlobStore
from shared.adapters.snapshots import BlobSnapshots
from shared.adapters.table_alerts import TableAlertStore, TableJobFeed
from shared.adapters.table_claims import TableBackupClaims
from shared.adapters.table_jobs import TableJobStore
from shared.adapters.table_protection import TableInventory, TablePolicyStore, TableProtectedItemStore
from shared.adapters.table_recovery import TableRecoveryPointStore
from shared.adapters.table_rollup import TableRollupStore
from shared.clock import SystemClock
from shared.domain.inventory import Vm
from shared.ports import (BackupClaims, Inventory, JobStore, PolicyStore, ProtectedItemStore, RecoveryPointStore,
                          SnapshotStore, StatusBlobs)
from tests.monitoring.fakes import InMemoryAlertStore, InMemoryJobFeed, InMemoryRollupStore
from tests.fakes import InMemoryBackupClaims, InMemoryInventory, InMemoryJobStore, InMemoryStatusBlobs
from tests.recovery.fakes import FakeSnapshots, InMemoryRecoveryPointStore
from tests.scheduling.fakes import InMemoryPolicyStore, InMemoryProtectedItemStore

T = TypeVar("T")


def REAL(name: str):  # noqa: N802 - reads as a tag in the params lists below
    """The real adapter's variant: it talks to a service, so it runs in the integration tier (the fake
    variant stays in the unit tier)."""
    return pytest.param(name, marks=pytest.mark.integration)


@pytest.fixture(scope="session")
def table_service(storage_connection_string) -> TableServiceClient:
    return TableServiceClient.from_connection_string(storage_connection_string)


@pytest.fixture(scope="session")
def blob_service_client(storage_connection_string) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(storage_connection_string)


def _fake_or_table(request, fake: Callable[[], T], table: Callable[[Any, str], T], stem: str) -> T:
    """This run's implementation: the fake, or the Table adapter on a table of the test's own."""
    if request.param == "fake":
        return fake()
    return table(request.getfixturevalue("table_service"), request.getfixturevalue("unique_name")(stem))


@pytest.fixture(params=["fake", REAL("table")])
def job_store(request) -> JobStore:
    return _fake_or_table(request, InMemoryJobStore, TableJobStore, "jobs")


@pytest.fixture(params=["fake", REAL("table")])
def policy_store(request) -> PolicyStore:
    return _fake_or_table(request, InMemoryPolicyStore, TablePolicyStore, "policies")


@pytest.fixture(params=["fake", REAL("table")])
def item_store(request) -> ProtectedItemStore:
    return _fake_or_table(request, InMemoryProtectedItemStore, TableProtectedItemStore, "items")


@pytest.fixture(params=["fake", REAL("table")])
def backup_claims(request) -> BackupClaims:
    return _fake_or_table(request, InMemoryBackupClaims, TableBackupClaims, "claims")


@pytest.fixture(params=["fake", REAL("table")])
def alert_store(request):
    return _fake_or_table(request, InMemoryAlertStore, TableAlertStore, "alerts")


@pytest.fixture(params=["fake", REAL("table")])
def job_feed(request):
    return _fake_or_table(request, InMemoryJobFeed, TableJobFeed, "feed")


@pytest.fixture(params=["fake", REAL("table")])
def rollup_store(request):
    return _fake_or_table(request, InMemoryRollupStore, TableRollupStore, "rollup")


@pytest.fixture(params=["fake", REAL("table")])
def make_inventory(request, unique_name) -> Callable[..., Inventory]:
    """An inventory holding the given VMs (the local table is filled the way `vmsnap local vm add` does)."""
    if request.param == "fake":
        return InMemoryInventory

    def table(*vms: Vm) -> Inventory:
        inventory = TableInventory(request.getfixturevalue("table_service"), unique_name("vms"))
        for vm in vms:
            inventory.put_vm(vm)
        return inventory

    return table


@pytest.fixture(params=["fake", REAL("azurite")])
def status_blobs(request, unique_name) -> Iterator[tuple[StatusBlobs, Callable[[str, bytes], None]]]:
    """The store, and how the extension writes to one of its blobs (through its SAS, in production)."""
    if request.param == "fake":
        fake = InMemoryStatusBlobs("http://127.0.0.1:10000/devstoreaccount1", unique_name("status"))
        yield fake, fake.blobs.__setitem__
        return
    service = request.getfixturevalue("blob_service_client")
    store = StatusBlobStore(service, unique_name("status"))

    def extension_writes(name: str, data: bytes) -> None:
        service.get_blob_client(store.container, name).upload_blob(data, overwrite=True)

    yield store, extension_writes
    for container in (store.container, store.rejected_container):
        if service.get_container_client(container).exists():
            service.delete_container(container)


@pytest.fixture(params=["fake", REAL("table")])
def point_store(request) -> RecoveryPointStore:
    return _fake_or_table(request, InMemoryRecoveryPointStore, TableRecoveryPointStore, "points")


@pytest.fixture(params=["fake", REAL("azurite")])
def snapshot_store(request, unique_name) -> Iterator[tuple[SnapshotStore, Callable[[], str], Callable[[str], None]]]:
    """The store; how a backup snapshots a disk (returns the snapshot's URL); and how someone with access
    to the account deletes a snapshot behind the service's back."""
    if request.param == "fake":
        fake = FakeSnapshots()
        base = f"http://127.0.0.1:10000/devstoreaccount1/vhds/{unique_name('disk')}.vhd"

        def forget(url: str) -> None:
            stamp = url.partition("?snapshot=")[2]
            del fake.blobs[url.partition("?")[0]][stamp]

        yield fake, lambda: fake.take(base, {"jobId": "j"}), forget
        return
    service = request.getfixturevalue("blob_service_client")
    container = service.get_container_client(unique_name("vhds"))
    container.create_container()
    blob = container.get_blob_client(f"{unique_name('disk')}.vhd")
    blob.create_page_blob(1024)

    def take() -> str:
        return f"{blob.url}?snapshot={blob.create_snapshot(metadata={'jobId': 'j'})['snapshot']}"

    def forget(url: str) -> None:
        BlobClient.from_blob_url(url, credential=service.credential).delete_blob()

    yield BlobSnapshots(service, clock=SystemClock()), take, forget
    container.delete_container()
