"""Failures the gateway answers for, one class per kind.

    Exception
    ├── BackendFailure           the gateway must answer for the backend
    │   ├── BackendError         500 exception  it raised, or returned without answering
    │   ├── BackendBusy          503 busy       no free WSGI thread within --wsgi-wait
    │   ├── BackendTimeout       504 timeout    no response started within its timeout
    │   │                                       (or its body stalled past read_timeout)
        ├── BackendUnreachable   502 connect    the upstream cannot be reached
        ├── BadResponse          502 protocol   the upstream sent an invalid response
    │   └── BrokenStream         502 stream     the upstream failed mid-body
    └── RequestCut               the gateway cut the client's request body short
        ├── BodyTooLarge         413 body_too_large  past the route's max_body
        └── BodyTimeout          408 body_timeout    no body bytes for --body-timeout

Each class carries its status, its `kind` (the label of
`gateway_backend_errors_total{kind=...}`) and the public reason the client
reads in the JSON answer, with the request id; `detail` is for the log line
only (an upstream's exception goes into it through `safe_reason`, never whole).
The gateway answers only for a backend that gave no complete answer: an
answer the backend completed stands even if it raises afterwards (the failure is
still logged and counted), and one that already reached the client in part
cannot change its status: the connection is dropped, so the client sees a
truncated body.

A `RequestCut` is the client's doing, not the backend's: it counts no backend
error. The backend reads the end of its body (an ASGI app gets
`http.disconnect`, a WSGI app a short `wsgi.input`), and whatever it answers
then is dropped: the client gets the gateway's 413 or 408.
"""

from __future__ import annotations

import aiohttp


class BackendFailure(Exception):
    status, kind, reason = 500, "exception", "the backend failed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BackendError(BackendFailure):
    status, kind, reason = 500, "exception", "the backend raised an error"


class BackendBusy(BackendFailure):
    status, kind, reason = 503, "busy", "the backend has no free thread; try again later"


class BackendTimeout(BackendFailure):
    status, kind, reason = 504, "timeout", "the backend did not answer in time"


class BackendUnreachable(BackendFailure):
    status, kind, reason = 502, "connect", "the backend cannot be reached"


class BadResponse(BackendFailure):
    status, kind, reason = 502, "protocol", "the backend sent an invalid response"


class BrokenStream(BackendFailure):
    status, kind, reason = 502, "stream", "the backend failed mid-response"


FAILURE_KINDS = tuple(
    k.kind
    for k in (
        BackendError,
        BackendBusy,
        BackendTimeout,
        BackendUnreachable,
        BadResponse,
        BrokenStream,
    )
)


class RequestCut(Exception):
    status, kind, reason = 400, "cut", "the request was cut short"


class BodyTooLarge(RequestCut):
    status, kind, reason = 413, "body_too_large", "the request body is larger than this route takes"


class BodyTimeout(RequestCut):
    status, kind, reason = 408, "body_timeout", "the request body stopped arriving"


def safe_reason(exc: BaseException) -> str:
    """What went wrong with an upstream, fit for a log line: the exception's kind and a
    short reason, never the request it failed on.

    aiohttp's exceptions carry the request (`request_info`: URL with its query string,
    and every header the client sent, `Authorization` and `Cookie` included), and
    their `repr` and `str` print it; only their own message is safe to show."""
    if isinstance(exc, aiohttp.ClientResponseError):
        text = f"{exc.status}, {exc.message}" if exc.status else str(exc.message)
    elif isinstance(exc, aiohttp.ClientConnectorError):
        text = f"{exc.host}:{exc.port}: {exc.os_error.strerror or type(exc.os_error).__name__}"
    else:
        text = str(exc)
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first_line[:160]}" if first_line else type(exc).__name__
