"""LockKeeper: which held locks the receiving thread renews, and when it stops renewing them."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from devhost.locks import LockKeeper

LOCK = 30.0


class _Message:
    def __init__(self, message_id: str, now: float):
        self.message_id = message_id
        self.locked_until_utc = datetime.fromtimestamp(now + LOCK, timezone.utc)


class _Receiver:
    """Renews as Service Bus does (a new lock of the queue's length from now), or refuses a lost lock."""

    def __init__(self, clock):
        self.clock = clock
        self.renewed: list[str] = []
        self.lost: set[str] = set()

    def renew_message_lock(self, message: _Message) -> datetime:
        if message.message_id in self.lost:
            raise RuntimeError("The lock on the message is lost")
        self.renewed.append(message.message_id)
        message.locked_until_utc = datetime.fromtimestamp(self.clock() + LOCK, timezone.utc)
        return message.locked_until_utc


def _keeper(max_renewal: float = 300.0):
    now = [1_000_000.0]
    receiver = _Receiver(lambda: now[0])
    return LockKeeper(receiver, timedelta(seconds=max_renewal), clock=lambda: now[0]), receiver, now


def test_a_lock_is_renewed_once_half_of_it_is_gone_and_not_before():
    """Renewal comes after half the lock, so a receiving thread that calls often renews each lock rarely."""
    keeper, receiver, now = _keeper()
    message = _Message("m", now[0])
    keeper.hold(message)
    assert keeper.next_due(60.0) == LOCK / 2
    now[0] += LOCK / 2 - 1
    keeper.renew_due()
    assert receiver.renewed == [] and keeper.next_due(60.0) == 1.0
    now[0] += 1
    keeper.renew_due()
    assert receiver.renewed == ["m"] and keeper.next_due(60.0) == LOCK / 2


def test_settled_lost_and_too_old_locks_are_no_longer_renewed():
    """A released message, one whose renewal failed and one held for maxAutoLockRenewalDuration are dropped."""
    keeper, receiver, now = _keeper(max_renewal=100.0)
    settled, lost, old = (_Message(name, now[0]) for name in ("settled", "lost", "old"))
    for message in (settled, lost, old):
        keeper.hold(message)
    keeper.release(settled)
    receiver.lost.add("lost")
    now[0] += LOCK / 2
    keeper.renew_due()
    assert receiver.renewed == ["old"]
    now[0] += 100.0
    keeper.renew_due()
    assert receiver.renewed == ["old"] and keeper.next_due(60.0) == 60.0
