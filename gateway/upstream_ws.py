"""WebSockets to a remote upstream: one aiohttp client connection per client connection.

The handshake goes upstream first, with the client's subprotocols, and only its
outcome is given to the client: accepted with the subprotocol the upstream chose
and its response headers (cookies, custom headers; less the connection's own and
the handshake's), or refused. A redirect is a refusal too: the gateway never follows
one (`upstream_client.websocket_client`). A refusal is relayed as the upstream's HTTP answer
where the server supports ASGI's `websocket.http.response` extension (its status
and headers; aiohttp drops the refusal's body), else as a close: 1008 for a 4xx,
1011 otherwise. Then frames flow both ways as they come, text as text and binary as
binary; each side's close (code and reason) is passed on to the other. Pings are
answered per hop (aiohttp towards the upstream, the server towards the client).
Each direction awaits its writer before reading on, so a slow reader slows its
sender down rather than filling the gateway's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from gateway.errors import BackendUnreachable, BadResponse, BrokenStream, safe_reason
from gateway.types import Headers, Message, Receive, Scope, Send

# As uvicorn's default --ws-max-size: a message the gateway itself would accept.
MAX_MESSAGE = 16 * 1024 * 1024
# The handshake is aiohttp's own to make: none of the client's may go upstream.
HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"}
    | {"sec-websocket-protocol", "sec-websocket-accept"}
)
# Codes a close frame may not carry (RFC 6455 section 7.4.1), and what goes instead.
_UNSENDABLE = {1005: 1000, 1006: 1001, 1015: 1001}
_REFUSAL_DROPPED = frozenset({b"content-length", b"transfer-encoding", b"content-encoding"})
# Each hop's handshake is its own (the subprotocol travels in websocket.accept's own
# key); Date is the client-facing server's to give, as for any answer it sends.
_ACCEPT_DROPPED = frozenset(name.encode() for name in HANDSHAKE) | {b"date"}


async def proxy_websocket(
    client: aiohttp.ClientSession,
    url: str,
    headers: CIMultiDict[str],
    tls: ssl.SSLContext | bool,
    scope: Scope,
    receive: Receive,
    send: Send,
    strip_hop_by_hop: Callable[[Headers], Headers],
) -> None:
    if (await receive())["type"] != "websocket.connect":
        return  # gone before the handshake
    for name in HANDSHAKE:
        headers.popall(name, None)
    try:
        ws = await client.ws_connect(
            URL("ws" + url[4:], encoded=True),  # http(s):// becomes ws(s)://
            protocols=scope.get("subprotocols", ()),
            headers=headers,
            ssl=tls,
            autoping=True,
            max_msg_size=MAX_MESSAGE,
        )
    except aiohttp.WSServerHandshakeError as exc:
        await _refused(exc, scope, send, strip_hop_by_hop)
        return
    except aiohttp.ClientConnectorError as exc:
        raise BackendUnreachable(f"cannot connect to upstream: {safe_reason(exc)}") from None
    except aiohttp.ServerTimeoutError:  # the client's only timeout: connecting
        raise BackendUnreachable("cannot connect to upstream in time") from None
    except aiohttp.ClientError as exc:
        raise BadResponse(f"upstream WebSocket handshake failed: {safe_reason(exc)}") from None
    try:
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": ws.protocol,
                "headers": _accept_headers(ws, strip_hop_by_hop),
            }
        )
        await _relay(ws, receive, send)
    finally:
        await ws.close()


def _accept_headers(
    ws: aiohttp.ClientWebSocketResponse, strip_hop_by_hop: Callable[[Headers], Headers]
) -> Headers:
    """The upstream's 101 headers that are the app's own, not the connection's."""
    # aiohttp keeps the handshake's response only on this attribute (no public one).
    raw = [(name.lower(), value) for name, value in ws._response.raw_headers]
    return [(n, v) for n, v in strip_hop_by_hop(raw) if n not in _ACCEPT_DROPPED]


async def _refused(
    exc: aiohttp.WSServerHandshakeError,
    scope: Scope,
    send: Send,
    strip_hop_by_hop: Callable[[Headers], Headers],
) -> None:
    status = exc.status
    if status < 300:  # a 101 it could not accept, or a plain answer: no WebSocket there
        raise BadResponse(f"upstream answered the WebSocket handshake with {status}")
    if "websocket.http.response" in scope.get("extensions", {}):
        headers: Headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in (exc.headers or {}).items()
        ]
        kept = [(n, v) for n, v in strip_hop_by_hop(headers) if n not in _REFUSAL_DROPPED]
        kept.append((b"content-length", b"0"))
        await send({"type": "websocket.http.response.start", "status": status, "headers": kept})
        await send({"type": "websocket.http.response.body", "body": b"", "more_body": False})
        return
    await send({"type": "websocket.close", "code": 1008 if status < 500 else 1011})


async def _to_client(send: Send, message: Message) -> bool:
    """Send to the client; False if it is gone (not the upstream's failure)."""
    try:
        await send(message)
    except OSError:
        return False
    return True


async def _relay(ws: aiohttp.ClientWebSocketResponse, receive: Receive, send: Send) -> None:
    """Frames both ways until either side closes; the other is told with the same code."""
    upstream_failure: list[str] = []
    client_left: list[bool] = []

    async def from_client() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                if message.get("text") is not None:
                    await ws.send_str(message["text"])
                else:
                    await ws.send_bytes(message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                client_left.append(True)
                code: int = message.get("code") or 1000
                reason = message.get("reason") or ""
                await ws.close(code=_UNSENDABLE.get(code, code), message=reason.encode())
                return

    async def from_upstream() -> None:
        while True:
            frame = await ws.receive()
            if frame.type == aiohttp.WSMsgType.TEXT:
                message = {"type": "websocket.send", "text": frame.data}
            elif frame.type == aiohttp.WSMsgType.BINARY:
                message = {"type": "websocket.send", "bytes": frame.data}
            elif frame.type == aiohttp.WSMsgType.CLOSE:
                code = _UNSENDABLE.get(frame.data, frame.data) if frame.data else 1000
                await _to_client(
                    send, {"type": "websocket.close", "code": code, "reason": frame.extra or ""}
                )
                return
            elif client_left:  # CLOSED: our own close, for the client that left
                return
            else:  # CLOSED or ERROR without a close frame: the upstream went away
                error = ws.exception()
                upstream_failure.append(safe_reason(error) if error else "connection lost")
                await _to_client(send, {"type": "websocket.close", "code": 1011})
                return
            if not await _to_client(send, message):
                # The client is gone (servers raise OSError on a send to it): its
                # disconnect, read by from_client, closes the upstream.
                await ws.close(code=1001)
                return

    tasks = {asyncio.ensure_future(from_client()), asyncio.ensure_future(from_upstream())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": 1011})
            raise BrokenStream(f"WebSocket relay failed: {safe_reason(result)}") from None
    if upstream_failure:
        raise BrokenStream(f"upstream WebSocket ended without a close: {upstream_failure[0]}")
