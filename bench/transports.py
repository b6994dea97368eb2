"""Alternative HTTP clients for the remote backend, for measurement only.

Each transport here is a drop-in replacement for `gateway.upstream`'s pair
`new_client()` / `HTTPBackend(spec, client)`: the same request headers to the
upstream (hop-by-hop fields stripped, X-Forwarded-* set), the same streamed
relay of the response, the same `BackendFailure`s for connect errors (502)
and timeouts (504). `bench.variant` swaps one in before the gateway starts, so
row 5 can compare them with the shipped client (aiohttp) through the same
gateway and the same harness.

The shipped client was chosen with these measurements; they stay to show what
the alternatives cost, and to measure the next candidate:

- `httpx`: an `httpx.AsyncClient` with a pool of 512 connections, streamed
  (`build_request`, `send(stream=True)`, `aiter_raw()`): the gateway's remote
  backend as it was before aiohttp.
- `httpx-pool8`: the same with a pool of 8 connections: httpcore's pool does
  work per open connection on every request, so fewer connections cost less.
- `httpx-transport`: httpx's `AsyncHTTPTransport` called directly, without
  the `AsyncClient` layer (auth, redirects, cookies, event hooks).
- `httpcore`: httpcore's `AsyncConnectionPool` directly (what httpx wraps).
- `httptools`: a minimal pooled HTTP/1.1 client: an `asyncio.Protocol` per
  connection, parsed by httptools (llhttp), idle connections kept per origin.
  A prototype, not production code: no HTTPS, no 1xx handling, HEAD
  responses close their connection.

The gateway closes its shared client at shutdown with `await client.close()`;
httpx and httpcore name that `aclose()`, so their clients here are subclasses
that answer to both.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from gateway import upstream
from gateway.config import BackendSpec
from gateway.errors import BackendFailure
from gateway.types import Headers, Receive, Scope, Send
from gateway.upstream import DEFAULT_TIMEOUT, _request_body, _strip_hop_by_hop, _until_disconnect

MAX_CONNECTIONS = 512


# --- what every transport sends upstream ---------------------------------------------


def upstream_request(scope: Scope) -> tuple[str, Headers, bool]:
    """(path and query, headers for the upstream, whether a body follows): as HTTPBackend."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    target = raw_path.decode("latin-1")
    if scope["query_string"]:
        target += "?" + scope["query_string"].decode("latin-1")
    host = b""
    forwarded_for = b""
    has_body = False
    kept: Headers = []
    for name, value in _strip_hop_by_hop(scope["headers"]):
        if name == b"host":
            host = value
        elif name == b"x-forwarded-for":
            forwarded_for = value + b", "
        elif name == b"x-forwarded-proto" or name == b"x-forwarded-host":
            continue
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
    return target, kept, has_body


async def relay_response(
    status: int,
    headers: Headers,
    chunks: Callable[[], AsyncIterator[bytes]],
    receive: Receive,
    send: Send,
    name: str,
    errors: tuple[type[BaseException], ...],
) -> None:
    """Start the response, then relay the body as HTTPBackend does: a failure once the
    headers are out is logged and ends the response without its final message, so the
    server drops the connection and the client sees the truncation."""
    headers = _strip_hop_by_hop(headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})

    async def relay() -> None:
        try:
            async for chunk in chunks():
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except errors as exc:
            upstream.log.warning("backend=%s upstream body failed mid-stream: %r", name, exc)
            raise BackendFailure(502, "stream", str(exc)) from None
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    if any(n == b"content-length" for n, _ in headers):
        await relay()
    else:
        await _until_disconnect(relay(), receive)


class _Base:
    """What the gateway expects of a backend (`gateway.backends.Backend`), on its own:
    `gateway.upstream.HTTPBackend`'s constructor is made for the shipped client."""

    supports_websocket = False
    active = 0

    def __init__(self, spec: BackendSpec, client: Any) -> None:
        self.spec = spec
        self.client = client
        self.seconds = spec.timeout or DEFAULT_TIMEOUT

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None  # the shared client is closed by the gateway that owns it


