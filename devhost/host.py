# Over 400 lines on purpose: one host: the trigger loops share start, stop with grace and the invocation path.
"""A local stand-in for the Azure Functions host, driven by the app's own binding metadata.

It reads ``app.get_functions()`` and ``host.json`` and runs each function as the host would:
- timer triggers fire on their NCRONTAB schedules (six fields, seconds first) and on demand; with
  ``useMonitor`` the last and next occurrence are kept in the host storage account, so an
  occurrence missed while the host was down fires once at start-up with ``past_due=True``;
- Service Bus queue triggers are fed through the real ``azure-servicebus`` client in peek-lock
  mode, keeping ``maxConcurrentCalls`` invocations in flight (a slow message never holds back the
  next), with lock renewal up to ``maxAutoLockRenewalDuration``: complete on success, abandon on
  exception, so MaxDeliveryCount and the dead-letter queue work as in Azure;
- Service Bus output bindings are sent after the function returns;
- blob triggers fire once for each new or changed blob under their path, remembered by blob
  receipts keyed by ETag in the host storage account (container ``azure-webjobs-hosts``, written in
  batches: ``devhost/receipts.py`` says why); a pass finds them from Azurite's BlobCreated events
  when the settings name them (``AZURITE_BLOB_EVENTS``, ``devhost/blob_events.py``), else by one
  listing (receipts are compared in memory); up to
  ``maxDegreeOfParallelism`` blob invocations run at once app-wide, and a blob that fails
  ``poisonBlobThreshold`` times gets a poison record there instead of more retries;
- with ``FUNCTIONS_WORKER_PROCESS_COUNT`` above 1, invocations run in that many worker processes
  (``devhost/workers.py``), the triggers staying here.

- HTTP triggers are served on 127.0.0.1 by a threaded server (``serve_http``, devhost/http.py) with real
  ``azure.functions.HttpRequest`` and ``HttpResponse`` objects; function keys are not checked.

What it leaves out: every other trigger type, sessions, Event Grid delivery (blob triggers
declared with ``source=EventGrid`` are served as the others are, the same outcome for the
function), scale-out and singleton leases, retry policies, the worker's gRPC protocol (a pipe to
each worker instead). In Azure the same function code runs under the real host.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from xml.etree import ElementTree

import azure.functions as func
from azure.functions.blob import InputStream
from azure.functions.servicebus import ServiceBusMessage as FuncServiceBusMessage
from azure.functions.timer import TimerRequest
from croniter import croniter

from devhost.azurite import BLOB_EVENTS_SETTING
from devhost.blob_events import BlobEventReader
from devhost.http import LocalHttpServer
from devhost.locks import LockKeeper
from devhost.receipts import Receipt, ReceiptJournal
from devhost.workers import PROCESS_COUNT_SETTING, FunctionFailed, WorkerLost, WorkerPool, process_count
from shared.adapters.clients import storage_transport
from shared.errors import ConfigurationError
from shared.settings import KEEP_WARM

log = logging.getLogger(__name__)

HOSTS_CONTAINER = "azure-webjobs-hosts"
LIST_PAGE = 5000            # blobs per listing request: the most the service returns
# With Azurite's BlobCreated events, how often a blob trigger still lists its whole container: the
# receipts of deleted blobs are dropped then (as Azure's LogsAndContainerScan also scans the container).
FULL_SCAN_SECONDS = 600.0
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
    # The Functions default: 8 per core (extensions.blobs.maxDegreeOfParallelism).
    max_degree_of_parallelism: int = field(default_factory=lambda: 8 * (os.cpu_count() or 1))
    route_prefix: str = "api"       # extensions.http.routePrefix: HTTP routes live under /api/ by default

    @classmethod
    def from_host_json(cls, path: Path) -> "HostConfig":
        doc = json.loads(path.read_text())
        sb = doc.get("extensions", {}).get("serviceBus", {})
        blobs = doc.get("extensions", {}).get("blobs", {})
        http = doc.get("extensions", {}).get("http", {})
        return cls(
            max_concurrent_calls=int(sb.get("maxConcurrentCalls", 16)),
            max_lock_renewal=_parse_timespan(sb.get("maxAutoLockRenewalDuration", "00:05:00")),
            auto_complete=bool(sb.get("autoCompleteMessages", True)),
            poison_blob_threshold=int(blobs.get("poisonBlobThreshold", 5)),
            route_prefix=str(http.get("routePrefix", "api")),
            **({"max_degree_of_parallelism": int(blobs["maxDegreeOfParallelism"])}
               if "maxDegreeOfParallelism" in blobs else {}),
        )


@dataclass
class _BlobTriggerState:
    receipts: set[tuple[str, str]] = field(default_factory=set)   # (blob name, etag without quotes)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    journal: ReceiptJournal | None = None       # set once the stored receipts are loaded
    lock: threading.Lock = field(default_factory=threading.Lock)
    events: BlobEventReader | None = None       # Azurite's BlobCreated events, when the host has them
    listed_at: float | None = None              # monotonic time of the last complete listing
    retry: set[tuple[str, str]] = field(default_factory=set)    # failed, not yet poison: tried each pass


def _etag(value: str) -> str:
    """The ETag without its quotes: listings give ``0x8D…``, downloads and headers ``"0x8D…"``."""
    return value.strip('"')


def _pause_after(pass_seconds: float, invoked: int, interval: float) -> float:
    """How long the blob loop waits before its next pass.

    After a pass that found nothing, at least as long as that pass took: polling a big container
    then takes at most half of storage's time (Azure bounds its own scan at 10,000 blobs per
    10-second poll). After a pass that found work, the usual interval, so a stream of new blobs is
    picked up promptly."""
    return interval if invoked else max(interval, pass_seconds)


_ETAG_ELEMENT = re.compile(rb"<Etag>([^<]*)</Etag>")


def _listed_etags(names: list[str], body: bytes) -> list[tuple[str, str]]:
    """(name, ETag) of each blob of one List Blobs page: ``names`` as the SDK read them from
    ``body`` (an ``EnumerationResults`` document), the ETags from the same body in the same order.

    Only a blob's properties hold an ``Etag`` element, and an ETag has no characters XML escapes,
    so a scan finds them without parsing the page a second time (the SDK's parse of a 5,000-blob
    page costs ~90 ms of the interpreter the functions share). Should the counts differ, the page
    is parsed."""
    etags = [_etag(value.decode()) for value in _ETAG_ELEMENT.findall(body)]
    if len(etags) == len(names):
        return list(zip(names, etags))
    root = ElementTree.fromstring(body)
    return [(blob.findtext("Name", ""), _etag(blob.findtext("Properties/Etag", "")))
            for blob in root.iterfind("Blobs/Blob")]


class LocalFunctionsHost:
    """Runs one FunctionApp's functions locally; on demand (tests, ``--once``) or in the background."""

    def __init__(self, app: func.FunctionApp, env: Mapping[str, str], config: HostConfig | None = None,
                 *, host_id: str = "vmsnap-local", poll_interval: float = 0.5,
                 storage_client_options: Mapping[str, Any] | None = None):
        """``storage_client_options`` go to every blob client the host builds (e.g. azure-core's
        ``raw_request_hook`` or a transport), to observe or shape its storage traffic."""
        self.env = dict(env)
        self.storage_client_options = dict(storage_client_options or {})
        self.config = config or HostConfig()
        self.host_id = host_id
        self.poll_interval = poll_interval
        self.functions = {spec.name: spec for spec in read_functions(app)}
        for spec in self.functions.values():
            self._check_settings(spec)
        self._stop = threading.Event()
        self._stop_deadline = float("inf")      # set by stop(): when invocations under way are given up
        self._threads: list[threading.Thread] = []
        self._sb_clients: dict[str, Any] = {}
        self._blob_services: dict[str, Any] = {}
        self._blob_state: dict[str, _BlobTriggerState] = {}
        self._hosts_container = None
        self._lock = threading.Lock()
        self._blob_pool: ThreadPoolExecutor | None = None
        self._http: LocalHttpServer | None = None
        # FUNCTIONS_WORKER_PROCESS_COUNT: worker processes import the app by module, as Azure's do.
        self.worker_processes = process_count(self.env)
        self._app_ref = _app_reference(app) if self.worker_processes > 1 else ""
        self._workers: WorkerPool | None = None

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
        with self._receiver(spec, max_wait) as receiver:
            return self._serve(spec, receiver, max_wait, until_idle=True)

    def _receiver(self, spec: FunctionSpec, max_wait: float):
        from azure.servicebus import ServiceBusReceiveMode

        client = self._sb_client(spec.trigger["connection"])
        return client.get_queue_receiver(self.resolve(spec.trigger["queueName"], spec.name),
                                         receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
                                         max_wait_time=max_wait)

    def _serve(self, spec: FunctionSpec, receiver, max_wait: float, *, until_idle: bool) -> int:
        """Keep up to maxConcurrentCalls invocations in flight, taking more as each one ends, until
        the host stops (or, with ``until_idle``, the queue is empty); returns messages processed.

        Only this thread touches the receiver (the sync client is not thread-safe): invocations
        run on a pool and hand their outcome back through ``finished`` to be settled here, and the
        locks of the messages in flight are renewed here too (``devhost/locks.py`` says why)."""
        limit = self.config.max_concurrent_calls
        finished: queue.SimpleQueue = queue.SimpleQueue()
        locks = LockKeeper(receiver, self.config.max_lock_renewal)
        pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix=f"host-{spec.name}")
        in_flight = processed = 0
        try:
            while not self._stop.is_set():
                # Wait for a slot only when all are busy, and never past the next renewal.
                busy = in_flight >= limit
                in_flight -= self._settle(receiver, finished, locks, wait=locks.next_due(1.0) if busy else 0)
                locks.renew_due()
                if in_flight >= limit:
                    continue
                # While work is in flight, a short receive keeps settlement and renewal prompt.
                messages = receiver.receive_messages(max_message_count=limit - in_flight,
                                                     max_wait_time=max_wait if in_flight == 0 else 0.2)
                if not messages and until_idle and in_flight == 0:
                    break
                for message in messages:
                    locks.hold(message)
                    pool.submit(self._handle_message, spec, message, finished)
                in_flight += len(messages)
                processed += len(messages)
        finally:
            while in_flight and time.monotonic() < self._stop_deadline:
                in_flight -= self._settle(receiver, finished, locks, wait=min(locks.next_due(1.0), 0.5))
                locks.renew_due()
            # Past stop()'s grace the invocations still running are given up, as the Functions host ends
            # its worker: their messages come back when their locks run out.
            pool.shutdown(wait=not in_flight, cancel_futures=True)
        return processed

    def _handle_message(self, spec: FunctionSpec, message, finished: queue.SimpleQueue) -> None:
        ok = False
        try:
            ok = self._invoke_safely(spec, _to_function_message(message))
        except (TypeError, ValueError, UnicodeDecodeError):
            log.exception("function %s: message %s could not be decoded", spec.name, message.message_id)
        finally:
            finished.put((message, ok))     # always: the receiving loop counts every message back

    def _settle(self, receiver, finished: queue.SimpleQueue, locks: LockKeeper, *, wait: float) -> int:
        """Complete or abandon every invocation that has ended, waiting up to ``wait`` seconds for
        the first when none has; returns how many were settled."""
        settled = 0
        while True:
            try:
                message, ok = finished.get(timeout=wait) if wait > 0 and not settled else finished.get_nowait()
            except queue.Empty:
                return settled
            settled += 1
            locks.release(message)
            if not self.config.auto_complete:
                continue
            try:
                if ok:
                    receiver.complete_message(message)
                else:
                    receiver.abandon_message(message)
            except Exception as exc:  # a lost lock: Service Bus redelivers, as it does in Azure
                log.warning("could not settle message %s: %s", message.message_id, exc)

    def _queue_loop(self, spec: FunctionSpec) -> None:
        while not self._stop.is_set():
            try:
                with self._receiver(spec, 1.0) as receiver:
                    self._serve(spec, receiver, 1.0, until_idle=False)
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
        """One pass over the trigger's container: invoke for each new or changed blob, in parallel up
        to maxDegreeOfParallelism; returns invocations. Receipts are compared in memory.

        With Azurite's BlobCreated events (``AZURITE_BLOB_EVENTS``), a pass reads the writes since
        the last one and lists nothing; the container is listed on the first pass (what was written
        while the host was down) and every ``FULL_SCAN_SECONDS``. Without them, every pass lists."""
        spec = self._spec(name, "blobTrigger")
        container_name, pattern = _blob_path_pattern(self.resolve(spec.trigger["path"], name))
        container = self._blob_service(spec.trigger["connection"]).get_container_client(container_name)
        state = self._blob_trigger_state(name, container)
        if (state.events is None or state.listed_at is None
                or time.monotonic() - state.listed_at >= FULL_SCAN_SECONDS):
            return self._scan_listing(spec, container, pattern, state)
        since = time.time_ns()
        # Failed blobs are not written again: they are tried again from the retry set, each pass.
        items = [item for item in dict.fromkeys([*state.events.read(), *state.retry])
                 if pattern.fullmatch(item[0]) and item not in state.receipts]
        pool = self._blob_executor()
        futures = [pool.submit(self._fire_blob, spec, container, *item, state) for item in items]
        try:
            wait(futures)
        finally:
            self._store_receipts(state, None, since)
        return sum(future.result() for future in futures)

    def _scan_listing(self, spec: FunctionSpec, container, pattern: re.Pattern, state: _BlobTriggerState) -> int:
        """A pass that lists the whole container: one listing, receipts compared in memory."""
        from azure.core.exceptions import ResourceNotFoundError

        pool = self._blob_executor()
        futures, listed, since, complete = [], set(), time.time_ns(), False
        if state.events is not None:
            state.events.skip_to_end()      # what is written from now on is read from the events
        started = time.monotonic()
        try:
            # Invocations start while later pages are still being listed.
            for item in self._list_etags(container):
                if pattern.fullmatch(item[0]):
                    listed.add(item)
                    if item not in state.receipts:
                        futures.append(pool.submit(self._fire_blob, spec, container, *item, state))
            complete = True
        except ResourceNotFoundError:
            complete = True             # no container: nothing listed, every receipt is of a deleted blob
        finally:
            wait(futures)
            self._store_receipts(state, listed if complete else None, since)
        if complete:
            state.listed_at = started
        return sum(future.result() for future in futures)

    def acknowledge_blobs(self, name: str) -> int:
        """Take every blob now under the trigger's path as handled, without invoking: write the
        receipts it lacks; returns how many. For benchmarks that start from a container already full."""
        spec = self._spec(name, "blobTrigger")
        container_name, pattern = _blob_path_pattern(self.resolve(spec.trigger["path"], name))
        container = self._blob_service(spec.trigger["connection"]).get_container_client(container_name)
        state = self._blob_trigger_state(name, container)
        if state.events is not None:
            state.events.skip_to_end()
        started = time.monotonic()
        items = [item for item in self._list_etags(container)
                 if pattern.fullmatch(item[0]) and item not in state.receipts]
        state.listed_at = started       # a complete listing, as a pass's
        with state.lock:
            state.receipts |= set(items)
        assert state.journal is not None
        state.journal.extend(Receipt(blob, etag) for blob, etag in items)
        return len(items)

    def _blob_trigger_state(self, function: str, container) -> _BlobTriggerState:
        """The trigger's receipts, loaded from the host's storage on first use, and the reader of
        Azurite's BlobCreated events of its container, when the host's settings name the file."""
        with self._lock:
            state = self._blob_state.setdefault(function, _BlobTriggerState())
        with state.lock:
            if state.journal is None:
                journal = ReceiptJournal(self._receipts_container(), self.host_id, function,
                                         container.container_name)
                state.receipts |= {(r.blob, r.etag) for r in journal.load()}
                state.journal = journal
            if state.events is None and self.env.get(BLOB_EVENTS_SETTING):
                state.events = BlobEventReader(self.env[BLOB_EVENTS_SETTING], container.account_name,
                                               container.container_name)
        return state

    def _receipt(self, state: _BlobTriggerState, blob: str, etag: str, *, poison: bool = False) -> None:
        key = (blob, _etag(etag))
        with state.lock:
            state.receipts.add(key)
            state.retry.discard(key)
        assert state.journal is not None
        state.journal.add(Receipt(*key, poison))

    def _store_receipts(self, state: _BlobTriggerState, listed: set[tuple[str, str]] | None, since: int) -> None:
        """End of a pass: write the queued receipts; now and then replace the stored chunks by their
        union, dropping receipts of blobs a complete listing (``listed``) no longer showed."""
        journal = state.journal
        assert journal is not None
        if listed is not None and journal.compaction_due:
            dropped = journal.compact(listed, since)
            if dropped:
                with state.lock:
                    state.receipts -= dropped
        else:
            journal.flush()

    def _list_etags(self, container) -> Iterator[tuple[str, str]]:
        """(name, ETag without quotes) of every blob in the container, in listing order.

        ``list_blobs`` turns each listed blob into a model of some twenty properties, about 0.15 ms
        of CPU per blob (1.5 s for 10,000, more than Azurite spends serving them) on the
        interpreter the blob functions share. The SDK's names-only listing skips that model (its
        answer to azure-sdk-for-python#19755); the ETags are read from the same responses, which
        the SDK hands to a ``raw_response_hook``."""
        bodies: list[bytes] = []
        hook = self.storage_client_options.get("raw_response_hook")

        def keep(response) -> None:
            if hook is not None:
                hook(response)          # the client's own hook, which this per-call one replaces
            if response.http_response.status_code == 200:     # a retried attempt's error has no page
                bodies.append(response.http_response.body())

        for names in container.list_blob_names(results_per_page=LIST_PAGE, raw_response_hook=keep).by_page():
            body = bodies[-1]           # the page's last answer is the one the SDK read
            bodies.clear()
            yield from _listed_etags(list(names), body)

    def _blob_executor(self) -> ThreadPoolExecutor:
        # One pool for every blob function: the setting caps the app's blob invocations, as in Azure.
        with self._lock:
            if self._blob_pool is None:
                self._blob_pool = ThreadPoolExecutor(max_workers=self.config.max_degree_of_parallelism,
                                                     thread_name_prefix="host-blobs")
            return self._blob_pool

    def _fire_blob(self, spec: FunctionSpec, container, blob_name: str, etag: str, state: _BlobTriggerState) -> int:
        """Invoke for the version of the blob the listing showed (``etag``); a blob changed since is
        left to the next pass, which lists its new ETag."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        blob = container.get_blob_client(blob_name)
        try:
            # Only the listed version. The SDK reads an empty blob with a second request, after the
            # first one's 416; its result carries that second answer's ETag, but no content. Without
            # the condition, a write between the two would hand the function nothing under the
            # written version's ETag, and its receipt would hide the written content for good.
            downloader = blob.download_blob(etag=f'"{etag}"', match_condition=MatchConditions.IfNotModified)
            data = downloader.readall()
        except (ResourceNotFoundError, ResourceModifiedError):
            with state.lock:
                state.retry.discard((blob_name, etag))      # its next version is a write of its own
            return 0
        props = downloader.properties
        key = (blob_name, _etag(props.etag))
        if key in state.receipts:
            return 0
        stream = InputStream(
            data=data, name=f"{container.container_name}/{blob_name}", uri=blob.url, length=len(data),
            blob_properties={"ETag": props.etag, "Length": len(data), "BlobType": str(props.blob_type),
                             "LastModified": props.last_modified.isoformat() if props.last_modified else None},
            metadata=dict(props.metadata or {}))
        if self._invoke_safely(spec, stream):
            self._receipt(state, blob_name, props.etag)
            return 1
        with state.lock:
            failures = state.failures[key] = state.failures.get(key, 0) + 1
            state.retry.add(key)
        if failures >= self.config.poison_blob_threshold:
            log.error("blob %s/%s failed %d times; recorded as poison and not retried",
                      container.container_name, blob_name, failures)
            self._receipt(state, blob_name, props.etag, poison=True)
        return 1

    def _receipts_container(self):
        if self._hosts_container is None:
            container = self._host_blob_service().get_container_client(HOSTS_CONTAINER)
            _ensure_container(container)
            self._hosts_container = container
        return self._hosts_container

    def _blob_loop(self, spec: FunctionSpec) -> None:
        while not self._stop.is_set():
            started, invoked = time.monotonic(), []
            self._safe(lambda: invoked.append(self.scan_blobs(spec.name)))
            self._stop.wait(_pause_after(time.monotonic() - started, sum(invoked), self.poll_interval))

    def _blob_service(self, connection: str):
        from azure.storage.blob import BlobServiceClient

        with self._lock:
            if connection not in self._blob_services:
                # The app's transport (the environment read once per endpoint), unless the caller gives one.
                self._blob_services[connection] = BlobServiceClient.from_connection_string(
                    self.env[connection], **{"transport": storage_transport(), **self.storage_client_options})
            return self._blob_services[connection]

    def _host_blob_service(self):
        if not self.env.get("AzureWebJobsStorage"):
            raise ConfigurationError("setting AzureWebJobsStorage is missing; the host keeps its blob "
                                     "receipts and timer status there")
        return self._blob_service("AzureWebJobsStorage")

    # --- invocation ----------------------------------------------------------------------------
    def _invoke(self, spec: FunctionSpec, trigger_value: Any) -> None:
        """Run the function (in this process, or in a worker process when there are several) and
        send what its output bindings were given."""
        workers = self._worker_pool()
        if workers is None:
            captured = {b["name"]: _Capture() for b in spec.outputs}
            spec.call(**{spec.trigger["name"]: trigger_value}, **captured)
            outputs = {name: capture.values for name, capture in captured.items()}
        else:
            outputs = workers.invoke(spec.name, spec.trigger["name"], trigger_value,
                                     [b["name"] for b in spec.outputs])
        for binding in spec.outputs:
            values = outputs[binding["name"]]
            if binding["type"] == "serviceBus" and values:
                self._send_output(spec, binding, values)

    def _invoke_safely(self, spec: FunctionSpec, trigger_value: Any) -> bool:
        try:
            self._invoke(spec, trigger_value)
            return True
        except FunctionFailed as exc:
            log.error("function %s failed in a worker process: %s", spec.name, exc)
            return False
        except WorkerLost as exc:
            log.error("function %s: %s while running it", spec.name, exc)
            return False
        except Exception:
            log.exception("function %s failed", spec.name)
            return False

    def _worker_pool(self) -> WorkerPool | None:
        """The worker processes, started on first use; None when FUNCTIONS_WORKER_PROCESS_COUNT is 1
        (the functions then run in this process, on the host's threads)."""
        if self.worker_processes == 1:
            return None
        with self._lock:
            if self._workers is None:
                # HTTP triggers run in this process (serve_http), so only this process keeps the dashboard warm.
                self._workers = WorkerPool(self._app_ref, {**self.env, KEEP_WARM: "false"}, self.worker_processes)
            return self._workers

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

    # --- HTTP ----------------------------------------------------------------------------------
    def serve_http(self, port: int = 0) -> str:
        """Serve the app's HTTP triggers on 127.0.0.1 (``port`` 0: a free one) until ``stop``; returns the
        server's base address (``http://127.0.0.1:<port>``)."""
        if self._http is None:
            specs = [spec for spec in self.functions.values() if spec.trigger_type == "httpTrigger"]
            self._http = LocalHttpServer(specs, route_prefix=self.config.route_prefix, port=port).start()
        return self._http.url

    # --- background ----------------------------------------------------------------------------
    def start(self, *names: str) -> "LocalFunctionsHost":
        """Run the listeners of the named functions (default: every function) on threads of their own."""
        loops = {"timerTrigger": self._timer_loop, "serviceBusTrigger": self._queue_loop,
                 "blobTrigger": self._blob_loop}
        for spec in [self.functions[name] for name in names] if names else self.functions.values():
            loop = loops.get(spec.trigger_type)
            if spec.trigger_type == "httpTrigger":
                continue                # served by serve_http
            if loop is None:
                log.warning("function %s: trigger %s is not run by the local host", spec.name, spec.trigger_type)
                continue
            thread = threading.Thread(target=loop, args=(spec,), name=f"host-{spec.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, grace: float = 15.0) -> None:
        """Stop listening; invocations under way get ``grace`` seconds in all (not per listener) to end,
        as the Functions host gives its functions a shutdown timeout; what outlives it is given up."""
        deadline = self._stop_deadline = time.monotonic() + grace
        self._stop.set()
        if self._http is not None:
            self._http.stop()
            self._http = None
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        if self._blob_pool is not None:
            # Blobs not started yet are left for the next start (no receipt, so they come back); the
            # listener threads joined above have waited, within the grace, for those that started.
            self._blob_pool.shutdown(wait=False, cancel_futures=True)
            self._blob_pool = None
        if self._workers is not None:
            # Invocations under way end within what is left of the grace, or their worker is ended.
            self._workers.stop(max(1.0, deadline - time.monotonic()))
            self._workers = None
        for state in self._blob_state.values():
            state.listed_at = None      # a later start lists the container again, as at start-up
            journal, state.journal = state.journal, None    # a later start reloads, with new clients
            if journal is not None:
                journal.flush()         # what the last invocations handled; never raises
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
        specs.append(FunctionSpec(name=function.get_function_name() or "", trigger=trigger, outputs=outputs,
                                  call=function.get_user_function(), bindings=bindings))
    _specs_by_app[app] = specs
    return specs


def _app_reference(app: func.FunctionApp) -> str:
    """``module:attribute`` of the module global that holds ``app``: what worker processes import."""
    import sys

    for module_name, module in list(sys.modules.items()):
        for attribute, value in list(vars(module).items()):
            if value is app and module_name not in ("__main__", "__mp_main__"):
                return f"{module_name}:{attribute}"
    raise ConfigurationError(f"{PROCESS_COUNT_SETTING} asks for worker processes, and they import the app "
                             f"from its module: define the FunctionApp as a module global (function_app.py's app)")


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
