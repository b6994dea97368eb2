"""HTTP facts the request path and the admin API share: the request id, whether a
request has a body, and the gateway's own JSON answers."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence

from gateway.types import Message, Scope, Send

REQUEST_ID = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[\x21-\x7e]{1,128}$")


def request_id_of(scope: Scope) -> tuple[str, bool]:
    """(request id, whether the client sent it)."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID:
            if _VALID_REQUEST_ID.match(value):
                return value.decode("ascii"), True
            break
    # Unique, not secret: no system call per request as uuid4's urandom makes.
    return f"{random.getrandbits(128):032x}", False


def with_request_id(scope: Scope) -> tuple[str, Scope]:
    """The request id, and the scope a backend sees: with the client's own id, or
    with the gateway's instead of none or of one not fit to pass on."""
    request_id, from_client = request_id_of(scope)
    if not from_client:
        scope = dict(scope)
        headers = [h for h in scope["headers"] if h[0] != REQUEST_ID]
        headers.append((REQUEST_ID, request_id.encode()))
        scope["headers"] = headers
    return request_id, scope


def has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def json_response(
    status: int, body: object, headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[Message, Message]:
    payload = json.dumps(body, separators=(",", ":")).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *headers,
        ],
    }
    return start, {"type": "http.response.body", "body": payload, "more_body": False}


async def send_json(
    send: Send, status: int, body: object, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    start, end = json_response(status, body, headers)
    await send(start)
    await send(end)


def own_answer(scope: Scope, send: Send) -> Send:
    """`send` for an answer of the gateway's own: it carries the request id too."""
    request_id = request_id_of(scope)[0].encode()

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), (REQUEST_ID, request_id)]
        await send(message)

    return send_with_id
