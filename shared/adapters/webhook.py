"""Alert notifications over HTTP: the AlertNotifier port as a JSON POST to the configured webhook (an
action group's, a Logic App's, Teams' or PagerDuty's). The URL may carry a secret (a Logic App's ``sig``):
no message, log line or record ever shows more than its scheme, host and path."""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from shared.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

TIMEOUT = 10.0      # seconds: a receiver slower than this is tried again later


class WebhookNotifier:
    def __init__(self, url: str, *, timeout: float = TIMEOUT):
        self._url = url
        parts = urlsplit(url)
        self.endpoint = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"   # never the query
        self._timeout = timeout

    def send(self, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        request = urllib.request.Request(self._url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            said = f"the webhook {self.endpoint} answered HTTP {exc.code}"
            if exc.code in (408, 429) or exc.code >= 500:
                raise TransientError(said) from None
            raise PermanentError(f"{said}; check the ALERT_WEBHOOK_URL setting") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransientError(f"the webhook {self.endpoint} could not be reached ({type(reason).__name__})") from None
