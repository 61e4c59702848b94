"""Benchmark of the dashboard's fleet overview over N protected items x D days of daily backups, on Azurite.

Seeds the history bench_compliance.py seeds (one backup job per item and day, 1 in 20 failed, a recovery point
per success), then asks the real Function App, served by the local host over HTTP, for /api/dashboard:
once cold (the compliance report computed by the request), three times within the report's freshness (30 s),
and three times once it is stale (served while background runs compute the next). Prints seconds
(min/median/max), the page's size, and checks the page's counts against the report. The goal: the overview
within 1 s at 1,000 items x 90 days.

    .venv/bin/python bench/bench_dashboard.py [--items 1000] [--days 90] [--runs 3]
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.data.tables import TableServiceClient  # noqa: E402

from bench.bench_compliance import FIRST, PREFIX, history, seed  # noqa: E402
from devhost.azurite import Azurite  # noqa: E402
from devhost.host import LocalFunctionsHost  # noqa: E402
from shared.bootstrap import Services, reset_services  # noqa: E402
from shared.clock import FixedClock  # noqa: E402
from shared.domain.jobs import JobStatus  # noqa: E402
from shared.services.dashboard import MAX_AGE  # noqa: E402
from shared.settings import Settings  # noqa: E402


def timed_get(url: str) -> tuple[float, str]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as response:
        body = response.read().decode()
        assert response.status == 200, response.status
    return time.perf_counter() - started, body


def summary(times: list[float]) -> str:
    return f"{min(times):.3f} / {statistics.median(times):.3f} / {max(times):.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    vms, jobs = history(args.items, args.days)
    failed = sum(j.status is JobStatus.FAILED for j in jobs)
    with Azurite() as azurite:
        started = time.perf_counter()
        seed(TableServiceClient.from_connection_string(azurite.connection_string), vms, jobs)
        print(f"seeded {args.items:,} items x {args.days} days: {len(jobs):,} jobs ({failed:,} failed), "
              f"{len(jobs) - failed:,} points in {time.perf_counter() - started:.0f} s", flush=True)
        settings = Settings.from_env({"BackupStorage": azurite.connection_string,
                                      "ServiceBusConnection": "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=x;"
                                                              "SharedAccessKey=y;UseDevelopmentEmulator=true;",
                                      "TABLE_PREFIX": PREFIX})
        clock = FixedClock(FIRST + timedelta(days=args.days - 1, hours=12))     # the last slot's job is done
        svc = Services(settings, clock=clock)
        reset_services(svc)
        import function_app

        host = LocalFunctionsHost(function_app.app, {**settings.binding_values(),
                                                     "AzureWebJobsStorage": azurite.host_connection_string})
        try:
            url = f"{host.serve_http()}/api/dashboard"
            cold, page = timed_get(url)
            counts = dict(re.findall(r'data-testid="count-(\w+)">(\d+)<', page))
            report = svc.report_cache.report(svc)
            assert counts["items"] == str(len(report.items)) == str(args.items), counts
            print(f"cold (the request computes the report): {cold:.2f} s; page {len(page) / 1024:.0f} KiB; "
                  f"items by state {counts}", flush=True)
            fresh = [timed_get(url)[0] for _ in range(args.runs)]
            print(f"fresh (report younger than {MAX_AGE.seconds} s): {summary(fresh)}", flush=True)
            stale = []
            for _ in range(args.runs):
                clock.advance(MAX_AGE + timedelta(seconds=1))
                stale.append(timed_get(url)[0])
                deadline = time.monotonic() + 600           # let the background runs finish before the next
                while svc.report_cache.refreshing and time.monotonic() < deadline:
                    time.sleep(0.2)
            print(f"stale (served while one background run refreshes it): {summary(stale)}", flush=True)
        finally:
            host.stop()
            reset_services()
    print(f"fleet overview over {args.items:,} items x {args.days} days ({args.runs} runs, min/median/max): "
          f"cold {cold:.2f} s; fresh {summary(fresh)}; stale {summary(stale)}")


if __name__ == "__main__":
    main()
