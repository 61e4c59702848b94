"""What each function logs per invocation at the default level, under the local host, as the Python
worker forwards it (every record at INFO and above): with SDK_LOG_LEVEL at its default (WARNING) the Azure
SDKs' per-request records stay out; at INFO (what every record used to be) they are most of the log.
Run with -s to see the counts docs/monitoring.md quotes."""
from __future__ import annotations

import logging
from collections import Counter

import pytest

from devhost.demo import create_demo_vm
from shared.logs import SDK_LOG_SETTING, configure_logging
from shared.services.protection import enable_protection


class Counting(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.by_logger: Counter[str] = Counter()
        self.app: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        sdk = record.name.split(".")[0] in ("azure", "msal", "urllib3")
        self.by_logger["sdk" if sdk else "app"] += 1
        if not sdk:
            self.app.append(f"{record.name}: {record.getMessage()[:90]}")


def invocations(svc, host, vm_name):
    """One tick, one dispatch, one ingestion, one alert evaluation: (function, records by origin)."""
    handler = Counting()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    counts = {}
    try:
        for name, call in (("schedule_backups", lambda: host.fire_timer("schedule_backups")),
                           ("dispatch_snapshot", lambda: host.drain_queue("dispatch_snapshot", max_wait=0.5)),
                           ("ingest_status", lambda: _ingest(svc, host, vm_name)),
                           ("evaluate_alerts", lambda: host.fire_timer("evaluate_alerts"))):
            handler.by_logger.clear()
            handler.app.clear()
            call()
            counts[name] = dict(handler.by_logger, lines=list(handler.app))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return counts


def _ingest(svc, host, vm_name):
    from tests.polling import eventually

    assert eventually(lambda: host.scan_blobs("ingest_status") or _done(svc, vm_name), timeout=60)


def _done(svc, vm_name):
    from shared.ports import JobQuery

    return any(j.is_terminal for j in svc.jobs.query(JobQuery(vm_name=vm_name)).jobs)


@pytest.mark.parametrize("sdk_level", ["INFO", "WARNING"])
def test_the_sdks_request_logs_stay_out_at_the_default_level(loop, sdk_level, capsys):
    """At the default level no SDK record reaches the host; at INFO they do (what the setting is for)."""
    svc, host = loop
    vm = create_demo_vm(svc, f"logs-vm-{sdk_level.lower()}")
    enable_protection(svc, vm.name, "DefaultPolicy")
    configure_logging(env={SDK_LOG_SETTING: sdk_level})
    try:
        counts = invocations(svc, host, vm.name)
    finally:
        configure_logging()
    with capsys.disabled():
        print(f"\nSDK_LOG_LEVEL={sdk_level}: " + "; ".join(
            f"{name} {c.get('app', 0)} app + {c.get('sdk', 0)} SDK records" for name, c in counts.items()))
        if sdk_level == "WARNING":
            for name, c in counts.items():
                print(f"  {name}:\n" + "".join(f"    {line}\n" for line in c["lines"]))
    sdk = sum(c.get("sdk", 0) for c in counts.values())
    if sdk_level == "WARNING":
        assert sdk == 0, counts
        # each says what it did; the alert evaluator, every 30 s, only when something happened
        assert all(c.get("app", 0) >= 1 for name, c in counts.items() if name != "evaluate_alerts"), counts
    else:
        assert sdk > sum(c.get("app", 0) for c in counts.values()), counts
