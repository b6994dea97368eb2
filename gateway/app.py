"""The gateway ASGI application: the front door and the lifespan.

`Gateway.__call__` is the request path. It believes the forwarded headers of
trusted proxies only (`gateway.proxies`), reads the live `RouteTable` snapshot
once, matches the canonical path (`gateway.paths`), and hands over to
`dispatch.serve`. Paths under the admin prefix and the metrics path are the
gateway's own and never reach a backend, however the client spells them; with
`--admin-listen` they are served on that listener only, and it serves nothing
else (uvicorn serves both sockets with this one app: `scope["server"]` says
which one a request came in on).

The lifespan owns everything long-lived: the shared HTTP client, the running
backends (each WSGI backend with its thread pool), the control plane's watch of
its source and, with a store, this worker's heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway import upstream_client
from gateway.admin import Admin, is_loopback
from gateway.backends import BackendPool
from gateway.concurrency import refuse_overloaded
from gateway.console import Sampler
from gateway.control import ControlPlane
from gateway.dispatch import serve
from gateway.drain import Drain
from gateway.fleet.events import EventLog, FileEvents, StoreEvents
from gateway.fleet.source import RedisSource
from gateway.fleet.store import StoreAddress
from gateway.heap import HeapFreezer
from gateway.http import own_answer, send_json
from gateway.metrics import Metrics
from gateway.paths import canonical
from gateway.proxies import TrustedProxies
from gateway.routefile.model import ConfigError
from gateway.settings import Settings
from gateway.shadow import ShadowRunner
from gateway.sources import FileSource, Source
from gateway.table import BodyLimits, RouteTable, bound
from gateway.types import ASGIApp, Message, Receive, Scope, Send
from gateway.wsgi import WSGIOptions

log = logging.getLogger("gateway")

F = TypeVar("F", bound=Callable[..., Any])


def coroutine_function(function: F) -> F:
    """Mark `function`, a plain function returning a coroutine, as a coroutine
    function for the servers and frameworks that ask (uvicorn takes an app whose
    `__call__` is not one for an ASGI 2 app)."""
    if sys.version_info >= (3, 12):
        return inspect.markcoroutinefunction(function)
    function._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]
    return function


class Gateway:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings = settings or Settings()
        self.metrics = Metrics() if settings.metrics else None
        self._own_state: tempfile.TemporaryDirectory[str] | None = None
        if settings.state_dir is None:  # embedded, not under `gateway serve`
            # A write still finishing in a worker thread (the event log, shared
            # figures) may land while the directory is removed at shutdown.
            self._own_state = tempfile.TemporaryDirectory(
                prefix="gateway-state-", ignore_cleanup_errors=True
            )
        state_dir = settings.state_dir or self._own_state.name  # type: ignore[union-attr]
        self.instance = _instance(Path(state_dir))
        self.store: RedisSource | None = None
        source: Source
        events: EventLog
        if settings.store:
            seed = settings.config if Path(settings.config).is_file() else None
            self.store = RedisSource(StoreAddress(settings.store, settings.store_key), seed)
            source, events = self.store, StoreEvents(self.store.store)
        else:
            source = FileSource(settings.config, settings.watch_interval)
            events = FileEvents(state_dir)
        self.control = ControlPlane(
            source,
            self.metrics,
            settings.route_headers,
            state_dir,
            settings.reserved,
            events=events,
            limits=BodyLimits(settings.max_body, settings.body_timeout),
        )
        if self.metrics is not None:
            self.metrics.set_weights_source(self._weights)
        self.draining = False
        self._drain = Drain(settings.shutdown_delay, settings.graceful_timeout, self.start_draining)
        address = settings.admin_address
        admin_host = address[0] if address else settings.host
        # The admin listener's port; None when the admin API shares the traffic port.
        self._admin_port = address[1] if address else None
        exposed = not is_loopback(admin_host)
        self.admin = Admin(
            self.control,
            Sampler(self.metrics, state_dir),
            settings.admin_token,
            lambda: self.draining,
            exposed=exposed,
        )
        self._reserved = settings.reserved
        # Requests in flight, and their bound (`--limit-concurrency`, set by the worker's
        # factory; `gateway.concurrency`); the health probes are never refused.
        self.in_flight = 0
        self.max_in_flight: float = math.inf
        self._never_refused = frozenset(
            settings.admin_prefix + name for name in ("healthz", "readyz")
        )
        self._proxies = TrustedProxies(settings.forwarded_allow_ips)
        self._prefix_bare = settings.admin_prefix.rstrip("/")
        self._pool: BackendPool | None = None
        self.shadows: ShadowRunner | None = None
        self._heap = HeapFreezer(self.control.lock)
        self.control.on_applied = self._heap.refreeze_soon
        if self.store is not None:
            # Tell the fleet what this worker serves at once, not at the next heartbeat.
            self.control.on_reloaded = self.store.beat_now.set
        self._watcher: asyncio.Task[None] | None = None

    @property
    def table(self) -> RouteTable | None:
        return self.control.table

    # --- request path --------------------------------------------------------

    @coroutine_function
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function returning the awaitable that serves the request, not a
        # coroutine of its own: a frame less that every suspension of every request
        # would resume. `dispatch.serve` keeps the in-flight count and the drain's cut;
        # the gateway's own answers are counted by `_counted`.
        kind = scope["type"]
        if kind == "lifespan":
            return self._lifespan(receive, send)
        if self.in_flight >= self.max_in_flight and scope["path"] not in self._never_refused:
            return refuse_overloaded(scope, send)
        # Before anything reads the client: from here on it is the one a trusted
        # proxy names (logs, canaries, apps), the socket's peer is kept for the admin.
        self._proxies.resolve(scope)
        if self.draining and kind == "http":
            send = _closing(send)
        as_sent: str = scope["path"]
        method: str = scope.get("method", "GET")
        table = self.control.table
        route = table.known.get((method, as_sent), _UNKNOWN) if table else _UNKNOWN
        if route is _UNKNOWN:  # not served by this table yet (or no table)
            path = canonical(as_sent)
            if self._reserved.holds(path, as_sent):
                admin = self._admin_port is None or _local_port(scope) == self._admin_port
                return self._counted(self._serve_own(scope, receive, send, path, admin))
            # Matched on the canonical path; the backend gets the path as the client sent it.
            route = table.match(method, path) if table else None
            if table:
                table.remember(method, as_sent, route)
        if self._admin_port is not None and _local_port(scope) == self._admin_port:
            message = {"error": "this listener serves the admin API and metrics only"}
            return self._counted(self._refuse(scope, send, message))
        if route is None:
            return self._counted(_unrouted(scope, send, table))
        return serve(route, scope, receive, send, self)

    async def _counted(self, answer: Awaitable[None]) -> None:
        """An answer of the gateway's own, counted in flight as a routed request is."""
        self.in_flight += 1
        try:
            await answer
        finally:
            self.in_flight -= 1

    async def _serve_own(
        self, scope: Scope, receive: Receive, send: Send, path: str, on_admin_listener: bool
    ) -> None:
        """A path the gateway keeps for itself: the admin API and the metrics."""
        if not on_admin_listener:
            message = {"error": "the admin API and metrics are on the admin listener"}
            await self._refuse(scope, send, message)
        elif path == self._reserved.metrics and scope["type"] == "http":  # under the prefix
            await self._serve_metrics(send)
        elif self._reserved.is_admin(path):
            sub_path = path[len(self._prefix_bare) :]
            await self.admin(scope, receive, own_answer(scope, send), sub_path)
        else:  # spelled under the prefix, climbing out of it with '..'
            await self._refuse(scope, send, {"error": "no such admin endpoint"})

    async def _refuse(self, scope: Scope, send: Send, message: dict[str, str]) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await send_json(own_answer(scope, send), 404, message)

    async def _serve_metrics(self, send: Send) -> None:
        assert self.metrics is not None  # the metrics path is reserved only with metrics
        # Off the event loop: with 10,000 routes the exposition is ~21 MB and takes
        # ~1.8 s to render here, a stall of every request on this worker per scrape.
        body, content_type = await asyncio.to_thread(self.metrics.render)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _weights(self) -> list[tuple[str, str, float]]:
        table = self.control.table
        return table.weights() if table is not None else []

    def start_draining(self) -> None:
        """Not ready from now on, and every response closes its connection (drain.py)."""
        self.draining = True

    # --- lifespan ------------------------------------------------------------

    async def startup(self) -> None:
        settings = self.settings
        wsgi = WSGIOptions(settings.wsgi_threads, settings.wsgi_buffer, settings.wsgi_wait)
        self._pool = BackendPool(wsgi, upstream_client.new_client())
        self.shadows = ShadowRunner()
        config = await self.control.start(self._pool, self.shadows)
        log.info(
            "route table loaded: source=%s sha256=%s routes=%d backends=%s default=%s",
            self.control.source.name,
            config.sha256[:12],
            len(config.routes),
            ",".join(b.name for b in config.backends),
            config.default or "-",
        )
        if self.admin.exposed and self.admin.token is None:
            log.warning(
                "the admin API listens on a non-loopback address without "
                "GATEWAY_ADMIN_TOKEN: admin changes are refused, and reads answer "
                "loopback clients only; set a token to use it remotely"
            )
        self._heap.freeze()
        self._watcher = asyncio.create_task(self.control.follow(), name="gateway-watch")
        self.control.spawn(self.control.state.share_shadow_results())
        self.control.spawn(self.control.rollbacks.follow(self.settings.watch_interval))
        if self.store is not None:
            self.control.spawn(self.store.heartbeats(self._heartbeat))
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            # Only possible in the main thread (a served process, not an embedding test).
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._drain.install()

    def _on_sighup(self) -> None:
        self.control.spawn(self.control.reload("SIGHUP"))

    async def shutdown(self) -> None:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        self._drain.uninstall()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._heap.close()
        shadows, self.shadows = self.shadows, None
        if shadows is not None:
            await shadows.close()
        await self.control.close()
        if self.store is not None:
            await self.store.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
            await pool.http.close()
        if self._own_state is not None:
            self._own_state.cleanup()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            await self.startup()
        except Exception as exc:
            if isinstance(exc, ConfigError):
                for problem in exc.problems:
                    log.error("%s", problem)
                reason = f"invalid route table ({len(exc.problems)} problems)"
            else:
                reason = str(exc)
            log.error("gateway failed to start: %s", reason)
            await self.shutdown()
            await send({"type": "lifespan.startup.failed", "message": reason})
            # Like Starlette: raising after 'failed' tells the server (and test
            # clients) that the app is done; uvicorn logs no traceback for it.
            raise RuntimeError(reason) from None
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await self.shutdown()
        await send({"type": "lifespan.shutdown.complete"})

    def _heartbeat(self) -> dict[str, Any]:
        """This worker, as `/-/fleet` shows it."""
        assert self.store is not None  # beats only with a store
        error = self.control.last_error
        return {
            "instance": self.instance["id"],
            "host": self.instance["host"],
            "instance_pid": self.instance["pid"],
            "instance_since": self.instance["since"],
            "pid": os.getpid(),
            "revision": self.store.revision_of(self.control.applied_sha),
            "last_error": error.problems[0] if error else self.store.error,
            "last_seen": round(time.time(), 3),
        }