# --- httpx ---------------------------------------------------------------------------------


class HttpxClient(httpx.AsyncClient):
    """httpx's client, with the `close()` the gateway calls at shutdown."""

    async def close(self) -> None:
        await self.aclose()


def httpx_client(max_connections: int = MAX_CONNECTIONS) -> HttpxClient:
    """The gateway's shared client as it was on httpx."""
    return HttpxClient(
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        follow_redirects=False,
        trust_env=False,
        timeout=DEFAULT_TIMEOUT,
    )


def httpx_small_pool_client() -> HttpxClient:
    return httpx_client(8)


class HttpxBackend(_Base):
    """The gateway's remote backend as it was on httpx, request for request."""

    client: httpx.AsyncClient

    def __init__(self, spec: BackendSpec, client: httpx.AsyncClient) -> None:
        super().__init__(spec, client)
        self.timeout = httpx.Timeout(self.seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target, headers, has_body = upstream_request(scope)
        request = self.client.build_request(
            scope["method"],
            self.spec.target + target,
            headers=headers,
            content=_request_body(receive) if has_body else None,
            timeout=self.timeout,
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            reason = f"upstream timed out ({type(exc).__name__})"
            raise BackendFailure(504, "timeout", reason) from None
        except httpx.ConnectError as exc:
            raise BackendFailure(502, "connect", f"cannot connect to upstream: {exc}") from None
        except upstream._ClientGone:
            return
        except httpx.TransportError as exc:
            raise BackendFailure(502, "protocol", f"upstream failed: {exc!r}") from None
        try:
            await relay_response(
                response.status_code,
                list(response.headers.raw),
                response.aiter_raw,
                receive,
                send,
                self.spec.name,
                (httpx.TransportError,),
            )
        finally:
            await response.aclose()


class HttpxTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, with the `close()` the gateway calls at shutdown."""

    async def close(self) -> None:
        await self.aclose()


def httpx_transport_client() -> HttpxTransport:
    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
    )
    return HttpxTransport(limits=limits, trust_env=False)


class HttpxTransportBackend(_Base):
    client: httpx.AsyncHTTPTransport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target, headers, has_body = upstream_request(scope)
        request = httpx.Request(
            scope["method"],
            self.spec.target + target,
            headers=headers,
            content=_request_body(receive) if has_body else None,
            extensions={"timeout": httpx.Timeout(self.seconds).as_dict()},
        )
        try:
            response = await self.client.handle_async_request(request)
        except upstream._ClientGone:
            return
        except httpx.TimeoutException as exc:
            reason = f"upstream timed out ({type(exc).__name__})"
            raise BackendFailure(504, "timeout", reason) from None
        except httpx.ConnectError as exc:
            raise BackendFailure(502, "connect", f"cannot connect to upstream: {exc}") from None
        except httpx.TransportError as exc:
            raise BackendFailure(502, "protocol", f"upstream failed: {exc!r}") from None
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        try:
            await relay_response(
                response.status_code,
                list(response.headers.raw),
                stream.__aiter__,
                receive,
                send,
                self.spec.name,
                (httpx.TransportError,),
            )
        finally:
            await stream.aclose()


# --- httpcore ------------------------------------------------------------------------------


class HttpcorePool(httpcore.AsyncConnectionPool):
    """httpcore's pool, with the `close()` the gateway calls at shutdown."""

    async def close(self) -> None:
        await self.aclose()


def httpcore_client() -> HttpcorePool:
    return HttpcorePool(
        max_connections=MAX_CONNECTIONS,
        max_keepalive_connections=MAX_CONNECTIONS,
        http1=True,
        http2=False,
    )


class HttpcoreBackend(_Base):
    client: httpcore.AsyncConnectionPool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target, headers, has_body = upstream_request(scope)
        url = self.spec.target + target
        parts = urlsplit(url)
        headers = [(b"host", parts.netloc.encode()), *headers]
        if has_body and not any(n == b"content-length" for n, _ in headers):
            headers.append((b"transfer-encoding", b"chunked"))
        timeout = {
            "connect": self.seconds,
            "read": self.seconds,
            "write": self.seconds,
            "pool": self.seconds,
        }
        request = httpcore.Request(
            scope["method"],
            url,
            headers=headers,
            content=_chunked(_request_body(receive), headers) if has_body else None,
            extensions={"timeout": timeout},
        )
        try:
            response = await self.client.handle_async_request(request)
        except upstream._ClientGone:
            return
        except httpcore.TimeoutException as exc:
            reason = f"upstream timed out ({type(exc).__name__})"
            raise BackendFailure(504, "timeout", reason) from None
        except httpcore.ConnectError as exc:
            raise BackendFailure(502, "connect", f"cannot connect to upstream: {exc}") from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise BackendFailure(502, "protocol", f"upstream failed: {exc!r}") from None
        try:
            await relay_response(
                response.status,
                list(response.headers),
                response.aiter_stream,
                receive,
                send,
                self.spec.name,
                (httpcore.NetworkError, httpcore.ProtocolError),
            )
        finally:
            await response.aclose()


async def _chunked(body: AsyncIterator[bytes], headers: Headers) -> AsyncIterator[bytes]:
    """httpcore sends bytes as given: frame them when the length is unknown."""
    framed = any(n == b"transfer-encoding" for n, _ in headers)
    async for chunk in body:
        yield b"%x\r\n%s\r\n" % (len(chunk), chunk) if framed else chunk
    if framed:
        yield b"0\r\n\r\n"


# --- a minimal client: asyncio.Protocol + httptools ----------------------------------------


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; parses responses with httptools as bytes arrive."""

    HIGH_WATER = 256 * 1024

    def __init__(self) -> None:
        import httptools

        self._httptools = httptools
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._write_ready: asyncio.Future[None] | None = None
        self._reset(head=False)

    # -- one exchange at a time
    def _reset(self, head: bool) -> None:
        self.parser = self._httptools.HttpResponseParser(self)
        self.head = head
        self.status = 0
        self.headers: Headers = []
        self.keep_alive = False
        self.complete = False
        self.error: BaseException | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None

    def begin(self, head: bool) -> None:
        self._reset(head)

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self.complete:
            return  # nothing may follow a response we did not ask for; it is dropped on reuse
        try:
            self.parser.feed_data(data)
        except self._httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(exc or ConnectionResetError("upstream closed the connection"))
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)

    def pause_writing(self) -> None:
        self._write_ready = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._write_ready = None

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if self.head:  # httptools cannot be told a HEAD response has no body
            self.complete = True
            self.keep_alive = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > self.HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # -- the consumer side
    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def write(self, data: bytes) -> None:
        assert self.transport is not None
        if self.closed:
            raise ConnectionResetError("upstream closed the connection")
        self.transport.write(data)
        if self._write_ready is not None:
            await self._write_ready

    async def response_started(self) -> None:
        while not self.status and self.error is None:
            await self.wait()
        if self.error is not None and not self.status:
            raise self.error

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.paused and self.buffered < self.HIGH_WATER // 2 and self.transport:
                    self.paused = False
                    self.transport.resume_reading()
                yield chunk
            elif self.complete:
                return
            elif self.error is not None:
                raise self.error
            else:
                await self.wait()

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class MiniPool:
    """Idle keep-alive connections per origin; new ones are opened on demand."""

    def __init__(self, max_idle: int = MAX_CONNECTIONS) -> None:
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def acquire(self, host: str, port: int, timeout: float) -> tuple[_Connection, bool]:
        """(a connection, whether it was reused)."""
        idle = self._idle.get((host, port))
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(_Connection, host, port)
        return conn, False

    def release(self, host: str, port: int, conn: _Connection) -> None:
        idle = self._idle.setdefault((host, port), [])
        if conn.reusable and len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        """The gateway's shutdown: drop the idle connections."""
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def httptools_client() -> MiniPool:
    return MiniPool()


class HttptoolsBackend(_Base):
    client: MiniPool

    def __init__(self, spec: BackendSpec, client: MiniPool) -> None:
        super().__init__(spec, client)
        parts = urlsplit(spec.target)
        if parts.scheme != "http":
            raise ValueError("the httptools prototype speaks plain http:// only")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path
        self.host_header = parts.netloc.encode()

    def _head(self, method: str, target: str, headers: Headers, chunked: bool) -> bytes:
        lines = [f"{method} {self.prefix}{target} HTTP/1.1".encode(), b"host: " + self.host_header]
        lines.extend(name + b": " + value for name, value in headers)
        if chunked:
            lines.append(b"transfer-encoding: chunked")
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target, headers, has_body = upstream_request(scope)
        method: str = scope["method"]
        chunked = has_body and not any(n == b"content-length" for n, _ in headers)
        head = self._head(method, target, headers, chunked)
        for attempt in range(2):
            conn, reused = await self._connect()
            conn.begin(head=method == "HEAD")
            try:
                await conn.write(head)
                if has_body:
                    async for chunk in _request_body(receive):
                        await conn.write(
                            b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
                        )
                    if chunked:
                        await conn.write(b"0\r\n\r\n")
                async with asyncio.timeout(self.seconds):
                    await conn.response_started()
            except upstream._ClientGone:
                conn.close()
                return
            except TimeoutError:
                conn.close()
                raise BackendFailure(504, "timeout", "upstream timed out") from None
            except (OSError, self._parse_errors()) as exc:
                conn.close()
                # A kept-alive connection the upstream closed meanwhile: once more, fresh.
                if reused and not has_body and attempt == 0:
                    continue
                raise BackendFailure(502, "protocol", f"upstream failed: {exc!r}") from None
            break
        finished = False
        try:
            await relay_response(
                conn.status,
                conn.headers,
                conn.body,
                receive,
                send,
                self.spec.name,
                (OSError, self._parse_errors()),
            )
            finished = True
        finally:
            if finished:
                self.client.release(self.host, self.port, conn)
            else:
                conn.close()

    async def _connect(self) -> tuple[_Connection, bool]:
        pool: MiniPool = self.client
        try:
            return await pool.acquire(self.host, self.port, self.seconds)
        except TimeoutError:
            raise BackendFailure(504, "timeout", "connecting to upstream timed out") from None
        except OSError as exc:
            raise BackendFailure(502, "connect", f"cannot connect to upstream: {exc}") from None

    @staticmethod
    def _parse_errors() -> type[Exception]:
        import httptools

        return httptools.HttpParserError


# --- the registry bench.variant chooses from -------------------------------------------------

TRANSPORTS: dict[str, tuple[Callable[[], Any], Callable[[BackendSpec, Any], Any]]] = {
    "httpx": (httpx_client, HttpxBackend),
    "httpx-pool8": (httpx_small_pool_client, HttpxBackend),
    "httpx-transport": (httpx_transport_client, HttpxTransportBackend),
    "httpcore": (httpcore_client, HttpcoreBackend),
    "httptools": (httptools_client, HttptoolsBackend),
}

DESCRIPTIONS = {
    "httpx": "httpx.AsyncClient, pool of 512 (former)",
    "httpx-pool8": "httpx.AsyncClient, pool of 8",
    "httpx-transport": "httpx.AsyncHTTPTransport, no client layer",
    "httpcore": "httpcore.AsyncConnectionPool",
    "httptools": "asyncio.Protocol + httptools (minimal)",
}
