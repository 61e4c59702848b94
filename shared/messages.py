"""What a queue trigger does first with its message: the body read as the request it must be, or, when it
is not one, one error line naming the message and the message dropped (a redelivery would not read it
either; the worker's snapshot tasks, which have a job to fail, take their own path in
shared/services/dispatch.py)."""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

import azure.functions as func

from shared.errors import ValidationError

T = TypeVar("T")


def parsed_or_dropped(msg: func.ServiceBusMessage, parse: Callable[[bytes], T], *, queue: str, what: str,
                      log: logging.Logger) -> T | None:
    """``parse(body)``; None after logging (on the trigger's own ``log``) why the message is dropped."""
    try:
        return parse(msg.get_body())
    except ValidationError as exc:
        log.error("message %s on the %s queue is not a %s (%s); dropped", msg.message_id, queue, what, exc)
        return None
