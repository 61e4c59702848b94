"""A local stand-in for the Azure Functions host, driven by the app's own binding metadata.

It reads ``app.get_functions()`` and ``host.json`` and runs each function as the host would:
- timer triggers fire on their NCRONTAB schedules (six fields, seconds first) and on demand; with
  ``useMonitor`` the last and next occurrence are kept in the host storage account, so an
  occurrence missed while the host was down fires once at start-up with ``past_due=True``;
- Service Bus queue triggers are fed through the real ``azure-servicebus`` client in peek-lock
  mode, up to ``maxConcurrentCalls`` at once, with lock renewal up to
  ``maxAutoLockRenewalDuration``: complete on success, abandon on exception, so MaxDeliveryCount
  and the dead-letter queue work as in Azure;
- Service Bus output bindings are sent after the function returns;
- blob triggers fire once for each new or changed blob under their path, remembered by blob
  receipts keyed by ETag in the host storage account (container ``azure-webjobs-hosts``); a blob
  that fails ``poisonBlobThreshold`` times gets a poison record there instead of more retries.

What it leaves out: HTTP and every other trigger type, sessions, Event Grid delivery (blob triggers
declared with ``source=EventGrid`` are served by scanning the container, the same outcome for the
function), scale-out and singleton leases, retry policies, the worker's gRPC protocol. In Azure
the same function code runs under the real host.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import azure.functions as func
from azure.functions.blob import InputStream
from azure.functions.servicebus import ServiceBusMessage as FuncServiceBusMessage
from azure.functions.timer import TimerRequest
from croniter import croniter

from shared.errors import ConfigurationError

log = logging.getLogger(__name__)

HOSTS_CONTAINER = "azure-webjobs-hosts"
_SETTING = re.compile(r"%([^%]+)%")


@dataclass
class FunctionSpec:
    name: str
    trigger: dict
    outputs: list[dict]
    call: Callable[..., Any]
    bindings: list[dict] = field(default_factory=list)

    @property
    def trigger_type(self) -> str:
        return self.trigger["type"]


@dataclass
class HostConfig:
    max_concurrent_calls: int = 16
    max_lock_renewal: timedelta = timedelta(minutes=5)
    auto_complete: bool = True
    poison_blob_threshold: int = 5

    @classmethod
    def from_host_json(cls, path: Path) -> "HostConfig":
        doc = json.loads(path.read_text())
        sb = doc.get("extensions", {}).get("serviceBus", {})
        blobs = doc.get("extensions", {}).get("blobs", {})
        return cls(
            max_concurrent_calls=int(sb.get("maxConcurrentCalls", 16)),
            max_lock_renewal=_parse_timespan(sb.get("maxAutoLockRenewalDuration", "00:05:00")),
            auto_complete=bool(sb.get("autoCompleteMessages", True)),
            poison_blob_threshold=int(blobs.get("poisonBlobThreshold", 5)),
        )


@dataclass
class _BlobTriggerState:
    receipts: set[tuple[str, str]] = field(default_factory=set)   # (blob name, etag)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    loaded: bool = False


class LocalFunctionsHost:
    """Runs one FunctionApp's functions locally; on demand (tests, ``--once``) or in the background."""

    def __init__(self, app: func.FunctionApp, env: Mapping[str, str], config: HostConfig | None = None,
                 *, host_id: str = "vmsnap-local", poll_interval: float = 0.5):
        self.env = dict(env)
        self.config = config or HostConfig()
        self.host_id = host_id
        self.poll_interval = poll_interval
        self.functions = {spec.name: spec for spec in read_functions(app)}
        for spec in self.functions.values():
            self._check_settings(spec)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sb_clients: dict[str, Any] = {}
        self._blob_services: dict[str, Any] = {}
        self._blob_state: dict[str, _BlobTriggerState] = {}
        self._hosts_container = None
        self._lock = threading.Lock()

    # --- settings ----------------------------------------------------------------------------
    def resolve(self, expression: str, function: str = "") -> str:
        def value(match: re.Match) -> str:
            name = match.group(1)
            if not self.env.get(name):
                raise ConfigurationError(f"setting {name} (used by function {function}) is missing; "
                                         f"add it to local.settings.json")
            return self.env[name]

        return _SETTING.sub(value, expression)

    def _check_settings(self, spec: FunctionSpec) -> None:
        for binding in [spec.trigger, *spec.outputs]:
            for key in ("schedule", "queueName", "path"):
                if key in binding:
                    self.resolve(binding[key], spec.name)
            connection = binding.get("connection")
            if connection and not self.env.get(connection):
                raise ConfigurationError(f"setting {connection} (connection of function {spec.name}) is "
                                         f"missing; add it to local.settings.json")

    # --- timers ------------------------------------------------------------------------------
    def fire_timer(self, name: str, *, past_due: bool = False) -> None:
        spec = self._spec(name, "timerTrigger")
        now = datetime.now(timezone.utc)
        schedule = self.resolve(spec.trigger["schedule"], name)
        status = {"Last": now.isoformat(), "Next": _next_occurrence(schedule, now).isoformat(),
                  "LastUpdated": now.isoformat()}
        request = TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})
        self._invoke(spec, request)
        if spec.trigger.get("useMonitor"):
            self._save_timer_status(name, now)

    def _timer_loop(self, spec: FunctionSpec) -> None:
        schedule = self.resolve(spec.trigger["schedule"], spec.name)
        if spec.trigger.get("runOnStartup"):
            self._safe(lambda: self.fire_timer(spec.name))
        elif spec.trigger.get("useMonitor"):
            last = self._load_timer_status(spec.name)
            now = datetime.now(timezone.utc)
            if last is not None and _next_occurrence(schedule, last) < now:
                log.info("timer %s missed an occurrence while the host was down; firing past due", spec.name)
                self._safe(lambda: self.fire_timer(spec.name, past_due=True))
        while not self._stop.is_set():
            due = _next_occurrence(schedule, datetime.now(timezone.utc))
            while not self._stop.is_set():
                remaining = (due - datetime.now(timezone.utc)).total_seconds()
                if remaining <= 0:
                    break
                self._stop.wait(min(remaining, 1.0))
            if self._stop.is_set():
                return
            late = datetime.now(timezone.utc) - due
            self._safe(lambda: self.fire_timer(spec.name, past_due=late > timedelta(seconds=30)))

    def _timer_status_blob(self, name: str):
        return self._receipts_container().get_blob_client(f"timers/{self.host_id}/{name}/status")

    def _save_timer_status(self, name: str, last: datetime) -> None:
        self._timer_status_blob(name).upload_blob(json.dumps({"Last": last.isoformat()}), overwrite=True)

    def _load_timer_status(self, name: str) -> datetime | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            doc = json.loads(self._timer_status_blob(name).download_blob().readall())
            return datetime.fromisoformat(doc["Last"])
        except (ResourceNotFoundError, KeyError, ValueError):
            return None

    # --- Service Bus -------------------------------------------------------------------------
    def drain_queue(self, name: str, *, max_wait: float = 1.0) -> int:
        """Receive and process what the function's queue holds now; returns messages processed."""
        spec = self._spec(name, "serviceBusTrigger")
        total = 0
        with self._receiver(spec, max_wait) as receiver:
            while True:
                count = self._receive_once(spec, receiver, max_wait)
                if count == 0:
                    return total
                total += count

    def _receiver(self, spec: FunctionSpec, max_wait: float):
        from azure.servicebus import ServiceBusReceiveMode

        client = self._sb_client(spec.trigger["connection"])
        return client.get_queue_receiver(self.resolve(spec.trigger["queueName"], spec.name),
                                         receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
                                         max_wait_time=max_wait)

    def _receive_once(self, spec: FunctionSpec, receiver, max_wait: float) -> int:
        from azure.servicebus import AutoLockRenewer

        messages = receiver.receive_messages(max_message_count=self.config.max_concurrent_calls,
                                             max_wait_time=max_wait)
        if not messages:
            return 0
        renewer = AutoLockRenewer(max_lock_renewal_duration=self.config.max_lock_renewal.total_seconds())
        try:
            for message in messages:
                renewer.register(receiver, message)
            with ThreadPoolExecutor(max_workers=len(messages)) as pool:
                results = list(pool.map(lambda m: self._invoke_safely(spec, _to_function_message(m)),
                                        messages))
        finally:
            renewer.close()
        for message, ok in zip(messages, results):
            if not self.config.auto_complete:
                continue
            try:
                if ok:
                    receiver.complete_message(message)
                else:
                    receiver.abandon_message(message)
            except Exception as exc:  # a lost lock: Service Bus redelivers, as it does in Azure
                log.warning("could not settle message %s: %s", message.message_id, exc)
        return len(messages)

    def _queue_loop(self, spec: FunctionSpec) -> None:
        while not self._stop.is_set():
            try:
                with self._receiver(spec, 1.0) as receiver:
                    while not self._stop.is_set():
                        self._receive_once(spec, receiver, 1.0)
            except Exception as exc:
                log.error("Service Bus listener for %s failed (%s); retrying in 2 s", spec.name, exc)
                self._stop.wait(2.0)

    def _sb_client(self, connection: str):
        from azure.servicebus import ServiceBusClient

        with self._lock:
            if connection not in self._sb_clients:
                self._sb_clients[connection] = ServiceBusClient.from_connection_string(self.env[connection])
            return self._sb_clients[connection]

    # --- blobs ---------------------------------------------------------------------------------
    def scan_blobs(self, name: str) -> int:
        """One pass over the trigger's container: invoke for each new or changed blob; returns invocations."""
        spec = self._spec(name, "blobTrigger")
        container_name, pattern = _blob_path_pattern(self.resolve(spec.trigger["path"], name))
        service = self._blob_service(spec.trigger["connection"])
        container = service.get_container_client(container_name)
        state = self._blob_state.setdefault(name, _BlobTriggerState())
        if not state.loaded:
            state.receipts |= self._load_receipts(name, container_name)
            state.loaded = True
        from azure.core.exceptions import ResourceNotFoundError

        invoked = 0
        try:
            listing = list(container.list_blobs())
        except ResourceNotFoundError:
            return 0
        for item in listing:
            if not pattern.fullmatch(item.name) or (item.name, item.etag) in state.receipts:
                continue
            invoked += self._fire_blob(spec, container, item.name, state)
        return invoked

    def _fire_blob(self, spec: FunctionSpec, container, blob_name: str, state: _BlobTriggerState) -> int:
        from azure.core.exceptions import ResourceNotFoundError

        blob = container.get_blob_client(blob_name)
        try:
            downloader = blob.download_blob()
            data = downloader.readall()
        except ResourceNotFoundError:
            return 0
        props = downloader.properties
        key = (blob_name, props.etag)
        if key in state.receipts:
            return 0
        stream = InputStream(
            data=data, name=f"{container.container_name}/{blob_name}", uri=blob.url, length=len(data),
            blob_properties={"ETag": props.etag, "Length": len(data), "BlobType": str(props.blob_type),
                             "LastModified": props.last_modified.isoformat() if props.last_modified else None},
            metadata=dict(props.metadata or {}))
        if self._invoke_safely(spec, stream):
            self._write_receipt(spec.name, container.container_name, blob_name, props.etag)
            state.receipts.add(key)
            return 1
        failures = state.failures.get(key, 0) + 1
        state.failures[key] = failures
        if failures >= self.config.poison_blob_threshold:
            log.error("blob %s/%s failed %d times; recorded as poison and not retried",
                      container.container_name, blob_name, failures)
            self._write_receipt(spec.name, container.container_name, blob_name, props.etag, poison=True)
            state.receipts.add(key)
        return 1

    def _receipts_container(self):
        if self._hosts_container is None:
            container = self._host_blob_service().get_container_client(HOSTS_CONTAINER)
            _ensure_container(container)
            self._hosts_container = container
        return self._hosts_container

    def _receipt_prefix(self, function: str) -> str:
        return f"blobreceipts/{self.host_id}/{function}/"

    def _write_receipt(self, function: str, container: str, blob: str, etag: str, *, poison: bool = False) -> None:
        name = f"{self._receipt_prefix(function)}{etag.strip(chr(34))}/{container}/{blob}"
        self._receipts_container().upload_blob(name, b"", overwrite=True, metadata={"poison": str(poison).lower()})

    def _load_receipts(self, function: str, container: str) -> set[tuple[str, str]]:
        receipts = set()
        prefix = self._receipt_prefix(function)
        for item in self._receipts_container().list_blobs(name_starts_with=prefix):
            etag, _, rest = item.name[len(prefix):].partition("/")
            blob_container, _, blob = rest.partition("/")
            if blob_container == container:
                receipts.add((blob, f'"{etag}"'))
        return receipts

    def _blob_loop(self, spec: FunctionSpec) -> None:
        while not self._stop.is_set():
            self._safe(lambda: self.scan_blobs(spec.name))
            self._stop.wait(self.poll_interval)

    def _blob_service(self, connection: str):
        from azure.storage.blob import BlobServiceClient

        with self._lock:
            if connection not in self._blob_services:
                self._blob_services[connection] = BlobServiceClient.from_connection_string(self.env[connection])
            return self._blob_services[connection]

    def _host_blob_service(self):
        if not self.env.get("AzureWebJobsStorage"):
            raise ConfigurationError("setting AzureWebJobsStorage is missing; the host keeps its blob "
                                     "receipts and timer status there")
        return self._blob_service("AzureWebJobsStorage")

    # --- invocation ----------------------------------------------------------------------------
    def _invoke(self, spec: FunctionSpec, trigger_value: Any) -> None:
        outputs = {b["name"]: _Capture() for b in spec.outputs}
        spec.call(**{spec.trigger["name"]: trigger_value}, **outputs)
        for binding in spec.outputs:
            values = outputs[binding["name"]].values
            if binding["type"] == "serviceBus" and values:
                self._send_output(spec, binding, values)

    def _invoke_safely(self, spec: FunctionSpec, trigger_value: Any) -> bool:
        try:
            self._invoke(spec, trigger_value)
            return True
        except Exception:
            log.exception("function %s failed", spec.name)
            return False

    def _send_output(self, spec: FunctionSpec, binding: dict, values: list) -> None:
        from azure.servicebus import ServiceBusMessage

        client = self._sb_client(binding["connection"])
        with client.get_queue_sender(self.resolve(binding["queueName"], spec.name)) as sender:
            sender.send_messages([ServiceBusMessage(v) for v in values])

    def _safe(self, action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception:
            log.exception("local host: a trigger pass failed")

    def _spec(self, name: str, trigger_type: str) -> FunctionSpec:
        spec = self.functions.get(name)
        if spec is None or spec.trigger_type != trigger_type:
            raise ConfigurationError(f"no {trigger_type} function named {name!r} in the app")
        return spec

    # --- background ----------------------------------------------------------------------------
    def start(self) -> "LocalFunctionsHost":
        loops = {"timerTrigger": self._timer_loop, "serviceBusTrigger": self._queue_loop,
                 "blobTrigger": self._blob_loop}
        for spec in self.functions.values():
            loop = loops.get(spec.trigger_type)
            if loop is None:
                log.warning("function %s: trigger %s is not run by the local host", spec.name, spec.trigger_type)
                continue
            thread = threading.Thread(target=loop, args=(spec,), name=f"host-{spec.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        for client in self._sb_clients.values():
            client.close()
        self._sb_clients.clear()
        for service in self._blob_services.values():
            service.close()
        self._blob_services.clear()
        self._hosts_container = None

    def __enter__(self) -> "LocalFunctionsHost":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class _Capture(func.Out):
    """An output binding value holder (``func.Out`` is abstract)."""

    def __init__(self) -> None:
        self.values: list = []

    def set(self, value) -> None:
        self.values.extend(value if isinstance(value, list) else [value])

    def get(self):
        return self.values[-1] if self.values else None


# Keyed weakly by the app object itself: an id() key is reused once an app is collected, and a
# new app would then be handed the functions (and closures) of a dead one.
_specs_by_app: "weakref.WeakKeyDictionary[func.FunctionApp, list[FunctionSpec]]" = weakref.WeakKeyDictionary()


def read_functions(app: func.FunctionApp) -> list[FunctionSpec]:
    # get_functions() may be called only once per app object (it raises on a second call).
    if app in _specs_by_app:
        return _specs_by_app[app]
    specs = []
    for function in app.get_functions():
        doc = json.loads(function.get_function_json())
        bindings = doc["bindings"]
        trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
        outputs = [b for b in bindings if b.get("direction", "").upper() == "OUT"]
        specs.append(FunctionSpec(name=function.get_function_name(), trigger=trigger, outputs=outputs,
                                  call=function.get_user_function(), bindings=bindings))
    _specs_by_app[app] = specs
    return specs


def _to_function_message(message) -> FuncServiceBusMessage:
    """What the Python worker hands a function for one received message.

    The Python client reads the AMQP header's count, which starts at 0; Functions reports
    DeliveryCount starting at 1, as .NET does.
    """
    body = b"".join(message.body) if not isinstance(message.body, bytes) else message.body
    props = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in (message.application_properties or {}).items()}
    return FuncServiceBusMessage(
        body=body, message_id=message.message_id or "", delivery_count=(message.delivery_count or 0) + 1,
        application_properties=props, user_properties=props, content_type=message.content_type,
        correlation_id=message.correlation_id, enqueued_time_utc=message.enqueued_time_utc,
        locked_until=message.locked_until_utc, lock_token=str(message.lock_token),
        sequence_number=message.sequence_number, subject=message.subject, label=message.subject,
        scheduled_enqueue_time_utc=message.scheduled_enqueue_time_utc, time_to_live=message.time_to_live,
        trigger_metadata={"MessageId": message.message_id, "DeliveryCount": (message.delivery_count or 0) + 1})


def _blob_path_pattern(path: str) -> tuple[str, re.Pattern]:
    container, _, rest = path.partition("/")
    parts = re.split(r"(\{[^}]+\})", rest)
    regex = "".join(f"(?P<{p[1:-1]}>.+)" if p.startswith("{") else re.escape(p) for p in parts)
    return container, re.compile(regex)


def _next_occurrence(schedule: str, after: datetime) -> datetime:
    return croniter(schedule, after, second_at_beginning=True).get_next(datetime)


def _parse_timespan(text: str) -> timedelta:
    hours, minutes, seconds = text.split(":")
    return timedelta(hours=int(hours), minutes=int(minutes), seconds=float(seconds))


def _ensure_container(container) -> None:
    from azure.core.exceptions import ResourceExistsError

    try:
        container.create_container()
    except ResourceExistsError:
        pass
