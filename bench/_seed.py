"""Fast seeding of Table Storage for the benchmarks: entity group transactions of 100 rows, written as
raw ``$batch`` requests through the table client's own pipeline (its authentication, its retries).

The product writes transactions with the SDK's ``submit_transaction``, whose multipart encoder costs
~0.29 ms of client CPU per entity (docs/table-batch-cost.md): 200 s for the 700,000 rows of 10,000
VMs x 35 days. A seeder needs no per-part policies and no parsed answer, so this one formats the body
itself (the entity JSON still comes from the SDK's serializer) and only checks that every operation
of a changeset succeeded. Benchmark set-up only: nothing in ``shared/`` uses it.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.rest import HttpRequest
from azure.data.tables import TableServiceClient
from azure.data.tables._serialize import _add_entity_properties

BATCH = 100


class TableSeeder:
    """Inserts rows into tables of one account (new rows: a row that exists fails the seeding), 100 a
    request, several requests in flight."""

    def __init__(self, service: TableServiceClient, threads: int = 4):
        self._service = service
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="seed")
        self._pending: list = []
        self._lock = threading.Lock()
        self.rows = 0

    def insert(self, table: str, entities: Iterable[dict[str, Any]]) -> None:
        """Queue the rows for writing (grouped by partition, 100 a transaction); ``wait`` for them."""
        self._service.create_table_if_not_exists(table)
        client = self._service.get_table_client(table)
        groups: dict[str, list[dict]] = defaultdict(list)
        for entity in entities:
            group = groups[entity["PartitionKey"]]
            group.append(entity)
            if len(group) == BATCH:
                self._submit(client, table, groups.pop(entity["PartitionKey"]))
        for group in groups.values():
            self._submit(client, table, group)

    def wait(self) -> int:
        """Until every queued row is written; the rows written so far."""
        while True:
            with self._lock:
                pending, self._pending = self._pending, []
            if not pending:
                return self.rows
            for future in pending:
                future.result()

    def close(self) -> None:
        self.wait()
        self._pool.shutdown()

    def _submit(self, client, table: str, group: list[dict]) -> None:
        future = self._pool.submit(self._send, client, table, group)
        with self._lock:
            self._pending.append(future)

    def _send(self, client, table: str, group: list[dict]) -> None:
        batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
        base = client.url.rstrip("/")          # the account: http://host/account
        parts = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"]
        for entity in group:
            body = json.dumps(_add_entity_properties(entity), separators=(",", ":"))
            parts.append(f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                         f"POST {base}/{table} HTTP/1.1\r\nContent-Type: application/json\r\n"
                         f"Accept: application/json;odata=nometadata\r\nPrefer: return-no-content\r\n"
                         f"DataServiceVersion: 3.0\r\n\r\n{body}\r\n")
        parts.append(f"--{changeset}--\r\n--{batch}--\r\n")
        request = HttpRequest("POST", f"{base}/$batch", content="".join(parts).encode(), headers={
            "Content-Type": f"multipart/mixed; boundary={batch}", "Accept": "application/json",
            "x-ms-version": client.api_version,
            "DataServiceVersion": "3.0", "MaxDataServiceVersion": "3.0;NetFx"})
        for attempt in range(6):        # Azurite under load sometimes drops a kept-alive connection
            try:
                response = client._client.send_request(request, stream=True)    # noqa: SLF001 - see the docstring
                answer = response.read()
                break
            except (ServiceRequestError, ServiceResponseError):
                if attempt == 5:
                    raise
                time.sleep(0.5 * (attempt + 1))
        if response.status_code != 202 or b"HTTP/1.1 4" in answer or b"HTTP/1.1 5" in answer:
            raise RuntimeError(f"seeding {table}: {response.status_code} {answer[:500]!r}")
        with self._lock:
            self.rows += len(group)

