"""What the unmodified azure-servicebus client observes, grouped by behaviour. The same tests run
against a real namespace when VMSNAP_LIVE_SERVICEBUS is set (see conftest); those needing the
local server's short lock duration, delivery limit or duplicate window are marked to skip there."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import proton
import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode
from azure.servicebus.aio import ServiceBusClient as AsyncServiceBusClient
from azure.servicebus.exceptions import MessageLockLostError

pytestmark = [pytest.mark.timeout(30), pytest.mark.long]

# Skips in live runs: the test relies on the contract server's 2 s lock, 3 deliveries, 1 s window.
needs_local_options = pytest.mark.usefixtures("local_server")

NOTHING_WAIT = 0.3     # seconds a receive waits when the test expects nothing
EARLY_TOLERANCE = timedelta(milliseconds=100)    # clock granularity between client and server


def _utc_in(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def _receive_one(receiver, *, complete: bool = True):
    [message] = receiver.receive_messages(max_wait_time=5)
    if complete:
        receiver.complete_message(message)
    return message


class TestSendAndReceive:
    def test_sent_message_is_received_and_gone_once_completed(self, queue):
        """A message sent is received with its body, and after complete nobody receives it again."""
        queue.sender.send_messages(ServiceBusMessage("hello"))
        message = _receive_one(queue.receiver, complete=False)
        assert str(message) == "hello"
        assert message.delivery_count == 0
        assert message.sequence_number is not None
        assert message.locked_until_utc > datetime.now(timezone.utc)
        queue.receiver.complete_message(message)
        assert queue.receiver.receive_messages(max_wait_time=NOTHING_WAIT) == []

    def test_batch_delivers_every_message_in_order(self, queue):
        """Every message of a ServiceBusMessageBatch arrives, separately and in send order."""
        batch = queue.sender.create_message_batch()
        for i in range(40):
            batch.add_message(ServiceBusMessage(f"m{i}", message_id=f"id-{i}"))
        queue.sender.send_messages(batch)
        received = []
        while len(received) < 40:
            messages = queue.receiver.receive_messages(max_message_count=40, max_wait_time=5)
            assert messages, f"only {len(received)} of 40 messages arrived"
            for message in messages:
                queue.receiver.complete_message(message)
            received += messages
        assert [str(m) for m in received] == [f"m{i}" for i in range(40)]
        assert [m.message_id for m in received] == [f"id-{i}" for i in range(40)]
        sequence_numbers = [m.sequence_number for m in received]
        assert sequence_numbers == sorted(set(sequence_numbers))

    def test_message_properties_round_trip(self, queue):
        """Ids, subject, content type, time to live and application properties arrive as sent."""
        queue.sender.send_messages(ServiceBusMessage(
            b'{"task": 1}', message_id="task-1", correlation_id="job-7", subject="snapshot",
            content_type="application/json", reply_to="replies", time_to_live=timedelta(minutes=5),
            application_properties={"schema": "v1", "attempt": 3, "ratio": 0.5, "urgent": True}))
        message = _receive_one(queue.receiver)
        assert b"".join(message.body) == b'{"task": 1}'
        assert (message.message_id, message.correlation_id, message.subject, message.content_type,
                message.reply_to) == ("task-1", "job-7", "snapshot", "application/json", "replies")
        assert message.time_to_live == timedelta(minutes=5)
        assert message.application_properties == {b"schema": b"v1", b"attempt": 3, b"ratio": 0.5, b"urgent": True}

    def test_binary_bodies_arrive_byte_for_byte(self, queue):
        """Bodies arrive unchanged, alone or batched, even bytes that are themselves an AMQP message."""
        amqp_encoded = bytes(proton.Message(body="inner", id="inner-id").encode())
        bodies = [amqp_encoded, b"short", b"\x00\x53\x75", amqp_encoded]
        queue.sender.send_messages(ServiceBusMessage(bodies[0]))
        queue.sender.send_messages([ServiceBusMessage(body) for body in bodies[1:]])
        received = queue.receiver.receive_messages(max_message_count=4, max_wait_time=5)
        for message in received:
            queue.receiver.complete_message(message)
        assert [b"".join(m.body) for m in received] == bodies

    def test_receive_and_delete_removes_the_message_on_delivery(self, queue, client):
        """In receive-and-delete mode the message is gone as soon as it is received."""
        queue.sender.send_messages(ServiceBusMessage("once"))
        mode = ServiceBusReceiveMode.RECEIVE_AND_DELETE
        with client.get_queue_receiver(queue.name, receive_mode=mode) as deleting_receiver:
            [message] = deleting_receiver.receive_messages(max_wait_time=5)
        assert str(message) == "once"
        assert queue.receiver.receive_messages(max_wait_time=NOTHING_WAIT) == []

    def test_async_client_sends_receives_and_completes(self, servicebus_connection, queue_name):
        """The asyncio client works the same: send, receive, complete."""
        async def scenario() -> str:
            async with AsyncServiceBusClient.from_connection_string(servicebus_connection) as aclient:
                async with aclient.get_queue_sender(queue_name) as sender, \
                        aclient.get_queue_receiver(queue_name) as receiver:
                    await sender.send_messages(ServiceBusMessage("async"))
                    [message] = await receiver.receive_messages(max_wait_time=5)
                    await receiver.complete_message(message)
                    assert await receiver.receive_messages(max_wait_time=NOTHING_WAIT) == []
                    return str(message)

        assert asyncio.run(scenario()) == "async"


class TestScheduling:
    def test_scheduled_message_is_invisible_until_its_time(self, queue):
        """A message scheduled two seconds ahead is not received before then, and is after."""
        due = _utc_in(2)
        [sequence_number] = queue.sender.schedule_messages(ServiceBusMessage("later"), due)
        assert queue.receiver.receive_messages(max_wait_time=NOTHING_WAIT) == []
        message = _receive_one(queue.receiver)
        assert datetime.now(timezone.utc) >= due - EARLY_TOLERANCE
        assert str(message) == "later"
        assert message.sequence_number == sequence_number

    def test_scheduled_enqueue_time_on_a_plain_send_delays_it(self, queue):
        """Setting scheduled_enqueue_time_utc on a message and sending it delays it as well."""
        due = _utc_in(1.5)
        queue.sender.send_messages(ServiceBusMessage("later", scheduled_enqueue_time_utc=due))
        assert queue.receiver.receive_messages(max_wait_time=NOTHING_WAIT) == []
        assert str(_receive_one(queue.receiver)) == "later"
        assert datetime.now(timezone.utc) >= due - EARLY_TOLERANCE

    def test_cancelled_scheduled_message_is_never_delivered(self, queue):
        """A scheduled message that is cancelled never arrives, even after its time."""
        [sequence_number] = queue.sender.schedule_messages(ServiceBusMessage("cancelled"), _utc_in(1))
        queue.sender.cancel_scheduled_messages(sequence_number)
        assert queue.receiver.receive_messages(max_wait_time=2) == []


class TestPeek:
    def test_peek_shows_messages_without_locking_them(self, queue):
        """Peeked messages keep their order and stay receivable as first deliveries."""
        queue.sender.send_messages([ServiceBusMessage("a"), ServiceBusMessage("b")])
        peeked = queue.receiver.peek_messages(max_message_count=10)
        assert [str(m) for m in peeked] == ["a", "b"]
        assert all(m.lock_token is None for m in peeked)
        received = queue.receiver.receive_messages(max_message_count=2, max_wait_time=5)
        for message in received:
            queue.receiver.complete_message(message)
        assert [str(m) for m in received] == ["a", "b"]
        assert [m.delivery_count for m in received] == [0, 0]
        assert [m.sequence_number for m in received] == [m.sequence_number for m in peeked]

    def test_peek_continues_from_a_sequence_number(self, queue):
        """Peek from a sequence number skips earlier messages; an empty queue peeks as []."""
        assert queue.receiver.peek_messages() == []
        queue.sender.send_messages([ServiceBusMessage(f"m{i}") for i in range(3)])
        first = queue.receiver.peek_messages(max_message_count=1)
        rest = queue.receiver.peek_messages(max_message_count=10, sequence_number=first[0].sequence_number + 1)
        assert [str(m) for m in first + rest] == ["m0", "m1", "m2"]


class TestLocks:
    def test_abandoned_message_is_redelivered_with_a_higher_delivery_count(self, queue):
        """Abandon puts the message back at once, its delivery count one higher and a new lock."""
        queue.sender.send_messages(ServiceBusMessage("retry me"))
        first = _receive_one(queue.receiver, complete=False)
        first_token = first.lock_token
        queue.receiver.abandon_message(first)
        second = _receive_one(queue.receiver, complete=False)
        second_token = second.lock_token
        queue.receiver.complete_message(second)
        assert (first.delivery_count, second.delivery_count) == (0, 1)
        assert second.sequence_number == first.sequence_number
        assert second_token != first_token

    @needs_local_options
    def test_expired_lock_makes_the_message_available_again(self, queue):
        """A message not settled within the lock duration comes back, counted as a failed delivery."""
        queue.sender.send_messages(ServiceBusMessage("slow"))
        first = _receive_one(queue.receiver, complete=False)
        assert queue.receiver.receive_messages(max_wait_time=NOTHING_WAIT) == []
        second = _receive_one(queue.receiver, complete=False)
        assert datetime.now(timezone.utc) >= first.locked_until_utc
        with pytest.raises(MessageLockLostError):
            queue.receiver.complete_message(first)
        queue.receiver.complete_message(second)
        assert (first.delivery_count, second.delivery_count) == (0, 1)

    def test_renew_lock_moves_locked_until_forward(self, queue):
        """Renewing a lock returns a later locked-until time and the message stays completable."""
        queue.sender.send_messages(ServiceBusMessage("long job"))
        message = _receive_one(queue.receiver, complete=False)
        first_lock = message.locked_until_utc
        time.sleep(0.5)
        renewed = queue.receiver.renew_message_lock(message)
        assert renewed > first_lock
        assert message.locked_until_utc == renewed
        queue.receiver.complete_message(message)

    @needs_local_options
    def test_renewed_message_outlives_its_first_lock(self, queue):
        """After a renewal the message is not redelivered when the first lock would have expired."""
        queue.sender.send_messages(ServiceBusMessage("long job"))
        message = _receive_one(queue.receiver, complete=False)
        first_lock = message.locked_until_utc
        time.sleep(1.2)
        queue.receiver.renew_message_lock(message)
        time.sleep(max(0.0, (first_lock - datetime.now(timezone.utc)).total_seconds()) + 0.3)
        assert queue.receiver.receive_messages(max_wait_time=NOTHING_WAIT) == []
        queue.receiver.complete_message(message)

    def test_lock_on_a_settled_message_cannot_be_renewed(self, queue):
        """Renewing the lock of a message completed elsewhere fails with MessageLockLostError."""
        queue.sender.send_messages(ServiceBusMessage("done"))
        message = _receive_one(queue.receiver, complete=False)
        # The client's fallback settlement: the management link's update-disposition.
        queue.receiver._settle_message_via_mgmt_link("completed", [message.lock_token])
        with pytest.raises(MessageLockLostError):
            queue.receiver.renew_message_lock(message)


class TestDeadLetter:
    def test_dead_lettered_message_is_read_from_the_dead_letter_queue(self, queue):
        """Dead-lettering moves the message to the DLQ with the reason and description given."""
        queue.sender.send_messages(ServiceBusMessage("poison", application_properties={"task": "t1"}))
        message = _receive_one(queue.receiver, complete=False)
        queue.receiver.dead_letter_message(message, reason="BadPayload", error_description="no disk id")
        assert queue.receiver.receive_messages(max_wait_time=NOTHING_WAIT) == []
        dead = _receive_one(queue.dead_letter)
        assert str(dead) == "poison"
        assert (dead.dead_letter_reason, dead.dead_letter_error_description) == ("BadPayload", "no disk id")
        assert dead.application_properties[b"task"] == b"t1"

    def test_management_link_settlement_completes_and_dead_letters(self, queue):
        """The client's fallback settlement (update-disposition) completes and dead-letters."""
        queue.sender.send_messages([ServiceBusMessage("done"), ServiceBusMessage("bad")])
        done, bad = queue.receiver.receive_messages(max_message_count=2, max_wait_time=5)
        # The client takes this path when the receiver link cannot confirm a settlement.
        queue.receiver._settle_message_via_mgmt_link("completed", [done.lock_token])
        queue.receiver._settle_message_via_mgmt_link(
            "suspended", [bad.lock_token],
            dead_letter_details={"deadletter-reason": "Poison", "deadletter-description": "unparseable"})
        assert queue.receiver.receive_messages(max_wait_time=NOTHING_WAIT) == []
        dead = _receive_one(queue.dead_letter)
        assert (str(dead), dead.dead_letter_reason, dead.dead_letter_error_description) == (
            "bad", "Poison", "unparseable")

    @needs_local_options
    def test_message_failing_max_delivery_count_times_is_dead_lettered(self, queue):
        """After MaxDeliveryCount (3 here) failed deliveries the message moves to the DLQ."""
        queue.sender.send_messages(ServiceBusMessage("always fails"))
        counts = []
        for _ in range(3):
            message = _receive_one(queue.receiver, complete=False)
            counts.append(message.delivery_count)
            queue.receiver.abandon_message(message)
        assert queue.receiver.receive_messages(max_wait_time=NOTHING_WAIT) == []
        dead = _receive_one(queue.dead_letter)
        assert counts == [0, 1, 2]
        assert str(dead) == "always fails"
        assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"


class TestDuplicateDetection:
    @needs_local_options
    def test_same_message_id_is_dropped_inside_the_window_and_accepted_after(self, queue):
        """A resend with the same MessageId inside the window is dropped; after it, accepted."""
        queue.sender.send_messages(ServiceBusMessage("first", message_id="task-42"))
        queue.sender.send_messages(ServiceBusMessage("resend", message_id="task-42"))
        queue.sender.send_messages(ServiceBusMessage("other", message_id="task-43"))
        time.sleep(1.2)     # the contract server's window is 1 s
        queue.sender.send_messages(ServiceBusMessage("after window", message_id="task-42"))
        received = queue.receiver.receive_messages(max_message_count=10, max_wait_time=2)
        for message in received:
            queue.receiver.complete_message(message)
        assert [str(m) for m in received] == ["first", "other", "after window"]
