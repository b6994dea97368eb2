"""The few blocking HTTP GETs of the CLI and the inventory (a running gateway's admin
API, an upstream's OpenAPI document), on the standard library: the gateway's own
runtime dependencies stay what the request path needs. No proxy from the
environment (these are the operator's own addresses), and a cap on the body.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from typing import Any

MAX_BODY = 32 * 2**20
TOKEN_ENV = "GATEWAY_ADMIN_TOKEN"  # the admin API's token, as `gateway serve` reads it


def admin_token() -> str | None:
    """The admin token the CLI sends a running gateway: `GATEWAY_ADMIN_TOKEN`, trimmed
    as `gateway serve` trims it (a Secret file's newline); blank is none."""
    return os.environ.get(TOKEN_ENV, "").strip() or None


class FetchError(Exception):
    """The URL could not be read at all (refused, timed out, too large)."""


def get(
    url: str, timeout: float, limit: int = MAX_BODY, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """(status, body) of a GET; raises `FetchError` when no answer came."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers=headers or {})
    try:
        try:
            with opener.open(request, timeout=timeout) as response:
                status, body = response.status, response.read(limit + 1)
        except urllib.error.HTTPError as exc:  # an answer all the same
            status, body = exc.code, exc.read(limit + 1)
    except urllib.error.URLError as exc:
        raise FetchError(str(exc.reason) or type(exc.reason).__name__) from None
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(str(exc) or type(exc).__name__) from None
    if len(body) > limit:
        raise FetchError(f"{url} is larger than {limit // 2**20} MiB")
    return status, body


def get_json(url: str, timeout: float, key: str, token: str | None = None) -> Any:
    """The value under `key` of the JSON object a 200 answer holds; raises `FetchError`
    for any other answer. `token`: the admin API's, sent as `Authorization: Bearer`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, body = get(url, timeout, headers=headers)
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if status != 200:
        error = document.get("error") if isinstance(document, dict) else None
        reason = f"it answered {status}" + (f": {error}" if isinstance(error, str) else "")
        if status in (401, 403) and not token:
            reason += f"; set {TOKEN_ENV} to the gateway's admin token"
        raise FetchError(reason)
    if document is None:
        raise FetchError("its answer is not JSON")
    if not isinstance(document, dict) or key not in document:
        raise FetchError(f"its answer has no {key!r}")
    return document[key]
