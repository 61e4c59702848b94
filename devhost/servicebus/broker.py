"""The local Service Bus's queue state and Service Bus semantics: sequence numbers, duplicate detection,
scheduled messages, peek-lock with lock expiry, settlement, MaxDeliveryCount and the dead-letter sub-queue.
No I/O: the AMQP handler (``amqp.py``) turns protocol events into calls on ``Broker``."""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable
from urllib.parse import urlsplit

from devhost.servicebus.codec import DEAD_LETTER_DESCRIPTION, DEAD_LETTER_REASON, StoredMessage, messages_in

log = logging.getLogger(__name__)

DEAD_LETTER_SUFFIX = "/$deadletterqueue"    # the client writes "$DeadLetterQueue": compared lowercased
LOCK_LOST = "com.microsoft:message-lock-lost"
MESSAGE_NOT_FOUND = "com.microsoft:message-not-found"
NOT_ALLOWED = "amqp:not-allowed"

COMPLETE, ABANDON, RELEASE, DEAD_LETTER = "complete", "abandon", "release", "dead-letter"


@dataclass
class QueueOptions:
    """Per-queue behaviour; a zero duplicate_detection_window turns duplicate detection off."""

    lock_duration: timedelta = timedelta(seconds=30)
    max_delivery_count: int = 10
    duplicate_detection_window: timedelta = timedelta(minutes=10)


class SettlementError(Exception):
    """A settlement the broker refuses; condition and description go back to the client."""

    def __init__(self, condition: str, description: str):
        super().__init__(description)
        self.condition = condition
        self.description = description


class Queue:
    """A queue or its dead-letter sub-queue (which has no dead-letter queue of its own)."""

    def __init__(self, name: str, options: QueueOptions, dead_letter: "Queue | None"):
        self.name = name
        self.options = options
        self.dead_letter = dead_letter
        self.sequence = itertools.count(1)
        self.available: list[tuple[int, StoredMessage]] = []   # heap: redelivery keeps queue order
        self.locked: dict[uuid.UUID, StoredMessage] = {}
        self.scheduled: dict[int, StoredMessage] = {}
        self.recent_ids: dict[Any, tuple[int, int]] = {}         # message id -> (first seen, sequence)

    def make_available(self, message: StoredMessage) -> None:
        message.lock_token, message.locked_until_ms = None, 0
        heapq.heappush(self.available, (message.sequence_number, message))

    @property
    def active_count(self) -> int:
        return len(self.available) + len(self.locked)


def _entity_path(address: str) -> str:
    """``amqps://host:port/q``, ``sb://host/q`` and ``q`` all name queue ``q``."""
    return urlsplit(address).path.strip("/") if "://" in address else address.strip("/")


