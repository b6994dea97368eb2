"""The signed session header between the gateway and a remote (`url:`) backend.

A `url:` backend that declares `session_from` gets the shared login in one request
header (`X-Legacy-Session` unless configured): JSON, signed with HMAC-SHA256 under a
key from the `GATEWAY_SESSION_KEY` environment variable, which the gateway and the
upstream share. The same format, in a response header of the same name, is how the
upstream asks the gateway to replace (a JSON object) or clear (`null`) the session.

This module is the receiving side's helper too, so it uses the standard library
only: an upstream may copy it as it is. The value is

    base64url(JSON {"session": {...} or null, "iat": <unix time>}) "." base64url(HMAC)

`verify()` rejects a bad signature, a malformed value and one older than `max_age`
seconds (the gateway signs each request afresh, so an old value is a replayed one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

KEY_ENV = "GATEWAY_SESSION_KEY"
DEFAULT_HEADER = "X-Legacy-Session"
MAX_AGE = 60.0


class BadSessionHeader(ValueError):
    """A session header that is not one the key holder signed (or is too old)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def sign(session: dict[str, Any] | None, key: bytes, now: float | None = None) -> str:
    """The header value carrying `session` (None: no session, or "clear it")."""
    body = {"session": session, "iat": int(time.time() if now is None else now)}
    # default=str: a Flask session may hold values JSON has no type for (datetime, UUID).
    payload = _b64(json.dumps(body, separators=(",", ":"), default=str).encode())
    return f"{payload}.{_mac(key, payload)}"


def verify(value: str, key: bytes, max_age: float = MAX_AGE) -> dict[str, Any] | None:
    """The session a header value carries (None for none); raises `BadSessionHeader`."""
    payload, dot, mac = value.strip().partition(".")
    if not (dot and value.isascii()) or not hmac.compare_digest(mac, _mac(key, payload)):
        raise BadSessionHeader("bad signature")
    try:
        body = json.loads(_unb64(payload))
    except ValueError:
        raise BadSessionHeader("malformed payload") from None
    if not isinstance(body, dict) or not isinstance(body.get("iat"), int):
        raise BadSessionHeader("malformed payload")
    if abs(time.time() - body["iat"]) > max_age:
        raise BadSessionHeader("expired")
    session = body.get("session")
    if session is not None and not isinstance(session, dict):
        raise BadSessionHeader("the session is not a JSON object")
    return session
