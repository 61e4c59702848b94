"""Benchmark of the Table SDK's transaction call: client CPU and wall time per entity, on Azurite.

Writes job rows as the scheduler does (``_job_entity`` of a new scheduled job) in five ways:
``submit_transaction`` of N creates and of N upserts, ``create_entity`` / ``upsert_entity`` one by
one, and N one-operation transactions; then N-entity create transactions from 8 threads at once
(as ``TableJobStore`` runs them) and one under tracemalloc (as ``bench_schedule.py`` measures by
default). Client CPU is ``time.process_time`` (this process only: Azurite is a child process).
Prints min/median/max over the runs, where a transaction's CPU goes by phase (outermost SDK calls,
timed in place), and a cProfile of it: CPU by library, and the SDK and stdlib functions with the
most CPU below them.

    .venv/bin/python bench/bench_table_batch.py [--entities 100] [--runs 5] [--top 20]
"""
from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import re
import statistics
import sys
import threading
import time
import tracemalloc
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import azure.core  # noqa: E402
import azure.data.tables  # noqa: E402
from azure.core.pipeline import Pipeline  # noqa: E402
from azure.core.pipeline.transport import RequestsTransport  # noqa: E402
from azure.core.rest._helpers import HttpRequestBackcompatMixin  # noqa: E402
from azure.core.rest._http_response_impl import HttpResponseBackcompatMixin  # noqa: E402
from azure.data.tables import TableClient, TableServiceClient  # noqa: E402
from azure.data.tables._table_batch import TableBatchOperations  # noqa: E402

from bench._http import CountingTransport  # noqa: E402
from devhost.azurite import Azurite  # noqa: E402
from devhost.processes import interrupt_on_sigterm  # noqa: E402
from shared.adapters.table_jobs import _job_entity  # noqa: E402
from shared.domain.jobs import Job  # noqa: E402
from shared.domain.shards import shard_of  # noqa: E402
from shared.domain.task import Trigger  # noqa: E402

SLOT = datetime(2025, 6, 2, 22, 30, tzinfo=timezone.utc)
SHARD = "0"
THREADS = 8                     # TableJobStore's default workers
_names = itertools.count()


def job_rows(n: int) -> list[dict]:
    """N job rows of one slot and one shard (one partition, as a shard's planner writes them), never
    written before. A job's partition is its VM's shard and its slot hour, so the names are drawn
    from one shard."""
    run = next(_names)
    names = (f"vm{run:05d}-{i:05d}" for i in itertools.count())
    in_shard = itertools.islice((name for name in names if shard_of(name) == SHARD), n)
    return [_job_entity(Job.new_backup(vm_name=name, slot=SLOT, now=SLOT, trigger=Trigger.SCHEDULED,
                                       policy_name="DefaultPolicy"))
            for name in in_shard]


@dataclass
class Series:
    """Per-entity client CPU and wall time of one way of writing, over the runs."""
    name: str
    cpu_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)
    requests: int = 0

    def add(self, cpu_s: float, wall_s: float, entities: int) -> None:
        self.cpu_ms.append(cpu_s * 1000 / entities)
        self.wall_ms.append(wall_s * 1000 / entities)

    def row(self, n: int) -> list[str]:
        def spread(values: list[float]) -> str:
            return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"
        return [self.name, spread(self.cpu_ms), spread(self.wall_ms),
                f"{statistics.median(self.cpu_ms) * n:.1f}", f"{statistics.median(self.wall_ms) * n:.1f}",
                f"{self.requests / len(self.cpu_ms):.0f}"]


@contextmanager
def timed(series: Series, entities: int, transport: CountingTransport) -> Iterator[None]:
    before = transport.requests
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    series.add(time.process_time() - cpu, time.perf_counter() - wall, entities)
    series.requests += transport.requests - before


def measure(table: TableClient, transport: CountingTransport, n: int, runs: int) -> list[Series]:
    ways: list[tuple[str, Callable[[list[dict]], object]]] = [
        ("submit_transaction: creates", lambda rows: table.submit_transaction([("create", e) for e in rows])),
        ("submit_transaction: upserts", lambda rows: table.submit_transaction([("upsert", e) for e in rows])),
        ("create_entity one by one", lambda rows: [table.create_entity(e) for e in rows]),
        ("upsert_entity one by one", lambda rows: [table.upsert_entity(e) for e in rows]),
        # The fixed cost of a transaction, whatever its size.
        ("submit_transaction: one create each", lambda rows: [table.submit_transaction([("create", e)])
                                                              for e in rows]),
    ]
    for _, write in ways:                   # warm: connection pool, imports, Azurite's JIT
        write(job_rows(n))
    results = []
    for name, write in ways:
        series = Series(name)
        for _ in range(runs):
            rows = job_rows(n)
            with timed(series, n, transport):
                write(rows)
        results.append(series)

    threaded = Series(f"submit_transaction: creates, {THREADS} threads")
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for _ in range(runs):
            batches = [job_rows(n) for _ in range(THREADS)]
            with timed(threaded, n * THREADS, transport):
                list(pool.map(lambda rows: table.submit_transaction([("create", e) for e in rows]), batches))
    results.append(threaded)

    traced = Series("submit_transaction: creates, tracemalloc on")
    for _ in range(runs):
        rows = job_rows(n)
        tracemalloc.start()
        try:
            with timed(traced, n, transport):
                table.submit_transaction([("create", e) for e in rows])
        finally:
            tracemalloc.stop()
    results.append(traced)
    return results


