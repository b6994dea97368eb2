"""The few blocking HTTP GETs of the CLI and the inventory (a running gateway's admin
API, an upstream's OpenAPI document), on the standard library: the gateway's own
runtime dependencies stay what the request path needs. No proxy from the
environment (these are the operator's own addresses), and a cap on the body.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

MAX_BODY = 32 * 2**20


class FetchError(Exception):
    """The URL could not be read at all (refused, timed out, too large)."""


def get(url: str, timeout: float, limit: int = MAX_BODY) -> tuple[int, bytes]:
    """(status, body) of a GET; raises `FetchError` when no answer came."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        try:
            with opener.open(url, timeout=timeout) as response:
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


def get_json(url: str, timeout: float, key: str) -> Any:
    """The value under `key` of the JSON object a 200 answer holds; raises `FetchError`
    for any other answer."""
    status, body = get(url, timeout)
    if status != 200:
        raise FetchError(f"it answered {status}")
    try:
        document = json.loads(body)
    except ValueError:
        raise FetchError("its answer is not JSON") from None
    if not isinstance(document, dict) or key not in document:
        raise FetchError(f"its answer has no {key!r}")
    return document[key]
