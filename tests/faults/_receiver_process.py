"""A receiver process for fault tests: the real azure-servicebus client in peek-lock mode that
takes messages and never settles them, printing each message id, until it is killed.

Run: python -m tests.faults._receiver_process CONNECTION_STRING QUEUE
"""
from __future__ import annotations

import sys

from azure.servicebus import ServiceBusClient


def main(connection: str, queue: str) -> None:
    with ServiceBusClient.from_connection_string(connection) as client, \
            client.get_queue_receiver(queue) as receiver:
        print("ready", flush=True)
        while True:
            for message in receiver.receive_messages(max_message_count=5, max_wait_time=60):
                print(f"got {message.message_id}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
