"""ServiceBusTaskQueue: the snapshot-tasks queue on Azure Service Bus (or the local server).

Sends in as few operations as Service Bus allows: immediate tasks go in ServiceBusMessageBatch
sends; tasks whose ``not_before`` lies ahead are scheduled, one schedule call per distinct time.
MessageId is the task's message id, so the queue's duplicate detection drops a re-send.

Shard requests of a tick that fans out go to the planner queue the same way, retention's part requests
to the retention queue, restore tasks to theirs.

One sender per queue stays open for the process (opening one costs the client about a second of AMQP
handshakes); sends are serialised on it, and a failed one drops it so the next send reopens.
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import datetime
from typing import Generic, Protocol, Sequence, TypeVar

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSender
from azure.servicebus.exceptions import MessageSizeExceededError, ServiceBusError

from shared.adapters.azure_errors import SERVICE_BUS_REFUSED_HINT, Failure, failure_of, translate
from shared.adapters.clients import HasCredential
from shared.clock import Clock, SystemClock
from shared.domain.disk_digest import DigestRequest
from shared.domain.progress import PlanRequest
from shared.domain.restore import RESTORE_TASK_SCHEMA, RestoreTask
from shared.domain.retention_progress import RetentionRequest
from shared.domain.task import SCHEMA, SnapshotTask
from shared.errors import ConfigurationError, TransientError
from shared.settings import Settings

log = logging.getLogger(__name__)

R = TypeVar("R", PlanRequest, RetentionRequest, DigestRequest)


class _CredentialAndClock(HasCredential, Protocol):
    @property
    def clock(self) -> Clock: ...


class _QueueSender:
    """One queue's sender, kept open and serialised; sends batches and scheduled groups."""

    def __init__(self, client: ServiceBusClient, queue_name: str):
        self.client = client
        self.queue = queue_name
        self._sender: ServiceBusSender | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Connect now rather than at the first send (the client opens its link lazily)."""
        with self._lock:
            if self._sender is None:
                self._sender = self.client.get_queue_sender(self.queue)
            self._sender.create_message_batch()      # needs the link's size limit, so it opens the link

    def send(self, immediate: Sequence[ServiceBusMessage], later: dict[datetime, list[ServiceBusMessage]],
             *, what: str) -> int:
        with self._lock:
            try:
                if self._sender is None:
                    self._sender = self.client.get_queue_sender(self.queue)
                operations = self._send_batched(self._sender, immediate)
                for when, group in sorted(later.items()):
                    self._sender.schedule_messages(group, when)
                    operations += 1
            except ServiceBusError as exc:
                self._drop_sender()
                if failure_of(exc) is not Failure.TRANSIENT:
                    raise translate(exc, f"sending to queue {self.queue}", service="Service Bus",
                                    refused_hint=SERVICE_BUS_REFUSED_HINT) from exc
                raise TransientError(f"could not send {what} to queue {self.queue}: "
                                     f"{type(exc).__name__}") from exc
        # DEBUG: every caller says what it sent (a tick's shards: one summary each, not one line per page).
        log.debug("sent %s to %s in %d operation(s)", what, self.queue, operations)
        return operations

    @staticmethod
    def _send_batched(sender: ServiceBusSender, messages: Sequence[ServiceBusMessage]) -> int:
        operations = 0
        batch = sender.create_message_batch()
        for message in messages:
            try:
                batch.add_message(message)
            except MessageSizeExceededError:
                sender.send_messages(batch)
                operations += 1
                batch = sender.create_message_batch()
                batch.add_message(message)
        if len(batch):
            sender.send_messages(batch)
            operations += 1
        return operations

    def close(self) -> None:
        with self._lock:
            self._drop_sender()
        self.client.close()

    def _drop_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            try:
                sender.close()
            except ServiceBusError:
                log.debug("closing a failed sender of %s failed too", self.queue)


def _client(settings: Settings, services: HasCredential) -> ServiceBusClient:
    conn = settings.service_bus_connection()
    if conn.connection_string:
        try:
            return ServiceBusClient.from_connection_string(conn.connection_string)
        except ValueError as exc:
            raise ConfigurationError(f"setting {conn.name} is not a Service Bus connection string "
                                     f"({exc}); expected Endpoint=sb://...;SharedAccessKeyName=...;"
                                     f"SharedAccessKey=...") from exc
    return ServiceBusClient(conn.endpoint("fullyQualifiedNamespace"), credential=services.credential)


class ServiceBusTaskQueue:
    def __init__(self, client: ServiceBusClient, queue_name: str, *, clock: Clock | None = None):
        self._queue = _QueueSender(client, queue_name)
        self._clock = clock or SystemClock()

    @classmethod
    def from_settings(cls, settings: Settings, services: _CredentialAndClock) -> ServiceBusTaskQueue:
        return cls(_client(settings, services), settings.tasks_queue, clock=services.clock)

    def send(self, tasks: Sequence[SnapshotTask]) -> int:
        if not tasks:
            return 0
        now = self._clock.now()
        immediate = [_message(t) for t in tasks if t.not_before is None or t.not_before <= now]
        later: dict[datetime, list[ServiceBusMessage]] = defaultdict(list)
        for task in tasks:
            if task.not_before is not None and task.not_before > now:
                later[task.not_before].append(_message(task))
        return self._queue.send(immediate, later, what=f"{len(tasks)} task(s)")

    def open(self) -> None:
        self._queue.open()

    def close(self) -> None:
        self._queue.close()


class ServiceBusRestoreQueue:
    """The restore-tasks queue: one message per restore job, and one per continuation of a long one."""

    def __init__(self, client: ServiceBusClient, queue_name: str):
        self._queue = _QueueSender(client, queue_name)

    @classmethod
    def from_settings(cls, settings: Settings, services: HasCredential) -> ServiceBusRestoreQueue:
        return cls(_client(settings, services), settings.restore_queue)

    def send(self, task: RestoreTask, *, not_before: datetime | None = None) -> None:
        message = ServiceBusMessage(task.to_json(), message_id=task.message_id, content_type="application/json",
                                    subject="restore", application_properties={"schema": RESTORE_TASK_SCHEMA,
                                                                               "jobId": task.job_id})
        if not_before is None:
            self._queue.send([message], {}, what=f"restore task {task.message_id}")
        else:
            self._queue.send([], {not_before: [message]}, what=f"restore task {task.message_id}")

    def close(self) -> None:
        self._queue.close()


class ServiceBusRequestQueue(Generic[R]):
    """A queue of work requests, one message each, sent in batches: a tick's shard requests (the planner
    queue), retention's part requests and continuations (the retention queue)."""

    def __init__(self, client: ServiceBusClient, queue_name: str, subject: str):
        self._queue = _QueueSender(client, queue_name)
        self._subject = subject

    def send(self, requests: Sequence[R]) -> int:
        if not requests:
            return 0
        messages = [ServiceBusMessage(r.to_json(), message_id=r.message_id, content_type="application/json",
                                      subject=self._subject) for r in requests]
        return self._queue.send(messages, {}, what=f"{len(requests)} {self._subject} request(s)")

    def open(self) -> None:
        self._queue.open()

    def close(self) -> None:
        self._queue.close()


class ServiceBusShardQueue(ServiceBusRequestQueue[PlanRequest]):
    @classmethod
    def from_settings(cls, settings: Settings, services: HasCredential) -> ServiceBusShardQueue:
        return cls(_client(settings, services), settings.planner_queue, "plan-shard")


class ServiceBusRetentionQueue(ServiceBusRequestQueue[RetentionRequest]):
    @classmethod
    def from_settings(cls, settings: Settings, services: HasCredential) -> ServiceBusRetentionQueue:
        return cls(_client(settings, services), settings.retention_queue, "retention")


class ServiceBusDigestQueue(ServiceBusRequestQueue[DigestRequest]):
    @classmethod
    def from_settings(cls, settings: Settings, services: HasCredential) -> ServiceBusDigestQueue:
        return cls(_client(settings, services), settings.digest_queue, "digest")


def _message(task: SnapshotTask) -> ServiceBusMessage:
    return ServiceBusMessage(
        task.to_json(),
        message_id=task.message_id,
        content_type="application/json",
        subject="snapshot",
        application_properties={"schema": SCHEMA, "vmName": task.vm_name, "jobId": task.job_id},
    )
