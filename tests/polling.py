"""Waiting in tests without fixed sleeps: poll a condition until it holds or time runs out."""
from __future__ import annotations

import time
from typing import Callable


def eventually(condition: Callable[[], object], timeout: float = 15.0, interval: float = 0.05) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds (threads and processes move on
    their own schedule; a test states what it waits for, not how long)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
