"""HTTP facts the request path and the admin API share: the request id, whether a
request has a body, the scope an app is given, and the gateway's own JSON answers."""

from __future__ import annotations

import json
import os
import random
import re
from binascii import hexlify
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from gateway.proxies import PEER
from gateway.types import Message, Scope, Send

REQUEST_ID = b"x-request-id"
BODY = "gateway.body"  # the scope key where `survey` notes whether the request has a body
_VALID_REQUEST_ID = re.compile(rb"^[\x21-\x7e]{1,128}$")


def app_scope(scope: Scope, state: dict[str, Any] | None = None) -> Scope:
    """The scope an in-process app gets: a copy of its own (frameworks rewrite theirs,
    and the same request may go on to a fallback or a shadow backend), with `state`
    if given (an ASGI app's, from its lifespan), and without the keys the gateway
    keeps for itself on the request's scope: the app sees what uvicorn would give it
    (a WSGI app, in its environ's `asgi.scope`)."""
    own = dict(scope)
    if state is not None:
        own["state"] = state
    own.pop(BODY, None)
    own.pop(PEER, None)
    return own


def request_id_of(scope: Scope) -> tuple[str, bool]:
    """(request id, whether the client sent it)."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID:
            if _VALID_REQUEST_ID.match(value):
                return value.decode("ascii"), True
            break
    # Unique, not secret: no system call per request as uuid4's urandom makes.
    return f"{random.getrandbits(128):032x}", False


def survey(scope: Scope) -> bytes:
    """One pass over a request's headers for what the request path needs of them: the
    request id, returned (the client's own, or the gateway's instead of none or of one
    not fit to pass on) and in the scope's headers from now on; and whether the
    request has a body, noted in the scope for `has_body`. The scope is the
    gateway's to change (the server's, for this request): each backend call gets a
    copy of its own."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    request_id = None
    body = False
    for name, value in headers:
        if name == REQUEST_ID:
            if request_id is None:  # the first one decides; b"": not fit to pass on
                request_id = value if _VALID_REQUEST_ID.match(value) else b""
        elif name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            body = True
    scope[BODY] = body
    if request_id:
        return request_id
    if request_id is not None:
        headers = [h for h in headers if h[0] != REQUEST_ID]
    request_id = _new_id()
    scope["headers"] = [*headers, (REQUEST_ID, request_id)]
    return request_id


_ids: list[bytes] = []  # request ids made ahead, each used once (`_new_id`)
_IDS_AHEAD = 64
os.register_at_fork(after_in_child=_ids.clear)  # a forked worker must make its own


def _new_id() -> bytes:
    """A new request id: 32 hex digits of 128 random bits. Unique, not secret (no
    system call per request as uuid4's urandom makes). Made 64 at a time, from one
    draw of random bits: a third of the instructions of drawing and formatting one
    per request."""
    if not _ids:
        digits = hexlify(random.getrandbits(128 * _IDS_AHEAD).to_bytes(16 * _IDS_AHEAD, "big"))
        _ids.extend(digits[start : start + 32] for start in range(0, len(digits), 32))
    return _ids.pop()


# RFC 9110 5.1: the characters of a token (a field name). The table maps each of them
# to 1 and every other byte to 0.
_TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOKEN_TABLE = bytes(int(c in _TOKEN) for c in range(256))
_CR, _LF, _NUL = 13, 10, 0  # ints: `int in bytes` is a plain byte search


def start_problem(message: Message) -> str | None:
    """What makes an `http.response.start` unfit to send to a client, or None.

    An app or an upstream can send anything; the HTTP server would then fail
    mid-write (a status it has no line for) or send a broken or split response
    (a header with a CR or LF)."""
    # Every response passes here. The common answer (an int status, headers as tuples
    # of bytes under names seen before) is cleared with as few Python steps as can
    # tell it; anything else is examined by `_problem`, which names what is wrong.
    status = message.get("status")
    if status.__class__ is not int or not 200 <= status <= 599:
        return _problem(message)
    try:
        for header in message.get("headers", ()):
            if header.__class__ is not tuple:
                return _problem(message)
            name, value = header
            if (
                name.__class__ is not bytes
                or value.__class__ is not bytes
                or not (_TOKEN_NAMES.get(name) or _TOKEN_NAMES[name])
                or _CR in value
                or _LF in value
                or _NUL in value
            ):
                return _problem(message)
    except (TypeError, ValueError):  # not iterable, or a tuple of another size
        return _problem(message)
    return None


def _is_token(name: bytes) -> bool:
    return bool(name) and 0 not in name.translate(_TOKEN_TABLE)


V = TypeVar("V")


class NameMemo(dict[bytes, V]):
    """What `make` gives for each header name, made once per name. Clients and apps
    choose the names, so at most `limit` are kept; past that, a new name's value is
    made at each use.

    Read as `memo.get(name) or memo[name]`: a name seen before costs a dict's `get`
    (a subscript of a dict subclass takes the interpreter's slow path, about a
    quarter slower per lookup); a new one, or a falsy value, goes to `memo[name]`,
    which makes and keeps what is missing."""

    __slots__ = ("limit", "make")

    def __init__(self, make: Callable[[bytes], V], limit: int = 1024) -> None:
        super().__init__()
        self.make = make
        self.limit = limit

    def __missing__(self, name: bytes) -> V:
        value = self.make(name)
        if len(self) < self.limit:
            self[name] = value
        return value


# Whether a header name is a token: the names an app answers with are checked once,
# not per response (a few dozen in practice).
_TOKEN_NAMES = NameMemo(_is_token)


def _problem(message: Message) -> str | None:
    """`start_problem`, examined step by step: what is wrong, named; or None (say, an
    int subclass for a status, a header as a list, a bytes subclass)."""
    status = message.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        return f"invalid status {status!r}"
    for header in message.get("headers", ()):
        if not (isinstance(header, (tuple, list)) and len(header) == 2):
            return "a header that is not a (name, value) pair"
        name, value = header
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            return f"a header that is not bytes ({type(name).__name__}, {type(value).__name__})"
        # A name of token characters only; no CR, LF or NUL in a value (RFC 9110 5.5).
        if not _is_token(name) or _CR in value or _LF in value or _NUL in value:
            return "a header with characters HTTP does not allow (CR, LF, NUL, or in its name)"
    return None


def has_body(scope: Scope) -> bool:
    known: bool | None = scope.get(BODY)
    if known is not None:  # noted by `survey`
        return known
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def content_length(scope: Scope) -> int | None:
    """The declared Content-Length, if it is a number (the server checked it is one)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


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
