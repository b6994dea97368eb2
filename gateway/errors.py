"""Failures a backend reports to the dispatcher, which turns them into answers.

    Exception
    └── BackendFailure        the gateway must answer for the backend
        (status 502 "connect" / "protocol" / "stream", 504 "timeout")

Any other exception escaping a backend is a bug in that backend: the
dispatcher answers 500 with kind "exception". Either way the client gets a
JSON body with the request id, and the metric
`gateway_backend_errors_total{kind=...}` counts it.
"""

from __future__ import annotations

FAILURE_KINDS = ("exception", "timeout", "connect", "protocol", "stream")


class BackendFailure(Exception):
    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