# --- where a transaction's CPU goes -----------------------------------------------------------

# The outermost SDK calls a transaction makes, in order. Each is timed in place (process CPU, which
# includes the threads azure-core starts inside the call), counting only the outermost entry, since
# the multipart helpers recurse into the changeset.
PHASES = [
    ("entity -> JSON sub-requests (azure-data-tables)", TableBatchOperations, "add_operation"),
    ("per-part policies in a thread pool (azure-core Pipeline._prepare_multipart_mixed_request)",
     Pipeline, "_prepare_multipart_mixed_request"),
    ("multipart body: http.client serializer + email generator (azure-core prepare_multipart_body)",
     HttpRequestBackcompatMixin, "_prepare_multipart_body"),
    ("HTTP round trip (requests/urllib3, socket wait)", RequestsTransport, "send"),
    ("response parts: email parser + per-part policies in a thread pool (azure-core parts)",
     HttpResponseBackcompatMixin, "parts"),
]


class PhaseClock:
    """Accumulates process CPU inside each phase while installed (single-threaded callers only)."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self._depth = 0
        self._lock = threading.Lock()
        self._saved: list[tuple[type, str, object]] = []

    def _wrap(self, name: str, fn: Callable) -> Callable:
        clock = self

        def timed_call(*args, **kwargs):
            with clock._lock:
                outermost = clock._depth == 0
                clock._depth += 1
            started = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                with clock._lock:
                    clock._depth -= 1
                if outermost:
                    clock.cpu[name] += time.process_time() - started
        return timed_call

    def __enter__(self) -> "PhaseClock":
        for name, owner, attr in PHASES:
            raw = owner.__dict__.get(attr)
            if raw is None:     # private SDK internals: a new SDK release may move them
                self.__exit__()
                raise SystemExit(f"{owner.__qualname__}.{attr} is gone in azure-core {azure.core.__version__}, "
                                 f"azure-data-tables {azure.data.tables.__version__}: update PHASES")
            self._saved.append((owner, attr, raw))
            fn = raw.__func__ if isinstance(raw, staticmethod) else raw
            wrapped = self._wrap(name, fn)
            setattr(owner, attr, staticmethod(wrapped) if isinstance(raw, staticmethod) else wrapped)
        return self

    def __exit__(self, *exc) -> None:
        for owner, attr, raw in reversed(self._saved):
            setattr(owner, attr, raw)
        self._saved.clear()


def phases(table: TableClient, n: int, runs: int) -> tuple[list[list[str]], float]:
    total = 0.0
    with PhaseClock() as clock:
        for _ in range(runs):
            rows = job_rows(n)
            started = time.process_time()
            table.submit_transaction([("create", e) for e in rows])
            total += time.process_time() - started
    named = sum(clock.cpu.values())
    table_rows = [[name, f"{clock.cpu[name] * 1000 / runs:.1f}", f"{clock.cpu[name] / total:.0%}"]
                  for name, _, _ in PHASES]
    table_rows.append(["rest (pipeline policies, headers, tracing decorator, result metadata)",
                       f"{(total - named) * 1000 / runs:.1f}", f"{(total - named) / total:.0%}"])
    return table_rows, total * 1000 / runs


AREAS = [("email (stdlib)", "/email/"), ("http.client (stdlib)", "/http/client.py"),
         ("threads (threading, concurrent.futures)", "/threading.py"),
         ("threads (threading, concurrent.futures)", "/concurrent/futures/"),
         ("azure-data-tables", "/azure/data/tables/"), ("azure-core", "/azure/core/"),
         ("requests/urllib3", "/requests/"), ("requests/urllib3", "/urllib3/")]


def area_of(filename: str, function: str) -> str:
    for area, marker in AREAS:
        if marker in filename:
            return area
    if function.startswith("<method 'acquire'") or "start_new_thread" in function:
        return "threads (threading, concurrent.futures)"
    if "socket" in function:
        return "socket (waiting for Azurite)"
    return "other"


def own_time_by_area(stats: pstats.Stats) -> dict[str, float]:
    """Own time per area; a helper outside them (str.lower, re.match, MutableMapping.update ...)
    counts for the areas of its callers."""
    by_area: dict[str, float] = defaultdict(float)
    for (filename, _, function), (_, _, own, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        area = area_of(filename, function)
        if area != "other" or not callers:
            by_area[area] += own
            continue
        for (caller_file, _, caller_function), edge in callers.items():
            by_area[area_of(caller_file, caller_function)] += edge[2]
    return by_area


def short(filename: str) -> str:
    """``azure/core/...`` or ``email/...``: the path inside site-packages or the stdlib."""
    return re.sub(r"^.*/(site-packages|lib/python3\.\d+)/", "", filename)


SDK_AREAS = {"email (stdlib)", "http.client (stdlib)", "azure-core", "azure-data-tables"}


def profile(table: TableClient, n: int, runs: int, top: int) -> tuple[list[list[str]], list[list[str]]]:
    # Thread CPU, not wall time: waiting for Azurite is not the client's cost, and other processes
    # on a busy machine would otherwise inflate whatever happened to be running.
    profiler = cProfile.Profile(time.thread_time)
    for _ in range(runs):
        rows = job_rows(n)
        profiler.enable()
        table.submit_transaction([("create", e) for e in rows])
        profiler.disable()
    stats = pstats.Stats(profiler)
    by_area = own_time_by_area(stats)
    whole = sum(by_area.values())
    areas = [[area, f"{seconds * 1000 / runs:.1f}", f"{seconds / whole:.0%}"]
             for area, seconds in sorted(by_area.items(), key=lambda kv: -kv[1])]
    entries = sorted(((cumulative, own, calls, filename, line, function)
                      for (filename, line, function), (_, calls, own, cumulative, _)
                      in stats.stats.items()  # type: ignore[attr-defined]
                      if area_of(filename, function) in SDK_AREAS), reverse=True)
    functions = [[f"{cumulative / whole:.0%}", f"{own / whole:.0%}", str(calls // runs),
                  f"{short(filename)}:{line}({function})"]
                 for cumulative, own, calls, filename, line, function in entries[:top]]
    return areas, functions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100, help="entities per transaction (at most 100)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each way (at least 3)")
    parser.add_argument("--top", type=int, default=20, help="cProfile functions to list")
    args = parser.parse_args(argv)
    if not 1 <= args.entities <= 100 or args.runs < 3:
        parser.error("--entities must be 1..100 (a transaction's limit) and --runs at least 3")
    from tabulate import tabulate

    with Azurite() as azurite:
        transport = CountingTransport()
        service = TableServiceClient.from_connection_string(azurite.connection_string, transport=transport)
        service.create_table_if_not_exists("benchbatch")
        table = service.get_table_client("benchbatch")
        sample = job_rows(1)[0]
        print(f"azure-data-tables {azure.data.tables.__version__}, azure-core {azure.core.__version__}, "
              f"Python {sys.version.split()[0]}; job row of {len(sample)} properties "
              f"(keys included), {args.entities} entities a transaction, {args.runs} runs\n")
        series = measure(table, transport, args.entities, args.runs)
        phase_rows, per_tx = phases(table, args.entities, args.runs)
        areas, functions = profile(table, args.entities, args.runs, args.top)

    print(tabulate([s.row(args.entities) for s in series],
                   headers=["Way", "CPU ms/entity min/med/max", "Wall ms/entity min/med/max",
                            f"CPU ms/{args.entities}", f"Wall ms/{args.entities}", "Requests/run"],
                   tablefmt="simple", disable_numparse=True))
    print(f"\nOne {args.entities}-entity create transaction by phase (process CPU, mean of {args.runs}; "
          f"{per_tx:.1f} ms in all):")
    print(tabulate(phase_rows, headers=["Phase", "CPU ms", "Share"], tablefmt="simple", disable_numparse=True))
    print(f"\ncProfile, own thread CPU by area (mean of {args.runs} transactions; "
          f"cProfile inflates call-heavy code: read the shares, not the ms):")
    print(tabulate(areas, headers=["Area", "ms", "Share"], tablefmt="simple", disable_numparse=True))
    print(f"\ncProfile, the {args.top} SDK and stdlib functions with the most CPU below them "
          f"(shares of the profiled transactions; calls per transaction):")
    print(tabulate(functions, headers=["Cumulative", "Own", "Calls", "Function"], tablefmt="simple",
                   disable_numparse=True))
    return 0


if __name__ == "__main__":
    interrupt_on_sigterm()
    sys.exit(main())