def _instance(state_dir: Path) -> dict[str, Any]:
    """Who this serve is (written by `gateway serve`), or this process when embedded."""
    try:
        found: dict[str, Any] = json.loads((state_dir / "instance.json").read_bytes())
        return found
    except (OSError, ValueError):
        return {
            "id": uuid.uuid4().hex[:12],
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": round(time.time(), 3),
        }


def _closing(send: Send) -> Send:
    """`send` adding `Connection: close` to the response: the client's next request
    opens a new connection, which the load balancer gives to a gateway that stays."""

    async def send_closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return send_closing


async def _unrouted(scope: Scope, send: Send, table: RouteTable | None) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1000})
    elif table is None:
        await send_json(own_answer(scope, send), 503, {"error": "no route table yet"})
    else:
        message = {"error": "no route matches this request and there is no default"}
        await send_json(own_answer(scope, send), 404, message)


_UNKNOWN: Any = object()  # no route known for the path yet


def _local_port(scope: Scope) -> int | None:
    server = scope.get("server")
    return server[1] if server else None


def create_app(settings: Settings | None = None) -> Gateway:
    return Gateway(settings)


def create_app_from_env() -> ASGIApp:
    """The factory each `gateway serve` worker process calls."""
    settings = Settings.load()
    if settings.app_dir and settings.app_dir not in sys.path:
        sys.path.insert(0, settings.app_dir)
    gateway = Gateway(settings)
    if settings.limit_concurrency:
        gateway.max_in_flight = settings.limit_concurrency
    return bound(gateway)
