"""Failures the gateway answers for a backend, one class per kind.

    Exception
    └── BackendFailure           the gateway must answer for the backend
        ├── BackendError         500 exception  it raised, or returned without answering
        ├── BackendTimeout       504 timeout    no response started within its timeout
        ├── BackendUnreachable   502 connect    the upstream cannot be reached
        ├── BadResponse          502 protocol   the upstream sent an invalid response
        └── BrokenStream         502 stream     the upstream failed mid-body

Each class carries its status, its `kind` (the label of
`gateway_backend_errors_total{kind=...}`) and the public reason the client
reads in the JSON answer, with the request id; `detail` is for the log line
only. A failure after the response started cannot change the status: the
connection is dropped, so the client sees a truncated body.
"""

from __future__ import annotations


class BackendFailure(Exception):
    status, kind, reason = 500, "exception", "the backend failed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BackendError(BackendFailure):
    status, kind, reason = 500, "exception", "the backend raised an error"


class BackendTimeout(BackendFailure):
    status, kind, reason = 504, "timeout", "the backend did not answer in time"


class BackendUnreachable(BackendFailure):
    status, kind, reason = 502, "connect", "the backend cannot be reached"


class BadResponse(BackendFailure):
    status, kind, reason = 502, "protocol", "the backend sent an invalid response"


class BrokenStream(BackendFailure):
    status, kind, reason = 502, "stream", "the backend failed mid-response"


FAILURE_KINDS = tuple(
    k.kind for k in (BackendError, BackendTimeout, BackendUnreachable, BadResponse, BrokenStream)
)
