"""The remote backend: proxy a request to an HTTP upstream, streaming both ways
(WebSockets: `gateway.upstream_ws`).

Requests go through the shared aiohttp client (`gateway.upstream_client`). aiohttp
was chosen by measurement (docs/benchmarks.md, row 5): httpx's pool spends most of
a proxied request's CPU walking its connections (httpx issue 3215), where
aiohttp proxies at the upstream's own speed. Bodies are never buffered: the
request body is fed to the upstream as the client sends it, and the response
is relayed chunk by chunk, so an SSE stream stays a stream.

Failures before the response starts are raised as `BackendFailure`s for the
dispatcher to answer (connect error -> 502). The time to the first byte and
between body chunks is bounded by the dispatcher, as for every backend; only
connecting has a bound of its own (`upstream_client.CONNECT_TIMEOUT`). A failure
once the response has started cannot change the status any more: the connection
is dropped so the client sees a truncated body, never a silently short one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any

import aiohttp
from aiohttp import hdrs
from multidict import CIMultiDict, istr
from yarl import URL

from gateway import upstream_client
from gateway.errors import BackendUnreachable, BadResponse, BrokenStream, safe_reason
from gateway.forwarding import OWN as FORWARDING
from gateway.forwarding import forwarding_headers
from gateway.http import NameMemo, has_body
from gateway.routefile.model import HOST_PRESERVE, HOST_UPSTREAM, BackendSpec
from gateway.tls import client_context
from gateway.types import Headers, Receive, Scope, Send
from gateway.upstream_client import websocket_client
from gateway.upstream_ws import proxy_websocket

log = logging.getLogger("gateway.upstream")

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


# As aiohttp's names of the forwarded headers (gateway.forwarding), an `istr`: its header
# dicts take it without folding its case again.
_X_FORWARDED_PREFIX = istr("X-Forwarded-Prefix")

# The client's header names as aiohttp's header dicts take them (an `istr` is not
# case-folded again at each insertion), made once per name. Bounded: a client
# chooses the names.
_NAMES = NameMemo(lambda name: istr(name.decode("latin-1")))

# The gateway's server dates every answer itself (as nginx does): the upstream's Date
# relayed too would give the client two.
_NOT_RELAYED = HOP_BY_HOP | {b"date"}


def _named(value: bytes, named: set[bytes]) -> set[bytes]:
    """`named` and the fields a Connection value names: hop-by-hop too."""
    return named | {token.strip().lower() for token in value.split(b",")}


def _strip_hop_by_hop(headers: Headers) -> Headers:
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named = _named(value, named)
    return [(n, v) for n, v in headers if n not in HOP_BY_HOP and n not in named]


def _relayed(raw: Iterable[tuple[bytes, bytes]]) -> tuple[Headers, bool]:
    """An upstream's response headers as the client gets them: lower-case names (as
    ASGI has them), less the hop-by-hop fields and the server's own Date; and whether
    they give a Content-Length. One pass; a second only for an answer whose Connection
    header names fields."""
    headers: Headers = []
    named: set[bytes] = set()
    sized = False
    for raw_name, value in raw:
        name = raw_name.lower()
        if name not in _NOT_RELAYED:
            headers.append((name, value))
            sized = sized or name == b"content-length"
        elif name == b"connection":
            named = _named(value, named)
    if named:
        kept = [(n, v) for n, v in headers if n not in named]
        return kept, sized and b"content-length" not in named
    return headers, sized


class HTTPBackend:
    supports_websocket = True
    active = 0

    def __init__(self, spec: BackendSpec, client: aiohttp.ClientSession) -> None:
        self.spec = spec
        self.client = client
        self._websockets: aiohttp.ClientSession | None = None  # made at the first one
        # The Host of the URL itself: for "upstream", and for a client that sent none.
        own_host = URL(spec.target).host_port_subcomponent or ""
        # None: the client's Host
        self._host: str | None = None
        if spec.host == HOST_UPSTREAM:
            self._host = own_host
        elif spec.host != HOST_PRESERVE:
            self._host = spec.host
        self._own_host = own_host
        self._ssl: ssl.SSLContext | bool = True
        if spec.target.startswith("https://"):
            self._ssl = client_context(spec.tls)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        # The shared client (and the connections both use) is closed by the gateway.
        if self._websockets is not None:
            await self._websockets.close()
            self._websockets = None

    def _request(self, scope: Scope) -> tuple[str, list[tuple[str, str]]]:
        """(URL, headers for the upstream): the client's request (under a route's
        prefix, the rest of its path), its Host as the backend's `host` says, and the
        forwarded headers naming the client."""
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        # Mounted under a route's prefix (gateway.prefix): the upstream gets the rest of
        # the path, and the prefix in X-Forwarded-Prefix, after the one a trusted proxy
        # stated (gateway.proxies drops any other's): it stripped that part before us.
        mount = scope.get("root_path", "")
        outer = ""
        if mount and raw_path.startswith(mount.encode()):
            raw_path = raw_path[len(mount.encode()) :]
        url = self.spec.target + raw_path.decode("latin-1")  # the URL's base path first
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        host = ""
        came_with: dict[bytes, list[str]] = {}  # the forwarded headers the request has
        # Host first, as HTTP clients send it (aiohttp would put its own there)
        kept: list[tuple[str, str]] = [(hdrs.HOST, "")]
        headers: Headers = scope["headers"]
        named: set[bytes] = set()
        for name, value in headers:
            if name in HOP_BY_HOP:
                if name == b"connection":
                    named = _named(value, named)
                continue
            # aiohttp writes header text as UTF-8, so UTF-8 bytes (what clients send
            # beyond ASCII) reach the upstream as sent. Other bytes cannot be written
            # as they came; as Latin-1 they at least keep their characters.
            try:
                text = value.decode()
            except UnicodeDecodeError:
                text = value.decode("latin-1")
            if name == b"host":
                host = text
            elif name in FORWARDING:
                came_with.setdefault(name, []).append(text)
            elif mount and name == b"x-forwarded-prefix":
                outer = outer or text.split(",")[0].strip().rstrip("/")
            else:
                kept.append((_NAMES.get(name) or _NAMES[name], text))
        # The fields a Connection header names are hop-by-hop too: if the request has
        # any (rare: "close" names none), once more without them.
        if named and any(name in named for name, _ in headers):
            return self._request({**scope, "headers": _strip_hop_by_hop(headers)})
        kept[0] = (hdrs.HOST, self._host or host or self._own_host)
        kept.extend(forwarding_headers(scope, host, came_with))
        if mount:
            kept.append((_X_FORWARDED_PREFIX, outer + mount))
        return url, kept

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        url, headers = self._request(scope)
        if scope["type"] == "websocket":
            if self._websockets is None:
                self._websockets = websocket_client(self.client)
            await proxy_websocket(
                self._websockets,
                url,
                CIMultiDict(headers),
                self._ssl,
                scope,
                receive,
                send,
                _strip_hop_by_hop,
            )
            return
        try:
            response = await self.client.request(
                scope["method"],
                URL(url, encoded=True),  # relay the client's bytes: no re-quoting
                headers=headers,
                data=_request_body(receive) if has_body(scope) else None,
                allow_redirects=False,
                ssl=self._ssl,
            )
        except aiohttp.ServerTimeoutError:  # the only timeout set here: connecting
            reason = f"cannot connect to upstream within {upstream_client.CONNECT_TIMEOUT:g}s"
            raise BackendUnreachable(reason) from None
        except aiohttp.ClientConnectorError as exc:
            raise BackendUnreachable(f"cannot connect to upstream: {safe_reason(exc)}") from None
        except aiohttp.ClientError as exc:
            raise BadResponse(f"upstream failed: {safe_reason(exc)}") from None
        try:
            response_headers, sized = _relayed(response.raw_headers)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": response_headers,
                }
            )
            content = response.content
            if content.is_eof() and not content.exception():
                # All of it came with the head (most small answers): one message, at once.
                body = content.read_nowait()
                await send({"type": "http.response.body", "body": body, "more_body": False})
            elif sized:  # a body with a length ends on its own
                await self._relay(response, send)
            else:
                # An open-ended body (SSE, chunked): stop as soon as the client goes.
                await _until_disconnect(self._relay(response, send), receive)
        finally:
            if not response.closed:  # else its connection is back in the pool already
                response.release()

    async def _relay(self, response: aiohttp.ClientResponse, send: Send) -> None:
        content = response.content
        try:
            while chunk := await content.readany():
                # A chunk that leaves the upstream's body at its end ends the answer too
                # (one message through the gateway and the server instead of two, for
                # most answers); otherwise an empty last message does, below.
                last = content.at_eof()
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
                if last:
                    return
        except aiohttp.ClientError as exc:
            # Headers are gone already; returning without the final message makes
            # the server drop the connection, so the client sees the truncation.
            reason = safe_reason(exc)
            log.warning("backend=%s upstream body failed mid-stream: %s", self.spec.name, reason)
            raise BrokenStream(reason) from None
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _ClientGone(Exception):
    """Ends the upload of a body whose client went away (aiohttp reports it as a client
    error; the dispatcher, having seen the disconnect, puts it down to the client)."""


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
