"""Metrics and traces through OpenTelemetry (docs/monitoring.md lists each instrument).

In Azure (``APPLICATIONINSIGHTS_CONNECTION_STRING`` set) the Azure Monitor distro exports them to
Application Insights; elsewhere they stay in an in-memory reader (``Telemetry.snapshot()``: what tests
and ``./dev run`` read). Built once per process by the composition root.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Protocol

if TYPE_CHECKING:
    from datetime import datetime

    from shared.domain.jobs import Job

log = logging.getLogger(__name__)

CONNECTION_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
NAME = "vmsnap"
# Histogram buckets in seconds: a dispatch or an ingestion takes a fraction of a second to minutes, a
# backup minutes to the extension's 140-minute window, a tick seconds.
_SECONDS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 10800)


# Finished spans kept in memory when no exporter takes them (tests read them back): the latest ones
# only, so a local stack that runs for days holds a bounded number.
RECENT_SPANS = 1000

_azure: "Telemetry | None" = None


class _SpanBuffer(Protocol):
    def finished(self) -> list[tuple[str, dict[str, Any]]]:
        """The spans kept, oldest first, as (name, attributes)."""


def connection_string(env: Mapping[str, str] = os.environ) -> str | None:
    """The Application Insights connection string, when telemetry goes to Azure Monitor."""
    return env.get(CONNECTION_SETTING, "").strip() or None


class Telemetry:
    """The app's instruments. ``Telemetry.for_environment()`` chooses the exporter; tests build
    ``Telemetry()`` and read ``snapshot()`` and ``recent_spans()``."""

    def __init__(self, meter_provider: Any = None, tracer_provider: Any = None, *,
                 recent_spans: int = RECENT_SPANS) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        self.reader = None
        self._spans: _SpanBuffer | None = None
        if meter_provider is None:
            self.reader = InMemoryMetricReader()
            meter_provider = MeterProvider(metric_readers=[self.reader])
        if tracer_provider is None:
            exporter = _recent_spans_exporter()(recent_spans)
            self._spans = exporter
            tracer_provider = TracerProvider()
            tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        self._meter_provider = meter_provider
        meter = meter_provider.get_meter(NAME)
        self._tracer = tracer_provider.get_tracer(NAME)
        self._jobs = meter.create_counter("vmsnap.jobs", unit="{job}",
                                          description="Jobs that ended, by operation and outcome")
        self._duration = meter.create_histogram("vmsnap.backup.duration", unit="s",
                                                description="Backup jobs from start to end",
                                                explicit_bucket_boundaries_advisory=_SECONDS)
        self._bytes = meter.create_counter("vmsnap.backup.bytes", unit="By", description="Bytes backed up")
        self._rpo = meter.create_gauge("vmsnap.rpo", unit="s", description="Achieved RPO per item")
        self._alerts = meter.create_up_down_counter("vmsnap.alerts.active", unit="{alert}",
                                                    description="Alerts fired minus alerts resolved, by kind")
        self._latency = meter.create_histogram("vmsnap.latency", unit="s",
                                               description="Tick run time, dispatch and ingestion delays",
                                               explicit_bucket_boundaries_advisory=_SECONDS)

    @classmethod
    def for_environment(cls, env: Mapping[str, str] = os.environ) -> "Telemetry":
        """Azure Monitor when its connection string is set, else in memory."""
        global _azure
        if connection_string(env):
            if _azure is not None:
                return _azure       # the distro configures the process once
            from azure.monitor.opentelemetry import configure_azure_monitor
            from opentelemetry import metrics, trace

            # Logs stay with the Functions host (it forwards them already): metrics and traces only.
            configure_azure_monitor(connection_string=connection_string(env), logger_name=NAME,
                                    enable_live_metrics=False,
                                    instrumentation_options={name: {"enabled": False} for name in (
                                        "django", "fastapi", "flask", "psycopg2", "requests", "urllib", "urllib3")})
            _azure = cls(metrics.get_meter_provider(), trace.get_tracer_provider())
            return _azure
        return cls()

    # --- what the app records -------------------------------------------------------------------------
    def job_finished(self, job: "Job") -> None:
        """A job that ended: its outcome; for a backup also its duration and bytes."""
        attributes = {"operation": job.operation, "outcome": job.status.value, "trigger": job.trigger.value}
        self._jobs.add(1, attributes)
        if job.operation != "Backup":
            return
        if job.status.value in ("Completed", "CompletedWithWarnings") and job.end_time is not None:
            self.rpo(job.vm_name, max((job.end_time - job.slot).total_seconds(), 0.0))   # its new point's age
        if job.duration is not None:
            self._duration.record(job.duration.total_seconds(), attributes)
        if job.backup_size_bytes:
            self._bytes.add(job.backup_size_bytes, {"outcome": job.status.value})

    def rpo(self, item: str, seconds: float) -> None:
        self._rpo.set(seconds, {"item": item})

    def alert_changed(self, kind: str, delta: int) -> None:
        self._alerts.add(delta, {"kind": kind})

    def latency(self, what: str, seconds: float) -> None:
        """``tick`` (a tick's run time), ``dispatch`` (a task's due time to its command handed over),
        ``ingestion`` (a status blob's write to its job record)."""
        self._latency.record(max(seconds, 0.0), {"stage": what})

    def latency_since(self, what: str, since: Any, now: "datetime") -> None:
        """``latency(what, now - since)`` for a time a trigger hands over (a datetime or ISO text); one it
        cannot read is not recorded (a metric never fails an invocation)."""
        from datetime import datetime

        from shared.clock import utc

        try:
            when = since if isinstance(since, datetime) else datetime.fromisoformat(str(since))
        except ValueError:
            return
        if since is not None:
            self.latency(what, (utc(now) - utc(when)).total_seconds())

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[None]:
        """A trace span around one invocation, with its ids (never a SAS) as attributes."""
        with self._tracer.start_as_current_span(name, attributes={k: str(v) for k, v in attributes.items()}):
            yield

    # --- reading back (tests, benchmarks) ------------------------------------------------------------
    def snapshot(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """{metric name: [(attributes, value)]} from the in-memory reader: sums and gauges as numbers,
        histograms as (count, sum)."""
        if self.reader is None:
            return {}
        found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        from opentelemetry.sdk.metrics.export import NumberDataPoint

        data = self.reader.get_metrics_data()
        for resource in (data.resource_metrics if data else ()):
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = found.setdefault(metric.name, [])
                    for point in metric.data.data_points:
                        # A histogram's value is its (count, sum); a counter's or a gauge's, the number.
                        value = point.value if isinstance(point, NumberDataPoint) else (point.count, point.sum)
                        points.append((dict(point.attributes or {}), value))
        return found

    def recent_spans(self) -> list[tuple[str, dict[str, Any]]]:
        """The latest finished spans kept in memory, oldest first, as (name, attributes); none when an
        exporter takes them (Azure Monitor)."""
        return self._spans.finished() if self._spans is not None else []

    def total(self, name: str, **attributes: Any) -> float:
        """The sum of a metric's points whose attributes include ``attributes`` (histograms: their count)."""
        total = 0.0
        for attrs, value in self.snapshot().get(name, []):
            if all(attrs.get(k) == v for k, v in attributes.items()):
                total += value[0] if isinstance(value, tuple) else value
        return total


@cache
def _recent_spans_exporter() -> type:
    """The exporter class, defined on first use: OpenTelemetry's SDK is imported only when telemetry is built."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class RecentSpans(SpanExporter):
        """A span exporter that keeps the latest ``limit`` finished spans. OpenTelemetry's
        InMemorySpanExporter keeps every one, which a process that runs for days grows without end."""

        def __init__(self, limit: int) -> None:
            self._spans: deque[tuple[str, dict[str, Any]]] = deque(maxlen=limit)
            self._lock = threading.Lock()

        def export(self, spans: Any) -> Any:
            with self._lock:
                self._spans.extend((span.name, dict(span.attributes or {})) for span in spans)
            return SpanExportResult.SUCCESS

        def finished(self) -> list[tuple[str, dict[str, Any]]]:
            with self._lock:
                return list(self._spans)

    return RecentSpans
