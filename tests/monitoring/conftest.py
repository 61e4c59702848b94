"""Services for alerting and compliance unit tests: every port in memory, jobs written through the
observer (as the composition root wires them), a clock that travels, a webhook that records."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.services.outcomes import ObservedJobStore
from shared.settings import Settings
from shared.telemetry import Telemetry
from tests.fakes import InMemoryInventory, InMemoryJobStore, RecordingDigestQueue, RecordingTaskQueue
from tests.monitoring.fakes import InMemoryAlertStore, InMemoryJobFeed, InMemoryRollupStore, RecordingNotifier
from tests.recovery.fakes import FakeSnapshots, InMemoryRecoveryPointStore
from tests.scheduling.fakes import InMemoryPolicyStore, InMemoryProtectedItemStore

T0 = datetime(2025, 6, 2, 12, 0, tzinfo=timezone.utc)      # a Monday
SETTINGS = {"BackupStorage": "UseDevelopmentStorage=true", "ServiceBusConnection": "Endpoint=sb://127.0.0.1:1;"}


def memory_services(at: datetime = T0, **overrides) -> Services:
    clock = overrides.pop("clock", None) or FixedClock(at)
    feed = InMemoryJobFeed()
    telemetry = Telemetry()
    ports = dict(job_feed=feed, alerts=InMemoryAlertStore(), rollup=InMemoryRollupStore(), notifier=RecordingNotifier(), telemetry=telemetry,
                 recovery_points=InMemoryRecoveryPointStore(), policies=InMemoryPolicyStore(),
                 protected_items=InMemoryProtectedItemStore(), snapshots=FakeSnapshots(),
                 inventory=InMemoryInventory(), task_queue=RecordingTaskQueue(), digest_queue=RecordingDigestQueue())
    inner = overrides.pop("job_store", None) or InMemoryJobStore()      # the store the observer wraps
    ports.update(overrides)
    ports.setdefault("jobs", ObservedJobStore(inner, ports["job_feed"], clock, ports["telemetry"]))
    return Services(Settings.from_env(SETTINGS), clock=clock, **ports)


@pytest.fixture
def svc() -> Services:
    return memory_services()
