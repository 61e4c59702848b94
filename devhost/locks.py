"""Peek-lock renewal done by the thread that owns the receiver, as long as the Functions host's
``maxAutoLockRenewalDuration`` allows.

The SDK's ``AutoLockRenewer`` renews from threads of its own, on the receiver another thread is
receiving and settling with. The sync receiver is not thread-safe: on a loaded machine the two
threads read each other's frames and the connection ends ("Management Operation error occurred",
then every settlement of the handler fails), so the held messages come back and, after
MaxDeliveryCount, go to the dead-letter queue. A :class:`LockKeeper` is called by the receiving
thread between its other calls instead.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

log = logging.getLogger(__name__)


class LockKeeper:
    """The locks one receiver holds; :meth:`renew_due` renews those past half their lock."""

    def __init__(self, receiver: Any, max_renewal: timedelta, *, clock: Callable[[], float] = time.time):
        self._receiver = receiver
        self._max_renewal = max_renewal.total_seconds()
        self._clock = clock
        # id(message) -> (message, when it was received, its lock's length)
        self._held: dict[int, tuple[Any, float, float]] = {}

    def hold(self, message: Any) -> None:
        now = self._clock()
        self._held[id(message)] = (message, now, max(_lock_left(message, now), 0.0))

    def release(self, message: Any) -> None:
        """The message is settled (or given up): stop renewing it."""
        self._held.pop(id(message), None)

    def renew_due(self) -> None:
        """Renew every held lock with less than half its length left, unless the message has been
        held for ``max_renewal`` (its lock then runs out: Service Bus hands it out again). A renewal
        that fails drops the message: its lock is lost, and its settlement will say so."""
        now = self._clock()
        for key, (message, received, length) in list(self._held.items()):
            if now - received >= self._max_renewal:
                del self._held[key]
                log.warning("message %s: held %.0f s, the most its lock is renewed for; it will be redelivered",
                            message.message_id, now - received)
                continue
            if _lock_left(message, now) > length / 2:
                continue
            try:
                self._receiver.renew_message_lock(message)
            except Exception as exc:      # the SDK's lost-lock and connection errors alike
                del self._held[key]
                log.warning("message %s: lock not renewed (%s); it will be redelivered", message.message_id, exc)

    def next_due(self, ceiling: float) -> float:
        """Seconds until a held lock needs renewing (at most ``ceiling``): how long the owner may block."""
        now = self._clock()
        waits = [_lock_left(message, now) - length / 2 for message, _, length in self._held.values()]
        return max(0.0, min([ceiling, *waits]))


def _lock_left(message: Any, now: float) -> float:
    locked_until: datetime | None = message.locked_until_utc
    if locked_until is None:
        return 0.0
    if locked_until.tzinfo is None:
        locked_until = locked_until.replace(tzinfo=timezone.utc)
    return locked_until.timestamp() - now
