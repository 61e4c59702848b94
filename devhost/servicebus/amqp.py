# Over 400 lines on purpose: proton sends every event to one Handler; its callbacks share link state.
"""The local Service Bus's AMQP side: proton events (connections, links, transfers, dispositions, CBS and
``$management`` requests) turned into broker operations, on the container thread only. A receiver whose
connection ends leaves the rotation and its locked messages go back to the queue."""
from __future__ import annotations

import functools
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, NamedTuple, TypeVar

from proton import (Array, Condition, Connection, Data, Delivery, Endpoint, Event, Handler, Link, Message, Sender,
                    symbol, timestamp, UNDESCRIBED)
from proton._reactor import Acceptor, Task    # proton.reactor does not re-export them
from proton.reactor import ApplicationEvent, Container, EventInjector

from devhost.servicebus.broker import (ABANDON, COMPLETE, DEAD_LETTER, LOCK_LOST, MESSAGE_NOT_FOUND, RELEASE, Broker,
                                       Queue, SettlementError)
from devhost.servicebus.codec import (DEAD_LETTER_DESCRIPTION, DEAD_LETTER_REASON, MalformedMessage, detached,
                                      elements, as_text, text_entry)

log = logging.getLogger(__name__)

_TICK_SECONDS = 0.05          # granularity of lock expiry and scheduled enqueue
_INCOMING_CREDIT = 1000       # credit granted to client senders; topped up at half
_CLOSE_GRACE_SECONDS = 0.2    # on stop, how long clients get to answer our close
STOP_EVENT = "servicebus_stop"
_CBS_NODE = "$cbs"
_MANAGEMENT_SUFFIX = "/$management"
_NOT_IMPLEMENTED = "amqp:not-implemented"
_INVALID_FIELD = "amqp:invalid-field"
_DECODE_ERROR = "amqp:decode-error"

# update-disposition spells outcomes the service's way (and "defered" is the wire spelling).
_DISPOSITION_STATUS = {"completed": COMPLETE, "abandoned": ABANDON, "suspended": DEAD_LETTER}


@dataclass
class _LinkRole:
    """What a link is for. Proton keeps attributes set on its wrappers in the C object's record,
    so this lives and dies with the link."""

    kind: Literal["cbs", "management", "send", "receive"]   # send: client to us; receive: us to client
    address: str
    entity: Queue | None = None                             # None only on the CBS link
    locks: set[uuid.UUID] = field(default_factory=set)      # delivered on this link, not yet settled on it

    @property
    def queue(self) -> Queue:
        """The queue a send, receive or management link works on."""
        assert self.entity is not None, f"a {self.kind} link works on no queue"
        return self.entity


def _role(link: Link | None) -> _LinkRole | None:
    """What on_link_remote_open recorded the link is for; None for a link it refused or has not seen."""
    role = getattr(link, "servicebus_role", None)
    return role if isinstance(role, _LinkRole) else None


class _Reply(NamedTuple):
    status: int
    body: Any = None
    description: str = "OK"
    condition: str | None = None


class _Binding(NamedTuple):
    """What the handler needs of the container it runs in, known once the server has built both."""

    container: Container
    acceptor: Acceptor
    injector: EventInjector


_T = TypeVar("_T")
_EventHandler = Callable[["AmqpHandler", Event], None]


def _carried(value: _T | None) -> _T:
    """What an event is about: proton types an event's connection, session, link, delivery and transport
    as optional, since events of other kinds lack them; each handler reads only what its kind carries."""
    assert value is not None, "a proton event without what its kind carries"
    return value


def _array(amqp_type: int, values: Iterable[object]) -> Array:
    # proton's annotation leaves out UNDESCRIBED, the descriptor of an array of plain values.
    return Array(UNDESCRIBED, amqp_type, *values)    # type: ignore[arg-type]


