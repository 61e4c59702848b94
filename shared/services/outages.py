"""Riding out an outage inside one invocation: the use case is tried again with growing pauses while
storage or Service Bus cannot be reached, instead of handing the work back to the platform, whose
own retries come seconds apart (five blob tries, then poison; ten queue deliveries, then the
dead-letter queue) and so turn a minute-long outage into lost work."""
from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Callable, TypeVar

from shared.errors import TransientError
from shared.services.needs import HasClock

log = logging.getLogger(__name__)

FIRST_PAUSE = 1.0       # seconds; doubled after each failed try
MAX_PAUSE = 30.0

T = TypeVar("T")


def ride_out(svc: HasClock, attempt: Callable[[], T], *, what: str, budget: timedelta,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """``attempt()``, tried again after 1, 2, 4 ... 30 s pauses while it raises TransientError.

    Only for idempotent use cases. Raises the last TransientError once ``budget`` is spent: measured
    on ``svc.clock``, or as the pauses slept when that is longer (a clock that stands still in a test
    must not make the loop endless).
    """
    started = svc.clock.now()
    pause = FIRST_PAUSE
    slept = timedelta(0)
    tries = 0
    while True:
        tries += 1
        try:
            return attempt()
        except TransientError as exc:
            waited = max(svc.clock.now() - started, slept)
            if waited + timedelta(seconds=pause) > budget:
                log.error("%s: still failing after %s over %d tries; giving up this invocation: %s",
                          what, waited, tries, exc)
                raise
            log.warning("%s: try %d failed (%s); trying again in %.0f s", what, tries, exc, pause)
        sleep(pause)
        slept += timedelta(seconds=pause)
        pause = min(pause * 2, MAX_PAUSE)
