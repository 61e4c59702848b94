"""A local, in-memory stand-in for Azure Service Bus queues, for development and tests only.

It speaks AMQP 1.0 with the Service Bus dialect the unmodified ``azure-servicebus`` client (sync and
async) expects, so code under test uses the real SDK with a ``UseDevelopmentEmulator=true``
connection string. python-qpid-proton does the framing, SASL, sessions, links and flow control.
Embed it with ``LocalServiceBus`` or run it alone: ``python -m devhost.servicebus --port 5672``.

Supported: queues (declared, or created on first use), send and batch send, scheduled messages
(``schedule-message``, ``cancel-scheduled-message`` and the scheduled-enqueue-time annotation),
peek, peek-lock receive with lock expiry, ``renew-lock``, complete / abandon / dead-letter on the
receiver link or through ``update-disposition``, dead-lettering after MaxDeliveryCount, the
dead-letter sub-queue, receive-and-delete, and duplicate detection by MessageId. A receiver whose
connection ends (closed, or its process killed) leaves the rotation at once and its locked messages
are released as a lost lock is (delivery count + 1), so a dead host never starves a live one.

Not supported: sessions, topics and subscriptions, transactions, deferral (defer and
receive-by-sequence-number), message expiry (time_to_live is carried, never enforced), the HTTPS
administration API, TLS, authentication (SASL ANONYMOUS; every CBS token is accepted),
partitioning, auto-forwarding, quotas, and persistence (everything is lost on stop).
"""
from __future__ import annotations

import argparse
import errno
import functools
import heapq
import itertools
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Literal, NamedTuple
from urllib.parse import urlsplit

from proton import (Array, Condition, Data, DataException, Delivery, Described, Endpoint, Handler, Link,
                    Message, symbol, timestamp, uint, ulong, UNDESCRIBED)
from proton.reactor import ApplicationEvent, Container, EventInjector

log = logging.getLogger(__name__)

_TICK_SECONDS = 0.05          # granularity of lock expiry and scheduled enqueue
_INCOMING_CREDIT = 1000       # credit granted to client senders; topped up at half
_CLOSE_GRACE_SECONDS = 0.2    # on stop, how long clients get to answer our close
_STOP_EVENT = "servicebus_stop"
_CBS_NODE = "$cbs"
_MANAGEMENT_SUFFIX = "/$management"
_DEAD_LETTER_SUFFIX = "/$deadletterqueue"    # the client writes "$DeadLetterQueue": compared lowercased

# Message sections (AMQP 1.0 part 3.2), by descriptor code.
_HEADER, _DELIVERY_ANNOTATIONS, _MESSAGE_ANNOTATIONS, _PROPERTIES, _APPLICATION_PROPERTIES = range(0x70, 0x75)
_DATA, _AMQP_SEQUENCE, _AMQP_VALUE, _FOOTER = range(0x75, 0x79)

_SEQUENCE_NUMBER = symbol("x-opt-sequence-number")
_ENQUEUED_TIME = symbol("x-opt-enqueued-time")
_LOCKED_UNTIL = symbol("x-opt-locked-until")
_SCHEDULED_ENQUEUE_TIME = symbol("x-opt-scheduled-enqueue-time")
_MESSAGE_STATE = symbol("x-opt-message-state")
_ACTIVE, _SCHEDULED = 0, 2        # values of x-opt-message-state the client maps to ServiceBusMessageState

_DEAD_LETTER_REASON = "DeadLetterReason"
_DEAD_LETTER_DESCRIPTION = "DeadLetterErrorDescription"
_LOCK_LOST = "com.microsoft:message-lock-lost"
_MESSAGE_NOT_FOUND = "com.microsoft:message-not-found"
_NOT_IMPLEMENTED = "amqp:not-implemented"
_NOT_ALLOWED = "amqp:not-allowed"
_INVALID_FIELD = "amqp:invalid-field"
_DECODE_ERROR = "amqp:decode-error"

_COMPLETE, _ABANDON, _RELEASE, _DEAD_LETTER = "complete", "abandon", "release", "dead-letter"
# update-disposition spells outcomes the service's way (and "defered" is the wire spelling).
_DISPOSITION_STATUS = {"completed": _COMPLETE, "abandoned": _ABANDON, "suspended": _DEAD_LETTER}


@dataclass
class QueueOptions:
    """Per-queue behaviour; a zero duplicate_detection_window turns duplicate detection off."""

    lock_duration: timedelta = timedelta(seconds=30)
    max_delivery_count: int = 10
    duplicate_detection_window: timedelta = timedelta(minutes=10)


class PortInUseError(OSError):
    """The listening port is taken by another process (or another LocalServiceBus)."""

    def __init__(self, host: str, port: int):
        super().__init__(errno.EADDRINUSE,
                         f"port {port} is in use; stop what holds it or set another port (0 picks a free one)")
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return self.strerror


class _MalformedMessage(ValueError):
    """A transfer or management payload that is not a well-formed AMQP message."""


class _SettlementError(Exception):
    """A settlement the broker refuses; condition and description go back to the client."""

    def __init__(self, condition: str, description: str):
        super().__init__(description)
        self.condition = condition
        self.description = description


