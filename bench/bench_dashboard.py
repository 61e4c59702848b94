"""Benchmark of the dashboard's fleet overview over N protected items x D days of daily backups, on Azurite.

Seeds the history bench_compliance.py seeds (one backup job per item and day, 1 in 20 failed, a recovery point
per success) and folds it into the compliance report's roll-up once, as a deployment with history keeps it
(``--without-rollup``: the report reads every job). Then asks the real Function App, served by the local host
over HTTP with ``DASHBOARD_KEEP_WARM=true`` (as the templates and the sample settings run it), for
/api/dashboard: once at once after the app loaded (its warm-up under way), once when the warm-up is done,
three times within the report's freshness (30 s), and three times once it is stale (served while background
runs compute the next); and times what a request on an app without the warm-up computes first (the
report, the alerts, the counts). Prints seconds (min/median/max), the page's size, and checks the page's counts against the
report. The goal: the overview within 1 s at 1,000 items x 90 days.

    .venv/bin/python bench/bench_dashboard.py [--items 1000] [--days 90] [--runs 3] [--without-rollup]
"""
from __future__ import annotations

import os
import re
import statistics
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench.bench_compliance import arguments, seeded  # noqa: E402
from devhost.azurite import Azurite  # noqa: E402
from devhost.host import LocalFunctionsHost  # noqa: E402
from devhost.processes import interrupt_on_sigterm  # noqa: E402
from shared.bootstrap import Services, reset_services  # noqa: E402
from shared.clock import FixedClock  # noqa: E402
from shared.services.dashboard import MAX_AGE  # noqa: E402
from shared.services.rollup import rebuild_rollup  # noqa: E402


def timed_get(url: str) -> tuple[float, str]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as response:
        body = response.read().decode()
        assert response.status == 200, response.status
    return time.perf_counter() - started, body


def summary(times: list[float]) -> str:
    return f"{min(times):.3f} / {statistics.median(times):.3f} / {max(times):.3f} s"


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    with Azurite() as azurite:
        settings, now, _ = seeded(azurite, args.items, args.days)
        clock = FixedClock(now)
        svc = Services(settings, clock=clock)
        if not args.without_rollup:
            started = time.perf_counter()
            done = rebuild_rollup(svc, days=args.days)
            print(f"rebuilt the roll-up once: {done.jobs_read:,} jobs read in {time.perf_counter() - started:.1f} s",
                  flush=True)
        reset_services(svc)
        os.environ["DASHBOARD_KEEP_WARM"] = "true"      # read as the app loads, as in Azure
        loaded = time.perf_counter()
        import function_app

        host = LocalFunctionsHost(function_app.app, {**settings.binding_values(),
                                                     "AzureWebJobsStorage": azurite.host_connection_string})
        try:
            url = f"{host.serve_http()}/api/dashboard"
            after = time.perf_counter() - loaded
            first, page = timed_get(url)
            print(f"first request, sent {after:.2f} s after the app loaded, its warm-up under way: {first:.2f} s",
                  flush=True)
            deadline = time.monotonic() + 600
            while svc.report_cache.computed < 3 and time.monotonic() < deadline:    # report, alerts, counts
                time.sleep(0.05)
            warmed = time.perf_counter() - loaded
            cold, page = timed_get(url)
            counts = dict(re.findall(r'data-testid="count-(\w+)">(\d+)<', page))
            report = svc.report_cache.report(svc)
            assert counts["items"] == str(len(report.items)) == str(args.items), counts
            print(f"warm-up done {warmed:.2f} s after the app loaded; the next request: {cold:.3f} s; page "
                  f"{len(page) / 1024:.0f} KiB; items by state {counts}", flush=True)
            computing = svc.report_cache.computed
            started = time.perf_counter()
            svc.report_cache.warm(svc)
            print(f"what a request without the warm-up computes first (report, alerts, counts): "
                  f"{time.perf_counter() - started:.2f} s ({svc.report_cache.computed - computing} values)", flush=True)
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
          f"first after loading {first:.2f} s; once warm {cold:.3f} s; fresh {summary(fresh)}; stale {summary(stale)}")


if __name__ == "__main__":
    interrupt_on_sigterm()
    main()
