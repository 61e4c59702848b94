"""The StatusBlobArchive contract, on the fake retention's unit tests use and on the Blob adapter (Azurite):
the status container lists in name order a page at a time, each page's marker resumes the listing right
after it (a run cut short goes on where it stopped), a missing container lists nothing, and a blob is
deleted once: of racing deleters exactly one is told it did."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Callable, Iterator

import pytest

from shared.adapters.snapshots import StatusBlobArchive as BlobStatusArchive
from shared.ports import StatusBlobArchive
from tests.contracts.conftest import REAL
from tests.recovery.fakes import FakeStatusArchive

PORTS = (StatusBlobArchive,)

PAGE = 3
NAMES = [f"job-{n:02d}/{attempt}.{kind}.txt" for n in range(4) for attempt in (1, 2) for kind in ("log", "status")]


@pytest.fixture(params=["fake", REAL("azurite")])
def archive(request, unique_name) -> Iterator[tuple[StatusBlobArchive, Callable[[str], None]]]:
    """An archive listing ``PAGE`` blobs a page, and how a dispatch writes a blob into its container."""
    if request.param == "fake":
        fake = FakeStatusArchive(page_size=PAGE)
        yield fake, lambda name: fake.blobs.__setitem__(name, datetime.now(timezone.utc))
        return
    service = request.getfixturevalue("blob_service_client")
    container = service.get_container_client(unique_name("status"))

    def put(name: str) -> None:
        if not container.exists():
            container.create_container()
        container.upload_blob(name, b"{}")

    yield BlobStatusArchive(service, container.container_name, page_size=PAGE), put
    if container.exists():
        container.delete_container()


def _listed(archive: StatusBlobArchive, marker: str | None = None) -> list[str]:
    return [blob.name for page in archive.list_pages(marker) for blob in page.blobs]


def test_every_blob_is_listed_once_in_name_order_a_page_at_a_time(archive):
    store, put = archive
    for name in reversed(NAMES):
        put(name)
    pages = list(store.list_pages())
    assert [b.name for p in pages for b in p.blobs] == sorted(NAMES)
    assert all(len(p.blobs) <= PAGE for p in pages) and len(pages) >= len(NAMES) // PAGE
    assert all(p.marker for p in pages[:-1]) and pages[-1].marker is None
    assert all(b.last_modified.tzinfo is not None for p in pages for b in p.blobs)


def test_a_page_s_marker_resumes_the_listing_right_after_that_page(archive):
    """Retention cut short after some page lists the rest from its marker: nothing twice, nothing skipped."""
    store, put = archive
    for name in NAMES:
        put(name)
    pages = list(store.list_pages())
    for at, page in enumerate(pages[:-1]):
        seen = [b.name for p in pages[:at + 1] for b in p.blobs]
        assert seen + _listed(store, page.marker) == sorted(NAMES)


def test_a_missing_container_lists_nothing(archive):
    store, _ = archive
    assert _listed(store) == []


def test_a_blob_is_deleted_once_and_listed_no_more(archive):
    store, put = archive
    for name in NAMES[:2]:
        put(name)
    assert store.delete_blob(NAMES[0]) is True
    assert store.delete_blob(NAMES[0]) is False
    assert store.delete_blob("never-written.status.txt") is False
    assert _listed(store) == [NAMES[1]]


def test_of_racing_deleters_of_one_blob_exactly_one_deletes_it(archive):
    """Two retention runs overlapping: each blob is reported deleted by one of them only."""
    store, put = archive
    put(NAMES[0])
    barrier = threading.Barrier(8)

    def delete(_: int) -> bool:
        barrier.wait(timeout=60)
        return store.delete_blob(NAMES[0])

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(delete, range(8))) == [False] * 7 + [True]