def _guarded(handle: _EventHandler) -> _EventHandler:
    """For event handlers that act on client input: an unexpected failure costs that client its
    connection (with the error logged and sent to it), not every client the server thread."""

    @functools.wraps(handle)
    def guarded(self: AmqpHandler, event: Event) -> None:
        try:
            handle(self, event)
        except Exception:
            log.exception("local Service Bus failed on %s; closing that connection", event.type)
            if event.connection is not None:
                _close_with_error(event.connection, "amqp:internal-error", "The local Service Bus failed; see its log.")

    return guarded


def _close_with_error(connection: Connection, condition: str, description: str) -> None:
    # The client reads the error's info field without checking it is there, so always send one.
    connection.condition = Condition(condition, description, {symbol("reason"): description})
    connection.close()


def _is_open(link: Link) -> bool:
    return bool(link.state & Endpoint.LOCAL_ACTIVE and link.state & Endpoint.REMOTE_ACTIVE)


class AmqpHandler(Handler):
    """Runs only on the container thread; the broker is the only state it shares."""

    def __init__(self, broker: Broker):
        super().__init__()
        self._broker = broker
        self._consumers: dict[Queue, list[Link]] = {}
        self._connections: set[Connection] = set()
        self._tick_task: Task | None = None
        self._stopping = False
        self._binding: _Binding | None = None
        self._operations: dict[str, Callable[[Queue, dict[str, Any]], _Reply]] = {
            "com.microsoft:peek-message": self._peek,
            "com.microsoft:schedule-message": self._schedule,
            "com.microsoft:cancel-scheduled-message": self._cancel_scheduled,
            "com.microsoft:renew-lock": self._renew_lock,
            "com.microsoft:update-disposition": self._update_disposition,
        }

    def bind(self, container: Container, acceptor: Acceptor, injector: EventInjector) -> None:
        """Called once, before the container runs: the handler exists before the container does."""
        self._binding = _Binding(container, acceptor, injector)

    def _bound(self) -> _Binding:
        assert self._binding is not None, "bind() is called before the container runs"
        return self._binding

    # lifecycle

    def on_reactor_init(self, event: Event) -> None:
        self._tick_task = self._bound().container.schedule(_TICK_SECONDS, self)

    @_guarded
    def on_timer_task(self, event: Event) -> None:
        if self._stopping:
            self._abort_connections()
            return
        self._broker.tick()
        self._pump(*self._consumers)
        self._tick_task = self._bound().container.schedule(_TICK_SECONDS, self)

    def on_servicebus_stop(self, event: ApplicationEvent) -> None:
        bound = self._bound()
        self._stopping = True
        if self._tick_task is not None:    # None only when stopped before the reactor started
            self._tick_task.cancel()
        bound.acceptor.close()
        bound.injector.close()
        for connection in list(self._connections):
            _close_with_error(connection, "amqp:connection:forced", "The local Service Bus stopped.")
        bound.container.schedule(_CLOSE_GRACE_SECONDS, self)

    def _abort_connections(self) -> None:
        """Drop connections whose client has not answered our close: clients only read when
        their thread next polls, and the container cannot finish while a socket is open."""
        for connection in list(self._connections):
            transport = connection.transport
            if transport is not None:
                transport.close_tail()
                transport.close_head()

    # connection, session and link state

    def on_connection_bound(self, event: Event) -> None:
        # The client always signs in with SASL ANONYMOUS; authorisation is the CBS token.
        _carried(event.transport).sasl().allowed_mechs("ANONYMOUS")
        self._connections.add(_carried(event.connection))
        self._broker.count("connections")

    def on_transport_closed(self, event: Event) -> None:
        connection = event.connection
        if connection is not None:
            self._connections.discard(connection)
            self._drop_receivers(connection)

    def _drop_receivers(self, connection: Connection) -> None:
        """A connection that ended (closed, or its process died) takes its receive links out of the
        rotation and gives back the messages they held locked: nobody can settle them any more, and
        waiting for the locks to expire would starve the receivers still alive."""
        link = connection.link_head(0)
        while link is not None:
            role = _role(link)
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

    def on_transport_error(self, event: Event) -> None:
        condition = _carried(event.transport).condition
        log.debug("connection dropped: %s", condition.description if condition else "no reason given")

    def on_connection_remote_open(self, event: Event) -> None:
        connection = _carried(event.connection)
        if connection.state & Endpoint.LOCAL_UNINIT:
            connection.open()

    def on_session_remote_open(self, event: Event) -> None:
        session = _carried(event.session)
        if session.state & Endpoint.LOCAL_UNINIT:
            session.open()

    @_guarded
    def on_link_remote_open(self, event: Event) -> None:
        link = _carried(event.link)
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

    def on_link_remote_close(self, event: Event) -> None:
        # A link detached on a live connection keeps its locks until they expire, as in Service
        # Bus: the client may still settle them through $management. A connection that ends
        # releases them (_drop_receivers).
        link = _carried(event.link)
        if not link.state & Endpoint.LOCAL_CLOSED:
            link.close()

    def on_session_remote_close(self, event: Event) -> None:
        session = _carried(event.session)
        if not session.state & Endpoint.LOCAL_CLOSED:
            session.close()

    def on_connection_remote_close(self, event: Event) -> None:
        connection = _carried(event.connection)
        if not connection.state & Endpoint.LOCAL_CLOSED:
            connection.close()

    @_guarded
    def on_link_flow(self, event: Event) -> None:
        role = _role(event.link)
        if role is not None and role.kind == "receive":
            self._pump(role.queue)

    # deliveries

    @_guarded
    def on_delivery(self, event: Event) -> None:
        delivery, link = _carried(event.delivery), _carried(event.link)
        role = _role(link)
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

    def _on_send(self, queue: Queue, delivery: Delivery, payload: bytes) -> None:
        try:
            self._broker.send(queue, payload)
        except MalformedMessage as exc:
            log.warning("queue %s: rejected a transfer: %s", queue.name, exc)
            delivery.local.condition = Condition(_DECODE_ERROR, str(exc))
            delivery.update(Delivery.REJECTED)
        else:
            delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        self._pump(queue)

    def _pump(self, *queues: Queue | None) -> None:
        """Hand available messages to each queue's open receiver links, one per link in turn."""
        for queue in queues:
            if queue is not None:
                self._pump_queue(queue)

    def _pump_queue(self, queue: Queue) -> None:
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

    def _deliver_next(self, link: Link, queue: Queue) -> bool:
        presettled = link.snd_settle_mode == Link.SND_SETTLED     # receive-and-delete
        taken = self._broker.take(queue, lock=not presettled)
        if taken is None:
            return False
        payload, token = taken
        # The lock token travels as the delivery tag; the client reads it as a little-endian UUID. proton
        # annotates the tag as str, but takes bytes as they are (a str it would encode as UTF-8).
        delivery = link.delivery((token or uuid.uuid4()).bytes_le)    # type: ignore[arg-type]
        link.send(payload)
        link.advance()
        if token is None:
            delivery.settle()
        else:
            delivery.servicebus_lock = token
            role = _role(link)
            assert role is not None, "only a receive link is pumped"
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
                self._broker.settle(role.queue, token, COMPLETE)
            elif state == Delivery.REJECTED:
                info = delivery.remote.condition.info if delivery.remote.condition else None
                self._broker.settle(role.queue, token, DEAD_LETTER, reason=text_entry(info, DEAD_LETTER_REASON),
                                    description=text_entry(info, DEAD_LETTER_DESCRIPTION))
            elif state == Delivery.MODIFIED and delivery.remote.undeliverable:
                raise SettlementError(_NOT_IMPLEMENTED, "The local Service Bus does not support deferral.")
            else:
                failed = state == Delivery.MODIFIED and delivery.remote.failed
                self._broker.settle(role.queue, token, ABANDON if failed else RELEASE)
            # The client awaits the echo of the outcome it asked for (receiver settle mode
            # second); a rejected echo must carry no error, or the client reports a failure.
            if state == Delivery.MODIFIED:
                delivery.local.failed = delivery.remote.failed
            delivery.update(state)
        except SettlementError as exc:
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
            properties: dict[str, object] = {"status-code": 202, "status-description": "Accepted"}
            self._respond(link, role.address, request, properties, None)
            return
        self._broker.count("management_requests")
        operation = text_entry(request.properties, "operation")
        reply = self._manage(role.queue, operation, detached(request.body))
        properties = {"statusCode": reply.status, "statusDescription": reply.description}
        if reply.condition:
            properties["errorCondition"] = symbol(reply.condition)
        self._respond(link, role.address, request, properties, reply.body)

    def _respond(self, link: Link, address: str, request: Message, properties: dict[str, object],
                 body: Any) -> None:
        # The client pairs each request link with a response link attached to the same node.
        mask = Endpoint.LOCAL_ACTIVE | Endpoint.REMOTE_ACTIVE
        candidate = link.connection.link_head(mask)
        while candidate is not None:
            role = _role(candidate)
            if isinstance(candidate, Sender) and role is not None and role.address == address:
                response = Message(body=body, correlation_id=request.id, properties=properties)
                response.send(candidate).settle()
                return
            candidate = candidate.next(mask)
        log.warning("no response link for %s on this connection; dropped the response", address)

    def _manage(self, queue: Queue, operation: str | None, body: Any) -> _Reply:
        handler = self._operations.get(operation or "")
        if handler is None:
            return _Reply(501, None, f"The local Service Bus does not support {operation}.", _NOT_IMPLEMENTED)
        try:
            return handler(queue, body if isinstance(body, dict) else {})
        except SettlementError as exc:
            status = 410 if exc.condition == LOCK_LOST else 404 if exc.condition == MESSAGE_NOT_FOUND else 400
            return _Reply(status, None, exc.description, exc.condition)
        except (MalformedMessage, KeyError, TypeError, ValueError) as exc:
            return _Reply(400, None, f"Malformed {operation} request: {exc!r}", _INVALID_FIELD)

    def _peek(self, queue: Queue, body: dict[str, Any]) -> _Reply:
        messages = self._broker.peek(queue, int(body["from-sequence-number"]), int(body["message-count"]))
        if not messages:
            return _Reply(204, None, "No Content")
        return _Reply(200, {"messages": [{"message": message} for message in messages]})

    def _schedule(self, queue: Queue, body: dict[str, Any]) -> _Reply:
        numbers = self._broker.schedule(queue, [entry["message"] for entry in elements(body["messages"])])
        return _Reply(200, {"sequence-numbers": _array(Data.LONG, numbers)})

    def _cancel_scheduled(self, queue: Queue, body: dict[str, Any]) -> _Reply:
        self._broker.cancel_scheduled(queue, [int(n) for n in elements(body["sequence-numbers"])])
        return _Reply(200, {})

    def _renew_lock(self, queue: Queue, body: dict[str, Any]) -> _Reply:
        expirations = [self._broker.renew(queue, token) for token in elements(body["lock-tokens"])]
        return _Reply(200, {"expirations": _array(Data.TIMESTAMP, map(timestamp, expirations))})

    def _update_disposition(self, queue: Queue, body: dict[str, Any]) -> _Reply:
        status = as_text(body["disposition-status"])
        outcome = _DISPOSITION_STATUS.get(status) if status is not None else None
        if outcome is None:
            return _Reply(501, None, f"The local Service Bus does not support disposition {status}.",
                          _NOT_IMPLEMENTED)
        for token in elements(body["lock-tokens"]):
            self._broker.settle(queue, token, outcome, reason=text_entry(body, "deadletter-reason"),
                                description=text_entry(body, "deadletter-description"))
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


ROUTINE_DISCONNECTS = _RoutineDisconnects()