# --- message encoding -----------------------------------------------------------------------


def _detached(value: Any) -> Any:
    """Copy binary values out of proton: ``Data.get_object`` returns memoryviews into buffers that
    proton frees together with the ``Data`` object."""
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, dict):
        return {_detached(k): _detached(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_detached(v) for v in value]
    if isinstance(value, Described):
        return Described(value.descriptor, _detached(value.value))
    if isinstance(value, Array):
        return Array(value.descriptor, value.type, *(_detached(v) for v in value.elements))
    return value


def _encode(value: Any) -> bytes:
    data = Data()
    data.put_object(value)
    return data.encode()


def _read_sections(payload: bytes) -> list[tuple[int, Any, bytes]]:
    """Split an encoded message into (descriptor code, decoded value, exact bytes) per section."""
    view = memoryview(payload)
    sections = []
    offset = 0
    while offset < len(view):
        # Check the section header before decoding: arbitrary bytes (a body tested for being a
        # batched message) can decode as values proton cannot turn into Python objects. AMQP
        # clients encode section descriptors as small ulongs: 0x00 0x53 <code>.
        start = view[offset:offset + 3].tobytes()
        if len(start) < 3 or start[:2] != b"\x00\x53" or not _HEADER <= start[2] <= _FOOTER:
            raise _MalformedMessage(f"byte {offset} does not start a message section")
        data = Data()
        try:
            used = data.decode(view[offset:])
            data.rewind()
            data.next()
            value = _detached(data.get_object())
        except (DataException, ValueError) as exc:
            raise _MalformedMessage(f"undecodable message section at byte {offset}") from exc
        sections.append((start[2], value.value, view[offset:offset + used].tobytes()))
        offset += used
    if not sections:
        raise _MalformedMessage("empty message")
    return sections


def _elements(value: Any) -> list:
    """Management requests send lists as AMQP arrays; accept either."""
    return list(value.elements) if isinstance(value, Array) else list(value or [])


def _text(value: Any) -> str | None:
    """The client sends some application-property strings as binary."""
    return value.decode() if isinstance(value, (bytes, bytearray)) else (None if value is None else str(value))


@dataclass
class _StoredMessage:
    """A message as the broker keeps it. Properties and body stay byte-for-byte as sent; the
    header and message annotations are rewritten on every delivery."""

    header: list
    annotations: dict
    properties_raw: bytes
    application_properties: dict | None
    body_raw: bytes
    message_id: Any
    sequence_number: int = 0
    enqueued_ms: int = 0
    delivery_count: int = 0
    scheduled: bool = False
    lock_token: uuid.UUID | None = None
    locked_until_ms: int = 0

    @classmethod
    def parse(cls, payload: bytes) -> "_StoredMessage":
        return cls.from_sections(_read_sections(payload))

    @classmethod
    def from_sections(cls, sections: list[tuple[int, Any, bytes]]) -> "_StoredMessage":
        header, annotations, properties_raw, application_properties, body = [], {}, b"", None, []
        message_id = None
        for code, value, raw in sections:
            if code == _HEADER:
                header = list(value or [])
            elif code == _MESSAGE_ANNOTATIONS:
                annotations = dict(value or {})
            elif code == _PROPERTIES:
                properties_raw = raw
                message_id = value[0] if value else None
            elif code == _APPLICATION_PROPERTIES:
                application_properties = dict(value or {})
            elif code != _DELIVERY_ANNOTATIONS:     # delivery annotations are hop-by-hop: dropped
                body.append(raw)
        return cls(header, annotations, properties_raw, application_properties, b"".join(body), message_id)

    @property
    def scheduled_enqueue_ms(self) -> int | None:
        value = self.annotations.get(_SCHEDULED_ENQUEUE_TIME)
        return int(value) if value is not None else None

    def encode(self, *, locked_until_ms: int = 0) -> bytes:
        # The client reads delivery-count straight from the header and does not default a
        # missing field, so the header is always written with the count in place.
        header = (self.header + [None] * 5)[:5]
        header[4] = uint(self.delivery_count)
        annotations = {**self.annotations,
                       _SEQUENCE_NUMBER: self.sequence_number,
                       _ENQUEUED_TIME: timestamp(self.enqueued_ms),
                       _MESSAGE_STATE: _SCHEDULED if self.scheduled else _ACTIVE}
        if locked_until_ms:
            annotations[_LOCKED_UNTIL] = timestamp(locked_until_ms)
        parts = [_encode(Described(ulong(_HEADER), header)),
                 _encode(Described(ulong(_MESSAGE_ANNOTATIONS), annotations)),
                 self.properties_raw]
        if self.application_properties is not None:
            parts.append(_encode(Described(ulong(_APPLICATION_PROPERTIES), self.application_properties)))
        parts.append(self.body_raw)
        return b"".join(parts)


def _messages_in(payload: bytes) -> list[_StoredMessage]:
    """The messages in one transfer. A ServiceBusMessageBatch arrives as an envelope whose body
    is data sections, each one encoded message; the envelope carries only the first message's
    id. Proton does not expose the transfer's message-format, which marks batches, so recognise
    that shape (a single message's own id never matches one inside its body by accident)."""
    sections = _read_sections(payload)
    envelope = _StoredMessage.from_sections(sections)
    if any(code in (_HEADER, _APPLICATION_PROPERTIES, _AMQP_SEQUENCE, _AMQP_VALUE) for code, _, _ in sections):
        return [envelope]
    try:
        inner = [_StoredMessage.parse(value) for code, value, _ in sections if code == _DATA]
    except _MalformedMessage:
        return [envelope]
    return inner if inner and inner[0].message_id == envelope.message_id else [envelope]


# --- broker state: Service Bus semantics, no I/O --------------------------------------------


class _Queue:
    """A queue or its dead-letter sub-queue (which has no dead-letter queue of its own)."""

    def __init__(self, name: str, options: QueueOptions, dead_letter: "_Queue | None"):
        self.name = name
        self.options = options
        self.dead_letter = dead_letter
        self.sequence = itertools.count(1)
        self.available: list[tuple[int, _StoredMessage]] = []   # heap: redelivery keeps queue order
        self.locked: dict[uuid.UUID, _StoredMessage] = {}
        self.scheduled: dict[int, _StoredMessage] = {}
        self.recent_ids: dict[Any, tuple[int, int]] = {}         # message id -> (first seen, sequence)

    def make_available(self, message: _StoredMessage) -> None:
        message.lock_token, message.locked_until_ms = None, 0
        heapq.heappush(self.available, (message.sequence_number, message))

    @property
    def active_count(self) -> int:
        return len(self.available) + len(self.locked)


def _entity_path(address: str) -> str:
    """``amqps://host:port/q``, ``sb://host/q`` and ``q`` all name queue ``q``."""
    return urlsplit(address).path.strip("/") if "://" in address else address.strip("/")


class _Broker:
    """All queue state. The container thread mutates it and the inspection helpers read it from
    other threads, so every public method takes the lock."""

    _COUNTERS = ("connections", "cbs_requests", "management_requests", "transfers_in", "messages_in",
                 "duplicates_dropped", "deliveries_out", "completed", "abandoned", "dead_lettered",
                 "lock_expirations", "lock_renewals", "locks_released")

    def __init__(self, queues: dict[str, QueueOptions], default_options: QueueOptions, auto_create: bool,
                 clock: Callable[[], float] = time.time):
        self._lock = threading.RLock()
        self._stats = Counter({name: 0 for name in self._COUNTERS})
        self._default_options = default_options
        self._auto_create = auto_create
        self._clock = clock
        self._queues: dict[str, _Queue] = {}
        for name, options in queues.items():
            self._create(name, options)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _lock_expiry(self, queue: _Queue) -> int:
        return self._now_ms() + int(queue.options.lock_duration.total_seconds() * 1000)

    def _create(self, name: str, options: QueueOptions) -> _Queue:
        dead_letter = _Queue(f"{name}/$DeadLetterQueue", options, None)
        queue = self._queues[name.lower()] = _Queue(name, options, dead_letter)
        log.info("queue %s created", name)
        return queue

    def count(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._stats[counter] += n

    def resolve(self, address: str) -> _Queue | None:
        """The queue (or dead-letter sub-queue) an address names; entity names are case-insensitive."""
        path = _entity_path(address)
        dead_letter = path.lower().endswith(_DEAD_LETTER_SUFFIX)
        name = path[:-len(_DEAD_LETTER_SUFFIX)] if dead_letter else path
        if not name or "/" in name:
            return None
        with self._lock:
            queue = self._queues.get(name.lower())
            if queue is None and self._auto_create:
                queue = self._create(name, self._default_options)
        return queue.dead_letter if queue and dead_letter else queue

    def _entities(self) -> list[_Queue]:
        return [q for queue in self._queues.values() for q in (queue, queue.dead_letter)]

    # sending

    def send(self, queue: _Queue, payload: bytes) -> None:
        """Enqueue every message of one transfer; parse them all first so a bad batch adds none."""
        messages = _messages_in(payload)
        with self._lock:
            self._stats["transfers_in"] += 1
            for message in messages:
                self._accept(queue, message)

    def schedule(self, queue: _Queue, payloads: list[bytes]) -> list[int]:
        messages = [_StoredMessage.parse(payload) for payload in payloads]
        with self._lock:
            return [self._accept(queue, message) for message in messages]

    def _accept(self, queue: _Queue, message: _StoredMessage) -> int:
        """Enqueue (or schedule) one message; returns its sequence number, or that of the
        original when it is a duplicate, which is dropped as Service Bus does."""
        now = self._now_ms()
        original = self._duplicate_of(queue, message.message_id, now)
        if original is not None:
            self._stats["duplicates_dropped"] += 1
            log.debug("queue %s: dropped duplicate of message id %s", queue.name, message.message_id)
            return original
        message.sequence_number = next(queue.sequence)
        self._stats["messages_in"] += 1
        if message.message_id is not None and queue.options.duplicate_detection_window:
            queue.recent_ids[message.message_id] = (now, message.sequence_number)
        due = message.scheduled_enqueue_ms
        message.enqueued_ms = max(now, due or 0)
        if due is not None and due > now:
            message.scheduled = True
            queue.scheduled[message.sequence_number] = message
        else:
            queue.make_available(message)
        return message.sequence_number

    def _duplicate_of(self, queue: _Queue, message_id: Any, now: int) -> int | None:
        window_ms = queue.options.duplicate_detection_window.total_seconds() * 1000
        recent = queue.recent_ids
        # Insertion order is arrival order, so expired ids are all at the front.
        while recent:
            oldest = next(iter(recent))
            if now - recent[oldest][0] < window_ms:
                break
            del recent[oldest]
        return recent[message_id][1] if message_id in recent else None

    def cancel_scheduled(self, queue: _Queue, sequence_numbers: list[int]) -> None:
        with self._lock:
            missing = [n for n in sequence_numbers if n not in queue.scheduled]
            if missing:
                raise _SettlementError(_MESSAGE_NOT_FOUND, f"no scheduled message with sequence number {missing}")
            for number in sequence_numbers:
                del queue.scheduled[number]

    # receiving

    def take(self, queue: _Queue, *, lock: bool) -> tuple[bytes, uuid.UUID | None] | None:
        """The next available message, encoded, locked to a new token in peek-lock mode and
        removed in receive-and-delete mode; None when nothing is available."""
        with self._lock:
            if not queue.available:
                return None
            _, message = heapq.heappop(queue.available)
            self._stats["deliveries_out"] += 1
            if not lock:
                return message.encode(), None
            message.lock_token = uuid.uuid4()
            message.locked_until_ms = self._lock_expiry(queue)
            queue.locked[message.lock_token] = message
            return message.encode(locked_until_ms=message.locked_until_ms), message.lock_token

    def peek(self, queue: _Queue, from_sequence_number: int, count: int) -> list[bytes]:
        """Peek shows active, locked and scheduled messages alike, without locking any."""
        with self._lock:
            everything = [m for _, m in queue.available] + [*queue.locked.values(), *queue.scheduled.values()]
            chosen = sorted((m for m in everything if m.sequence_number >= from_sequence_number),
                            key=lambda m: m.sequence_number)[:count]
            return [message.encode() for message in chosen]

    def settle(self, queue: _Queue, token: uuid.UUID, outcome: str, *,
               reason: str | None = None, description: str | None = None) -> None:
        with self._lock:
            message = queue.locked.pop(token, None)
            if message is None:
                raise _SettlementError(_LOCK_LOST, "The lock on the message is lost: it expired or the "
                                                   "message was already settled.")
            if outcome == _COMPLETE:
                self._stats["completed"] += 1
            elif outcome == _ABANDON:
                self._stats["abandoned"] += 1
                self._unlock(queue, message, failed=True)
            elif outcome == _DEAD_LETTER:
                if queue.dead_letter is None:
                    queue.locked[token] = message
                    raise _SettlementError(_NOT_ALLOWED, "A dead-lettered message cannot be dead-lettered again.")
                self._dead_letter(queue, message, reason, description)
            else:
                self._unlock(queue, message, failed=False)

    def renew(self, queue: _Queue, token: uuid.UUID) -> int:
        with self._lock:
            message = queue.locked.get(token)
            if message is None:
                raise _SettlementError(_LOCK_LOST, "The lock on the message is lost; it cannot be renewed.")
            message.locked_until_ms = self._lock_expiry(queue)
            self._stats["lock_renewals"] += 1
            return message.locked_until_ms

    def release(self, queue: _Queue, tokens: set[uuid.UUID]) -> int:
        """Unlock the messages of a receiver that is gone, as a lost lock does in Service Bus
        (delivery count + 1); tokens already settled or expired are skipped. Returns how many."""
        with self._lock:
            released = 0
            for token in tokens:
                message = queue.locked.pop(token, None)
                if message is not None:
                    released += 1
                    self._unlock(queue, message, failed=True)
            self._stats["locks_released"] += released
            return released

    def _unlock(self, queue: _Queue, message: _StoredMessage, *, failed: bool) -> None:
        if failed:
            message.delivery_count += 1
            limit = queue.options.max_delivery_count
            if queue.dead_letter is not None and message.delivery_count >= limit:
                self._dead_letter(queue, message, "MaxDeliveryCountExceeded",
                                  f"Message could not be consumed after {limit} delivery attempts.")
                return
        queue.make_available(message)

    def _dead_letter(self, queue: _Queue, message: _StoredMessage, reason: str | None,
                     description: str | None) -> None:
        properties = dict(message.application_properties or {})
        for key, value in ((_DEAD_LETTER_REASON, reason), (_DEAD_LETTER_DESCRIPTION, description)):
            if value is not None:
                properties[key] = value
        message.application_properties = properties
        self._stats["dead_lettered"] += 1
        log.debug("queue %s: message %s dead-lettered (%s)", queue.name, message.sequence_number, reason)
        queue.dead_letter.make_available(message)

    def tick(self) -> None:
        """Expire locks and enqueue scheduled messages that are due. A plain scan: local queues
        hold thousands of messages at most."""
        now = self._now_ms()
        with self._lock:
            for queue in self._entities():
                for token in [t for t, m in queue.locked.items() if m.locked_until_ms <= now]:
                    self._stats["lock_expirations"] += 1
                    self._unlock(queue, queue.locked.pop(token), failed=True)
                for number in [n for n, m in queue.scheduled.items() if m.enqueued_ms <= now]:
                    message = queue.scheduled.pop(number)
                    message.scheduled = False
                    queue.make_available(message)

    # inspection

    def _find(self, name: str) -> _Queue | None:
        return self._queues.get(name.lower())

    def depth(self, name: str, *, dead_letter: bool = False) -> int:
        with self._lock:
            queue = self._find(name)
            if queue is None:
                return 0
            return (queue.dead_letter if dead_letter else queue).active_count

    def scheduled_count(self, name: str) -> int:
        with self._lock:
            queue = self._find(name)
            return len(queue.scheduled) if queue else 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)


# --- AMQP: proton events to broker operations -----------------------------------------------


@dataclass
class _LinkRole:
    """What a link is for. Proton keeps attributes set on its wrappers in the C object's record,
    so this lives and dies with the link."""

    kind: Literal["cbs", "management", "send", "receive"]   # send: client to us; receive: us to client
    address: str
    queue: _Queue | None = None
    locks: set[uuid.UUID] = field(default_factory=set)      # delivered on this link, not yet settled on it


class _Reply(NamedTuple):
    status: int
    body: Any = None
    description: str = "OK"
    condition: str | None = None


def _guarded(handle: Callable) -> Callable:
    """For event handlers that act on client input: an unexpected failure costs that client its
    connection (with the error logged and sent to it), not every client the server thread."""

    @functools.wraps(handle)
    def guarded(self, event) -> None:
        try:
            handle(self, event)
        except Exception:
            log.exception("local Service Bus failed on %s; closing that connection", event.type)
            if event.connection is not None:
                _close_with_error(event.connection, "amqp:internal-error", "The local Service Bus failed; see its log.")

    return guarded


def _close_with_error(connection, condition: str, description: str) -> None:
    # The client reads the error's info field without checking it is there, so always send one.
    connection.condition = Condition(condition, description, {symbol("reason"): description})
    connection.close()


def _is_open(link: Link) -> bool:
    return bool(link.state & Endpoint.LOCAL_ACTIVE and link.state & Endpoint.REMOTE_ACTIVE)


class _AmqpHandler(Handler):
    """Runs only on the container thread; the broker is the only state it shares."""

    def __init__(self, broker: _Broker):
        super().__init__()
        self._broker = broker
        self._consumers: dict[_Queue, list[Link]] = {}
        self._connections: set = set()
        self._tick_task = None
        self._stopping = False
        self._container: Container | None = None
        self._acceptor = None
        self._injector: EventInjector | None = None
        self._operations: dict[str, Callable[[_Queue, dict], _Reply]] = {
            "com.microsoft:peek-message": self._peek,
            "com.microsoft:schedule-message": self._schedule,
            "com.microsoft:cancel-scheduled-message": self._cancel_scheduled,
            "com.microsoft:renew-lock": self._renew_lock,
            "com.microsoft:update-disposition": self._update_disposition,
        }

    def bind(self, container: Container, acceptor, injector: EventInjector) -> None:
        self._container, self._acceptor, self._injector = container, acceptor, injector

    # lifecycle

    def on_reactor_init(self, event) -> None:
        self._tick_task = self._container.schedule(_TICK_SECONDS, self)

    @_guarded
    def on_timer_task(self, event) -> None:
        if self._stopping:
            self._abort_connections()
            return
        self._broker.tick()
        self._pump(*self._consumers)
        self._tick_task = self._container.schedule(_TICK_SECONDS, self)

    def on_servicebus_stop(self, event) -> None:
        self._stopping = True
        self._tick_task.cancel()
        self._acceptor.close()
        self._injector.close()
        for connection in list(self._connections):
            _close_with_error(connection, "amqp:connection:forced", "The local Service Bus stopped.")
        self._container.schedule(_CLOSE_GRACE_SECONDS, self)

    def _abort_connections(self) -> None:
        """Drop connections whose client has not answered our close: clients only read when
        their thread next polls, and the container cannot finish while a socket is open."""
        for connection in list(self._connections):
            transport = connection.transport
            if transport is not None:
                transport.close_tail()
                transport.close_head()

    # connection, session and link state

    def on_connection_bound(self, event) -> None:
        # The client always signs in with SASL ANONYMOUS; authorisation is the CBS token.
        event.transport.sasl().allowed_mechs("ANONYMOUS")
        self._connections.add(event.connection)
        self._broker.count("connections")

    def on_transport_closed(self, event) -> None:
        connection = event.connection
        self._connections.discard(connection)
        if connection is not None:
            self._drop_receivers(connection)

    def _drop_receivers(self, connection) -> None:
        """A connection that ended (closed, or its process died) takes its receive links out of the
        rotation and gives back the messages they held locked: nobody can settle them any more, and
        waiting for the locks to expire would starve the receivers still alive."""
        link = connection.link_head(0)
        while link is not None:
            role = getattr(link, "servicebus_role", None)
            if role is not None and role.kind == "receive":
                consumers = self._consumers.get(role.queue, [])
                if link in consumers:
                    consumers.remove(link)
                released = self._broker.release(role.queue, role.locks)
                role.locks.clear()
                if released:
                    log.info("queue %s: a receiver's connection ended; %d locked message(s) released",
                             role.queue.name, released)
                # No pump here: the next tick hands them on, by when the other connections of
                # receivers that died together (a killed host) have been dropped as well.
            link = link.next(0)

    def on_transport_error(self, event) -> None:
        condition = event.transport.condition
        log.debug("connection dropped: %s", condition.description if condition else "no reason given")

    def on_connection_remote_open(self, event) -> None:
        if event.connection.state & Endpoint.LOCAL_UNINIT:
            event.connection.open()

    def on_session_remote_open(self, event) -> None:
        if event.session.state & Endpoint.LOCAL_UNINIT:
            event.session.open()

    @_guarded
    def on_link_remote_open(self, event) -> None:
        link = event.link
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        address = (link.remote_target if link.is_receiver else link.remote_source).address or ""
        role = self._role_of(link, address)
        # The client rejects an attach reply that lacks either terminus, so both are echoed; a
        # refused link (AMQP: our terminus null, then a detach with the error) keeps ours null.
        if role is not None or link.is_receiver:
            link.source.copy(link.remote_source)
        if role is not None or link.is_sender:
            link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        link.open()
        if role is None:
            link.condition = Condition("amqp:not-found", f"The messaging entity '{address}' could not be found.")
            link.close()
            return
        link.servicebus_role = role
        if link.is_receiver:
            link.flow(_INCOMING_CREDIT)
        elif role.kind == "receive":
            self._consumers.setdefault(role.queue, []).append(link)

    def _role_of(self, link: Link, address: str) -> _LinkRole | None:
        if address == _CBS_NODE:
            return _LinkRole("cbs", address)
        if address.lower().endswith(_MANAGEMENT_SUFFIX):
            queue = self._broker.resolve(address[:-len(_MANAGEMENT_SUFFIX)])
            return _LinkRole("management", address, queue) if queue else None
        queue = self._broker.resolve(address)
        return _LinkRole("send" if link.is_receiver else "receive", address, queue) if queue else None

    def on_link_remote_close(self, event) -> None:
        # A link detached on a live connection keeps its locks until they expire, as in Service
        # Bus: the client may still settle them through $management. A connection that ends
        # releases them (_drop_receivers).
        if not event.link.state & Endpoint.LOCAL_CLOSED:
            event.link.close()

    def on_session_remote_close(self, event) -> None:
        if not event.session.state & Endpoint.LOCAL_CLOSED:
            event.session.close()

    def on_connection_remote_close(self, event) -> None:
        if not event.connection.state & Endpoint.LOCAL_CLOSED:
            event.connection.close()

    @_guarded
    def on_link_flow(self, event) -> None:
        role = getattr(event.link, "servicebus_role", None)
        if role is not None and role.kind == "receive":
            self._pump(role.queue)

    # deliveries

    @_guarded
    def on_delivery(self, event) -> None:
        delivery, link = event.delivery, event.link
        role = getattr(link, "servicebus_role", None)
        if role is None:
            return
        if link.is_sender:
            self._on_disposition(role, delivery)
            return
        if delivery.aborted:
            delivery.settle()
            return
        if not delivery.readable or delivery.partial:
            return
        payload = bytes(link.recv(delivery.pending) or b"")
        link.advance()
        if link.credit < _INCOMING_CREDIT // 2:
            link.flow(_INCOMING_CREDIT - link.credit)
        if role.kind == "send":
            self._on_send(role.queue, delivery, payload)
        else:
            delivery.update(Delivery.ACCEPTED)
            delivery.settle()
            self._on_request(role, link, payload)

    def _on_send(self, queue: _Queue, delivery: Delivery, payload: bytes) -> None:
        try:
            self._broker.send(queue, payload)
        except _MalformedMessage as exc:
            log.warning("queue %s: rejected a transfer: %s", queue.name, exc)
            delivery.local.condition = Condition(_DECODE_ERROR, str(exc))
            delivery.update(Delivery.REJECTED)
        else:
            delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        self._pump(queue)

    def _pump(self, *queues: _Queue | None) -> None:
        """Hand available messages to each queue's open receiver links, one per link in turn."""
        for queue in queues:
            if queue is not None:
                self._pump_queue(queue)

    def _pump_queue(self, queue: _Queue) -> None:
        links = self._consumers[queue] = [link for link in self._consumers.get(queue, []) if _is_open(link)]
        delivered = True
        while delivered:
            delivered = False
            for link in links:
                if link.credit > 0 and self._deliver_next(link, queue):
                    delivered = True
        for link in links:
            if link.drain_mode and link.credit > 0:
                link.drained()

    def _deliver_next(self, link: Link, queue: _Queue) -> bool:
        presettled = link.snd_settle_mode == Link.SND_SETTLED     # receive-and-delete
        taken = self._broker.take(queue, lock=not presettled)
        if taken is None:
            return False
        payload, token = taken
        # The lock token travels as the delivery tag; the client reads it as a little-endian UUID.
        delivery = link.delivery((token or uuid.uuid4()).bytes_le)
        link.send(payload)
        link.advance()
        if token is None:
            delivery.settle()
        else:
            delivery.servicebus_lock = token
            role: _LinkRole = link.servicebus_role
            role.locks.add(token)
            if len(role.locks) > 4 * _INCOMING_CREDIT:
                # Settled through $management or expired: forget them, so a long-lived link's
                # record stays the size of what it actually holds.
                role.locks.intersection_update(queue.locked)
        return True

    def _on_disposition(self, role: _LinkRole, delivery: Delivery) -> None:
        token = getattr(delivery, "servicebus_lock", None)
        state = delivery.remote_state
        if token is None or state not in (Delivery.ACCEPTED, Delivery.REJECTED, Delivery.MODIFIED,
                                          Delivery.RELEASED):
            return
        role.locks.discard(token)
        try:
            if state == Delivery.ACCEPTED:
                self._broker.settle(role.queue, token, _COMPLETE)
            elif state == Delivery.REJECTED:
                info = (delivery.remote.condition.info or {}) if delivery.remote.condition else {}
                self._broker.settle(role.queue, token, _DEAD_LETTER, reason=_text(info.get(_DEAD_LETTER_REASON)),
                                    description=_text(info.get(_DEAD_LETTER_DESCRIPTION)))
            elif state == Delivery.MODIFIED and delivery.remote.undeliverable:
                raise _SettlementError(_NOT_IMPLEMENTED, "The local Service Bus does not support deferral.")
            else:
                failed = state == Delivery.MODIFIED and delivery.remote.failed
                self._broker.settle(role.queue, token, _ABANDON if failed else _RELEASE)
            # The client awaits the echo of the outcome it asked for (receiver settle mode
            # second); a rejected echo must carry no error, or the client reports a failure.
            if state == Delivery.MODIFIED:
                delivery.local.failed = delivery.remote.failed
            delivery.update(state)
        except _SettlementError as exc:
            delivery.local.condition = Condition(exc.condition, exc.description)
            delivery.update(Delivery.REJECTED)
        delivery.settle()
        self._pump(role.queue, role.queue.dead_letter)

    # CBS and management requests

    def _on_request(self, role: _LinkRole, link: Link, payload: bytes) -> None:
        request = Message()
        request.decode(payload)
        if role.kind == "cbs":
            # Every token is accepted: the server does no authorisation.
            self._broker.count("cbs_requests")
            properties = {"status-code": 202, "status-description": "Accepted"}
            self._respond(link, role.address, request, properties, None)
            return
        self._broker.count("management_requests")
        operation = _text((request.properties or {}).get("operation"))
        reply = self._manage(role.queue, operation, _detached(request.body))
        properties = {"statusCode": reply.status, "statusDescription": reply.description}
        if reply.condition:
            properties["errorCondition"] = symbol(reply.condition)
        self._respond(link, role.address, request, properties, reply.body)

    def _respond(self, link: Link, address: str, request: Message, properties: dict, body: Any) -> None:
        # The client pairs each request link with a response link attached to the same node.
        mask = Endpoint.LOCAL_ACTIVE | Endpoint.REMOTE_ACTIVE
        candidate = link.connection.link_head(mask)
        while candidate is not None:
            role = getattr(candidate, "servicebus_role", None)
            if candidate.is_sender and role is not None and role.address == address:
                response = Message(body=body, correlation_id=request.id, properties=properties)
                candidate.send(response).settle()
                return
            candidate = candidate.next(mask)
        log.warning("no response link for %s on this connection; dropped the response", address)

    def _manage(self, queue: _Queue, operation: str | None, body: Any) -> _Reply:
        handler = self._operations.get(operation or "")
        if handler is None:
            return _Reply(501, None, f"The local Service Bus does not support {operation}.", _NOT_IMPLEMENTED)
        try:
            return handler(queue, body if isinstance(body, dict) else {})
        except _SettlementError as exc:
            status = 410 if exc.condition == _LOCK_LOST else 404 if exc.condition == _MESSAGE_NOT_FOUND else 400
            return _Reply(status, None, exc.description, exc.condition)
        except (_MalformedMessage, KeyError, TypeError, ValueError) as exc:
            return _Reply(400, None, f"Malformed {operation} request: {exc!r}", _INVALID_FIELD)

    def _peek(self, queue: _Queue, body: dict) -> _Reply:
        messages = self._broker.peek(queue, int(body["from-sequence-number"]), int(body["message-count"]))
        if not messages:
            return _Reply(204, None, "No Content")
        return _Reply(200, {"messages": [{"message": message} for message in messages]})

    def _schedule(self, queue: _Queue, body: dict) -> _Reply:
        numbers = self._broker.schedule(queue, [entry["message"] for entry in _elements(body["messages"])])
        return _Reply(200, {"sequence-numbers": Array(UNDESCRIBED, Data.LONG, *numbers)})

    def _cancel_scheduled(self, queue: _Queue, body: dict) -> _Reply:
        self._broker.cancel_scheduled(queue, [int(n) for n in _elements(body["sequence-numbers"])])
        return _Reply(200, {})

    def _renew_lock(self, queue: _Queue, body: dict) -> _Reply:
        expirations = [self._broker.renew(queue, token) for token in _elements(body["lock-tokens"])]
        return _Reply(200, {"expirations": Array(UNDESCRIBED, Data.TIMESTAMP, *map(timestamp, expirations))})

    def _update_disposition(self, queue: _Queue, body: dict) -> _Reply:
        status = _text(body["disposition-status"])
        outcome = _DISPOSITION_STATUS.get(status)
        if outcome is None:
            return _Reply(501, None, f"The local Service Bus does not support disposition {status}.",
                          _NOT_IMPLEMENTED)
        for token in _elements(body["lock-tokens"]):
            self._broker.settle(queue, token, outcome, reason=_text(body.get("deadletter-reason")),
                                description=_text(body.get("deadletter-description")))
        self._pump(queue, queue.dead_letter)
        return _Reply(200, {})


class _RoutineDisconnects(logging.Filter):
    """Proton's I/O handler logs a client that hangs up mid-write or mid-read as an ERROR (broken
    pipe, connection reset). For a broker that is a normal disconnect: keep it, at DEBUG, here."""

    _ROUTINE = ("BrokenPipeError", "ConnectionResetError", "ConnectionAbortedError")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith(("Couldn't send", "Couldn't recv")) and any(name in text for name in self._ROUTINE):
            log.debug("client disconnected: %s", text)
            return False
        return True


_ROUTINE_DISCONNECTS = _RoutineDisconnects()


# --- public API -----------------------------------------------------------------------------


class LocalServiceBus:
    """The server: a proton Container on a daemon thread, started and stopped by the caller."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, queues: dict[str, QueueOptions] | None = None,
                 default_queue_options: QueueOptions | None = None, auto_create_queues: bool = True):
        self._host = host
        self._port = port
        self._broker = _Broker(queues or {}, default_queue_options or QueueOptions(), auto_create_queues)
        self._thread: threading.Thread | None = None
        self._injector: EventInjector | None = None
        self._listener = None
        self._stopped = False

    @property
    def port(self) -> int:
        return self._port

    @property
    def connection_string(self) -> str:
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        return (f"Endpoint=sb://{host}:{self._port};SharedAccessKeyName=RootManageSharedAccessKey;"
                f"SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;")

    def start(self) -> "LocalServiceBus":
        """Listen and serve on a daemon thread; returns once the port accepts connections."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("a LocalServiceBus starts once; create a new one")
        logging.getLogger("proton").addFilter(_ROUTINE_DISCONNECTS)    # a no-op when already there
        handler = _AmqpHandler(self._broker)
        container = Container(handler)
        try:
            acceptor = container.acceptor(self._host, self._port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(self._host, self._port) from exc
            raise
        # Proton has no public accessor for the listening socket; its selectable wraps it.
        self._listener = acceptor._selectable._delegate
        self._port = self._listener.getsockname()[1]
        self._injector = EventInjector()
        container.selectable(self._injector)
        handler.bind(container, acceptor, self._injector)
        self._thread = threading.Thread(target=self._serve, args=(container,), daemon=True,
                                        name=f"local-servicebus-{self._port}")
        self._thread.start()
        log.info("local Service Bus listening on %s:%s", self._host, self._port)
        return self

    def _serve(self, container: Container) -> None:
        try:
            container.run()
        except Exception:    # the thread has nobody to raise to: the log is where this surfaces
            log.exception("local Service Bus on port %s stopped on an error", self._port)
        finally:
            self._listener.close()    # normally closed already; not when the reactor failed

    def stop(self) -> None:
        """Close the listener and every connection and wait for the thread; safe to repeat."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopped = True
        if thread.is_alive():
            self._injector.trigger(ApplicationEvent(_STOP_EVENT))
        thread.join(timeout=10)
        if thread.is_alive():
            log.warning("local Service Bus on port %s did not stop within 10 s", self._port)
            return
        for fd in self._injector.pipe:     # EventInjector never closes its wake-up pipe
            os.close(fd)
        log.info("local Service Bus on port %s stopped", self._port)

    def __enter__(self) -> "LocalServiceBus":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # inspection helpers for tests; a queue nobody has used yet reads as empty

    def queue_depth(self, queue: str) -> int:
        """Active messages: available plus locked, not scheduled ones."""
        return self._broker.depth(queue)

    def dead_letter_depth(self, queue: str) -> int:
        return self._broker.depth(queue, dead_letter=True)

    def scheduled_count(self, queue: str) -> int:
        return self._broker.scheduled_count(queue)

    def stats(self) -> dict[str, int]:
        """Operation counters since start, e.g. transfers_in, messages_in, management_requests."""
        return self._broker.stats()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost.servicebus",
                                     description="Run the local Service Bus until SIGINT or SIGTERM.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5672)
    parser.add_argument("--queue", action="append", default=[],
                        help="declare a queue (repeatable); other queues are created on first use")
    parser.add_argument("--lock-duration", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument("--max-delivery-count", type=int, default=10)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    options = QueueOptions(lock_duration=timedelta(seconds=args.lock_duration),
                           max_delivery_count=args.max_delivery_count)
    server = LocalServiceBus(args.host, args.port, queues={name: options for name in args.queue},
                             default_queue_options=options)
    try:
        server.start()
    except PortInUseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"local Service Bus listening on {args.host}:{server.port}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
