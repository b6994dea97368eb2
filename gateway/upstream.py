"""The remote backend: proxy a request to an HTTP upstream, streaming both ways.

One pooled `httpx.AsyncClient` is shared by every remote backend of a gateway
process (connections are pooled per origin inside it). Bodies are never
buffered: the request body is fed to the upstream as the client sends it, and
the response is relayed chunk by chunk, so an SSE stream stays a stream.

Failures before the response starts are raised as `BackendFailure` for the
dispatcher to answer (connect error -> 502, timeout -> 504). A failure once
the response has started cannot change the status any more: the connection
is dropped so the client sees a truncated body, never a silently short one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import httpx

from gateway.config import BackendSpec
from gateway.errors import BackendFailure
from gateway.types import Headers, Receive, Scope, Send

log = logging.getLogger("gateway.upstream")

DEFAULT_TIMEOUT = 30.0

# RFC 9110 section 7.6.1: connection-specific fields never cross a proxy.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def new_client(max_connections: int = 512) -> httpx.AsyncClient:
    """The shared client: no env proxies, no redirects followed, a deep keep-alive pool."""
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        follow_redirects=False,
        trust_env=False,
        timeout=DEFAULT_TIMEOUT,
    )


def _strip_hop_by_hop(headers: Headers) -> Headers:
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return [(n, v) for n, v in headers if n not in HOP_BY_HOP and n not in named]


class HTTPBackend:
    supports_websocket = False
    active = 0

    def __init__(self, spec: BackendSpec, client: httpx.AsyncClient) -> None:
        self.spec = spec
        self.client = client
        self.timeout = httpx.Timeout(spec.timeout or DEFAULT_TIMEOUT)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None  # the shared client is closed by the gateway that owns it

    def _request(self, scope: Scope, receive: Receive) -> httpx.Request:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        url = self.spec.target + raw_path.decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        headers = _strip_hop_by_hop(scope["headers"])
        host = b""
        forwarded_for = b""
        has_body = False
        kept: Headers = []
        for name, value in headers:
            if name == b"host":
                host = value
            elif name == b"x-forwarded-for":
                forwarded_for = value + b", "
            elif name == b"x-forwarded-proto" or name == b"x-forwarded-host":
                continue  # replaced below: we are the proxy the upstream trusts
            else:
                if name == b"content-length":
                    has_body = value != b"0"
                kept.append((name, value))
        if any(n == b"transfer-encoding" for n, _ in scope["headers"]):
            has_body = True
        client = scope.get("client")
        if client:
            kept.append((b"x-forwarded-for", forwarded_for + client[0].encode()))
        kept.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
        if host:
            kept.append((b"x-forwarded-host", host))
        return self.client.build_request(
            scope["method"],
            url,
            headers=kept,
            content=_request_body(receive) if has_body else None,
            timeout=self.timeout,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = self._request(scope, receive)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            reason = f"upstream timed out ({type(exc).__name__})"
            raise BackendFailure(504, "timeout", reason) from None
        except httpx.ConnectError as exc:
            raise BackendFailure(502, "connect", f"cannot connect to upstream: {exc}") from None
        except _ClientGone:
            return
        except httpx.TransportError as exc:
            raise BackendFailure(502, "protocol", f"upstream failed: {exc!r}") from None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": _strip_hop_by_hop(response.headers.raw),
                }
            )
            if "content-length" in response.headers:
                await self._relay(response, send)
            else:
                # An open-ended body (SSE, chunked): stop as soon as the client goes.
                await _until_disconnect(self._relay(response, send), receive)
        finally:
            await response.aclose()

    async def _relay(self, response: httpx.Response, send: Send) -> None:
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.TransportError as exc:
            # Headers are gone already; returning without the final message makes
            # the server drop the connection, so the client sees the truncation.
            log.warning("backend=%s upstream body failed mid-stream: %r", self.spec.name, exc)
            raise BackendFailure(502, "stream", str(exc)) from None
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone()
        body: bytes = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def _until_disconnect(work: Coroutine[Any, Any, None], receive: Receive) -> None:
    """Run `work` until it finishes or the client disconnects, whichever comes first."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if not task.cancelled():
        error = task.exception()
        if error is not None:
            raise error
