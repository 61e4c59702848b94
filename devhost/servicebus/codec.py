"""The local Service Bus's message codec: AMQP 1.0 message sections in and out, the message as the
broker stores it (properties and body byte-for-byte as sent), and batches unpacked into their messages.
Pure: no sockets, no threads, no broker state."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from proton import Array, Data, DataException, Described, symbol, timestamp, uint, ulong

# Message sections (AMQP 1.0 part 3.2), by descriptor code.
_HEADER, _DELIVERY_ANNOTATIONS, _MESSAGE_ANNOTATIONS, _PROPERTIES, _APPLICATION_PROPERTIES = range(0x70, 0x75)
_DATA, _AMQP_SEQUENCE, _AMQP_VALUE, _FOOTER = range(0x75, 0x79)

_SEQUENCE_NUMBER = symbol("x-opt-sequence-number")
_ENQUEUED_TIME = symbol("x-opt-enqueued-time")
_LOCKED_UNTIL = symbol("x-opt-locked-until")
_SCHEDULED_ENQUEUE_TIME = symbol("x-opt-scheduled-enqueue-time")
_MESSAGE_STATE = symbol("x-opt-message-state")
_ACTIVE, _SCHEDULED = 0, 2        # values of x-opt-message-state the client maps to ServiceBusMessageState

DEAD_LETTER_REASON = "DeadLetterReason"
DEAD_LETTER_DESCRIPTION = "DeadLetterErrorDescription"


class MalformedMessage(ValueError):
    """A transfer or management payload that is not a well-formed AMQP message."""


def detached(value: Any) -> Any:
    """Copy binary values out of proton: ``Data.get_object`` returns memoryviews into buffers that
    proton frees together with the ``Data`` object."""
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, dict):
        return {detached(k): detached(v) for k, v in value.items()}
    if isinstance(value, list):
        return [detached(v) for v in value]
    if isinstance(value, Described):
        return Described(value.descriptor, detached(value.value))
    if isinstance(value, Array):
        return Array(value.descriptor, value.type, *(detached(v) for v in value.elements))
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
            raise MalformedMessage(f"byte {offset} does not start a message section")
        data = Data()
        try:
            # proton annotates bytes, but decodes from any buffer: a view spares copying the rest of a
            # batch once per section.
            used = data.decode(view[offset:])    # type: ignore[arg-type]
            data.rewind()
            data.next()
            value = detached(data.get_object())
        except (DataException, ValueError) as exc:
            raise MalformedMessage(f"undecodable message section at byte {offset}") from exc
        sections.append((start[2], value.value, view[offset:offset + used].tobytes()))
        offset += used
    if not sections:
        raise MalformedMessage("empty message")
    return sections


def elements(value: Any) -> list:
    """Management requests send lists as AMQP arrays; accept either."""
    return list(value.elements) if isinstance(value, Array) else list(value or [])


def as_text(value: Any) -> str | None:
    """The client sends some application-property strings as binary."""
    return value.decode() if isinstance(value, (bytes, bytearray)) else (None if value is None else str(value))


def text_entry(amqp_map: object, key: str) -> str | None:
    """The text under ``key`` in an AMQP map (message or application properties, an error's info), None
    when the map is absent or empty or lacks the key. Symbol keys match their plain string."""
    if not amqp_map:
        return None
    if not isinstance(amqp_map, dict):
        raise MalformedMessage(f"expected an AMQP map, got {type(amqp_map).__name__}")
    return as_text(amqp_map.get(key))


@dataclass
class StoredMessage:
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
    def parse(cls, payload: bytes) -> "StoredMessage":
        return cls.from_sections(_read_sections(payload))

    @classmethod
    def from_sections(cls, sections: list[tuple[int, Any, bytes]]) -> "StoredMessage":
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


def messages_in(payload: bytes) -> list[StoredMessage]:
    """The messages in one transfer. A ServiceBusMessageBatch arrives as an envelope whose body
    is data sections, each one encoded message; the envelope carries only the first message's
    id. Proton does not expose the transfer's message-format, which marks batches, so recognise
    that shape (a single message's own id never matches one inside its body by accident)."""
    sections = _read_sections(payload)
    envelope = StoredMessage.from_sections(sections)
    if any(code in (_HEADER, _APPLICATION_PROPERTIES, _AMQP_SEQUENCE, _AMQP_VALUE) for code, _, _ in sections):
        return [envelope]
    try:
        inner = [StoredMessage.parse(value) for code, value, _ in sections if code == _DATA]
    except MalformedMessage:
        return [envelope]
    return inner if inner and inner[0].message_id == envelope.message_id else [envelope]
