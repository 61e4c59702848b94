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

The package: ``codec`` (AMQP message sections, the stored message, batches), ``broker`` (queue state and
Service Bus semantics, no I/O), ``amqp`` (proton events to broker operations) and ``server`` (the
``LocalServiceBus`` thread and ``main``).
"""
from devhost.servicebus.broker import QueueOptions
from devhost.servicebus.server import CannotListenError, LocalServiceBus, PortInUseError, main

__all__ = ["CannotListenError", "LocalServiceBus", "PortInUseError", "QueueOptions", "main"]