class Broker:
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
        self._queues: dict[str, Queue] = {}
        for name, options in queues.items():
            self._create(name, options)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _lock_expiry(self, queue: Queue) -> int:
        return self._now_ms() + int(queue.options.lock_duration.total_seconds() * 1000)

    def _create(self, name: str, options: QueueOptions) -> Queue:
        dead_letter = Queue(f"{name}/$DeadLetterQueue", options, None)
        queue = self._queues[name.lower()] = Queue(name, options, dead_letter)
        log.info("queue %s created", name)
        return queue

    def count(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._stats[counter] += n

    def resolve(self, address: str) -> Queue | None:
        """The queue (or dead-letter sub-queue) an address names; entity names are case-insensitive."""
        path = _entity_path(address)
        dead_letter = path.lower().endswith(DEAD_LETTER_SUFFIX)
        name = path[:-len(DEAD_LETTER_SUFFIX)] if dead_letter else path
        if not name or "/" in name:
            return None
        with self._lock:
            queue = self._queues.get(name.lower())
            if queue is None and self._auto_create:
                queue = self._create(name, self._default_options)
        return queue.dead_letter if queue and dead_letter else queue

    def _entities(self) -> list[Queue]:
        return [q for queue in self._queues.values() for q in (queue, queue.dead_letter) if q is not None]

    # sending

    def send(self, queue: Queue, payload: bytes) -> None:
        """Enqueue every message of one transfer; parse them all first so a bad batch adds none."""
        messages = messages_in(payload)
        with self._lock:
            self._stats["transfers_in"] += 1
            for message in messages:
                self._accept(queue, message)

    def schedule(self, queue: Queue, payloads: list[bytes]) -> list[int]:
        messages = [StoredMessage.parse(payload) for payload in payloads]
        with self._lock:
            return [self._accept(queue, message) for message in messages]

    def _accept(self, queue: Queue, message: StoredMessage) -> int:
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

    def _duplicate_of(self, queue: Queue, message_id: Any, now: int) -> int | None:
        window_ms = queue.options.duplicate_detection_window.total_seconds() * 1000
        recent = queue.recent_ids
        # Insertion order is arrival order, so expired ids are all at the front.
        while recent:
            oldest = next(iter(recent))
            if now - recent[oldest][0] < window_ms:
                break
            del recent[oldest]
        return recent[message_id][1] if message_id in recent else None

    def cancel_scheduled(self, queue: Queue, sequence_numbers: list[int]) -> None:
        with self._lock:
            missing = [n for n in sequence_numbers if n not in queue.scheduled]
            if missing:
                raise SettlementError(MESSAGE_NOT_FOUND, f"no scheduled message with sequence number {missing}")
            for number in sequence_numbers:
                del queue.scheduled[number]

    # receiving

    def take(self, queue: Queue, *, lock: bool) -> tuple[bytes, uuid.UUID | None] | None:
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

    def peek(self, queue: Queue, from_sequence_number: int, count: int) -> list[bytes]:
        """Peek shows active, locked and scheduled messages alike, without locking any."""
        with self._lock:
            everything = [m for _, m in queue.available] + [*queue.locked.values(), *queue.scheduled.values()]
            chosen = sorted((m for m in everything if m.sequence_number >= from_sequence_number),
                            key=lambda m: m.sequence_number)[:count]
            return [message.encode() for message in chosen]

    def settle(self, queue: Queue, token: uuid.UUID, outcome: str, *,
               reason: str | None = None, description: str | None = None) -> None:
        with self._lock:
            message = queue.locked.pop(token, None)
            if message is None:
                raise SettlementError(LOCK_LOST, "The lock on the message is lost: it expired or the "
                                                   "message was already settled.")
            if outcome == COMPLETE:
                self._stats["completed"] += 1
            elif outcome == ABANDON:
                self._stats["abandoned"] += 1
                self._unlock(queue, message, failed=True)
            elif outcome == DEAD_LETTER:
                if queue.dead_letter is None:
                    queue.locked[token] = message
                    raise SettlementError(NOT_ALLOWED, "A dead-lettered message cannot be dead-lettered again.")
                self._dead_letter(queue, queue.dead_letter, message, reason, description)
            else:
                self._unlock(queue, message, failed=False)

    def renew(self, queue: Queue, token: uuid.UUID) -> int:
        with self._lock:
            message = queue.locked.get(token)
            if message is None:
                raise SettlementError(LOCK_LOST, "The lock on the message is lost; it cannot be renewed.")
            message.locked_until_ms = self._lock_expiry(queue)
            self._stats["lock_renewals"] += 1
            return message.locked_until_ms

    def release(self, queue: Queue, tokens: set[uuid.UUID]) -> int:
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

    def _unlock(self, queue: Queue, message: StoredMessage, *, failed: bool) -> None:
        if failed:
            message.delivery_count += 1
            limit = queue.options.max_delivery_count
            if queue.dead_letter is not None and message.delivery_count >= limit:
                self._dead_letter(queue, queue.dead_letter, message, "MaxDeliveryCountExceeded",
                                  f"Message could not be consumed after {limit} delivery attempts.")
                return
        queue.make_available(message)

    def _dead_letter(self, queue: Queue, dead_letter: Queue, message: StoredMessage, reason: str | None,
                     description: str | None) -> None:
        properties = dict(message.application_properties or {})
        for key, value in ((DEAD_LETTER_REASON, reason), (DEAD_LETTER_DESCRIPTION, description)):
            if value is not None:
                properties[key] = value
        message.application_properties = properties
        self._stats["dead_lettered"] += 1
        log.debug("queue %s: message %s dead-lettered (%s)", queue.name, message.sequence_number, reason)
        dead_letter.make_available(message)

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

    def _find(self, name: str) -> Queue | None:
        return self._queues.get(name.lower())

    def depth(self, name: str, *, dead_letter: bool = False) -> int:
        with self._lock:
            queue = self._find(name)
            if queue is None:
                return 0
            entity = queue.dead_letter if dead_letter else queue
            return entity.active_count if entity is not None else 0

    def scheduled_count(self, name: str) -> int:
        with self._lock:
            queue = self._find(name)
            return len(queue.scheduled) if queue else 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)
