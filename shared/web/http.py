"""The HTTP edge of the dashboard: turns what a page or API handler returns, or raises, into an
``azure.functions.HttpResponse``. Every body passes through the one redaction, every error is one line
(400 for bad input, 404, 503 for an unreachable store, 500 with no detail), and every answer carries
the security headers (a strict Content-Security-Policy for pages)."""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import azure.functions as func

from shared.errors import ConfigurationError, ConflictError, NotFoundError, TransientError, ValidationError
from shared.redaction import redact

log = logging.getLogger(__name__)

COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",           # a ?code= function key never leaves in a Referer
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Reply:
    """What a handler answers: a body and its type, a status, extra headers (a Link to the next page)."""

    body: str
    content_type: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(document: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    # < > & as JSON escapes: a body that some client does render as HTML still runs nothing.
    text = json.dumps(document, indent=2, ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Reply(text, "application/json", status, headers or {})


def respond(handler: Callable[[], Reply], *, request: func.HttpRequest, error_page: Callable[[int, str], Reply]) \
        -> func.HttpResponse:
    """Run ``handler`` and answer with its reply, or with ``error_page(status, one line)`` when it raises."""
    try:
        reply = handler()
    except ValidationError as exc:
        reply = error_page(400, _one_line(exc))
    except NotFoundError as exc:
        reply = error_page(404, _one_line(exc))
    except ConflictError as exc:
        reply = error_page(409, _one_line(exc))
    except (TransientError, ConfigurationError) as exc:
        log.warning("%s %s: the stores did not answer: %s", request.method, _path(request), exc)
        reply = error_page(503, f"the backup service's storage did not answer; try again shortly ({_one_line(exc)})")
    except Exception:   # noqa: BLE001 - the last line: logged with its id, never shown (no traceback for a user)
        incident = uuid.uuid4().hex[:12]
        log.exception("%s %s failed (incident %s)", request.method, _path(request), incident)
        reply = error_page(500, f"internal error (incident {incident}); the app's log has the details")
    headers = {**COMMON_HEADERS, **reply.headers}
    return func.HttpResponse(redact(reply.body), status_code=reply.status, headers=headers,
                             mimetype=reply.content_type, charset="utf-8")


def api_error(status: int, message: str) -> Reply:
    """An API error as Azure's APIs shape it: ``{"error": {"code", "message"}}``."""
    return json_reply({"error": {"code": _CODES.get(status, "Error"), "message": message}}, status=status)


_CODES = {400: "BadRequest", 404: "NotFound", 409: "Conflict", 500: "InternalError", 503: "ServiceUnavailable"}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(redact(str(exc))).split())[:500]


def _path(request: func.HttpRequest) -> str:
    path: str = urlsplit(request.url).path
    return path


def serve_api(request: func.HttpRequest, handler: Callable[..., Any], allowed: tuple[str, ...],
              **route: str) -> func.HttpResponse:
    """An API function's whole body: the query checked against ``allowed``, the handler run on the app's
    services with the route's values, its answer (a document, maybe a next page) as JSON."""
    from shared.bootstrap import services
    from shared.web.params import Params

    return respond(lambda: handler(services(), Params(request.params, allowed), **route).reply(_path(request)),
                   request=request, error_page=api_error)


def serve_page(request: func.HttpRequest, handler: Callable[..., Reply], allowed: tuple[str, ...],
               **route: str) -> func.HttpResponse:
    """A page function's whole body: as ``serve_api``, answered as HTML (errors as a page with one line)."""
    from shared.bootstrap import services
    from shared.web.pages import error_page
    from shared.web.params import Params

    return respond(lambda: handler(services(), Params(request.params, allowed), **route), request=request,
                   error_page=error_page)
