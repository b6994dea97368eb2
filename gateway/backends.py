"""Backends: the three ways the gateway can serve a request, behind one seam.

Every backend is an ASGI application with `start()` and `close()`:

- `WSGIBackend` (`gateway.wsgi`): a WSGI app (the legacy Flask app) run
  in-process through a2wsgi, on a thread pool of its own.
- `ASGIBackend`: an ASGI app (the new FastAPI app) run in-process; the
  gateway drives its lifespan startup/shutdown itself, and hands each request
  a copy of the state the app's lifespan set up.
- `HTTPBackend`: a remote upstream, proxied over HTTP by `gateway.upstream`.

Backends are long-lived: a reload that keeps a backend's spec keeps the same
running instance, so a flip never restarts an application.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Protocol

from gateway.http import app_scope
from gateway.routefile.loading import import_target
from gateway.routefile.model import BackendSpec
from gateway.types import ASGIApp, Message, Receive, Scope, Send
from gateway.upstream import HTTPBackend
from gateway.wsgi import WSGIBackend, WSGIOptions

log = logging.getLogger("gateway.backends")


class BackendStartError(Exception):
    """A backend could not start (its lifespan startup failed or it did not import)."""


class Backend(Protocol):
    spec: BackendSpec
    supports_websocket: bool
    active: int  # requests in flight, kept by the dispatcher (drain before close)

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]: ...


class ASGIBackend:
    supports_websocket = True
    active = 0

    def __init__(self, spec: BackendSpec, app: ASGIApp | None = None) -> None:
        self.spec = spec
        self.app: ASGIApp = app if app is not None else import_target(spec.target)
        self.state: dict[str, Any] = {}
        self._lifespan: _Lifespan | None = None

    async def start(self) -> None:
        self._lifespan = _Lifespan(self.app, self.state, self.spec.name)
        await self._lifespan.startup()

    async def close(self) -> None:
        if self._lifespan is not None:
            await self._lifespan.shutdown()
            self._lifespan = None

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # The app's own awaitable, not a coroutine of this class awaiting it: a frame
        # less that every suspension of the request would resume (13 for a FastAPI
        # endpoint run in a thread).
        return self.app(app_scope(scope, self.state.copy()), receive, send)

    def request_state(self) -> dict[str, Any]:
        """A request's `state`: like a server, a copy of what the lifespan set up."""
        return self.state.copy()

    def call(
        self, scope: Scope, receive: Receive, send: Send, state: dict[str, Any]
    ) -> Awaitable[None]:
        """Call the app with `state` (gateway.session adds the shared login to it).

        A scope of its own, as a server gives each app: frameworks rewrite theirs
        (root_path, path_params, router), and the same request may go on to a
        fallback or a shadow backend."""
        return self.app(app_scope(scope, state), receive, send)


class _Lifespan:
    """Runs an ASGI app's lifespan protocol as the server would."""

    def __init__(self, app: ASGIApp, state: dict[str, Any], name: str) -> None:
        self.app = app
        self.state = state
        self.name = name
        self.supported = True
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._failure: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def _receive(self) -> Message:
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.failed":
            self._failure = str(message.get("message") or "startup failed")
        if kind.startswith("lifespan.startup."):
            self._started.set()
        elif kind.startswith("lifespan.shutdown."):
            if kind == "lifespan.shutdown.failed":
                log.warning(
                    "backend=%s lifespan shutdown failed: %s", self.name, message.get("message")
                )
            self._stopped.set()

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as exc:
            if not self._started.is_set():
                # An app that rejects the lifespan scope simply does not use it.
                self.supported = False
                log.info("backend=%s has no lifespan support (%s)", self.name, exc)
            else:
                self._failure = self._failure or repr(exc)
        finally:
            self._started.set()
            self._stopped.set()

    async def startup(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lifespan:{self.name}")
        await self._inbox.put({"type": "lifespan.startup"})
        await self._started.wait()
        if self._failure is not None:
            raise BackendStartError(f"backend {self.name!r} failed to start: {self._failure}")

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout=10)
        except TimeoutError:
            log.warning("backend=%s lifespan shutdown did not finish in 10s", self.name)
            self._task.cancel()


def build_backend(spec: BackendSpec, wsgi: WSGIOptions, http: Any) -> Backend:
    """Instantiate a backend for a spec (not started). An in-process app is imported
    here, and an app factory (`module:create_app()`) called: once per worker."""
    if spec.kind == "url":
        return HTTPBackend(spec, http)
    try:
        return WSGIBackend(spec, wsgi) if spec.kind == "wsgi" else ASGIBackend(spec)
    except Exception as exc:  # the user's import or factory: a clear reason, no traceback
        raise BackendStartError(
            f"backend {spec.name!r} did not load: {spec.target} raised {exc!r}"
        ) from None


class BackendPool:
    """The running backends of one gateway process, shared by successive tables.

    `prepare()` returns running backends for a config, reusing those whose
    identity is unchanged and starting the new ones; nothing is swapped until
    every new backend has started. `retire()` closes the backends the live
    table no longer uses once their in-flight requests have finished.
    """

    def __init__(self, wsgi: WSGIOptions, http: Any, drain_timeout: float = 30.0):
        self.wsgi = wsgi
        self.http = http
        self.drain_timeout = drain_timeout
        self._running: dict[tuple[object, ...], Backend] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @staticmethod
    def identity(spec: BackendSpec) -> tuple[object, ...]:
        # In-process ASGI apps are singletons: one running instance per import path
        # (their lifespan runs once). A WSGI app has none: a pool per thread count.
        if spec.kind == "asgi":
            return (spec.kind, spec.target)
        return (spec.kind, spec.target, spec.threads) if spec.kind == "wsgi" else spec.identity

    async def prepare(self, specs: tuple[BackendSpec, ...]) -> dict[str, Backend]:
        chosen: dict[str, Backend] = {}
        started: list[Backend] = []
        try:
            for spec in specs:
                key = self.identity(spec)
                backend = self._running.get(key)
                if backend is None:
                    backend = next((b for b in started if self.identity(b.spec) == key), None)
                if backend is None:
                    backend = build_backend(spec, self.wsgi, self.http)
                    await backend.start()
                    started.append(backend)
                chosen[spec.name] = backend
        except BaseException:
            for backend in started:
                await backend.close()
            raise
        for backend in started:
            self._running[self.identity(backend.spec)] = backend
        return chosen

    def retire(self, keep: dict[str, Backend]) -> None:
        """Close, after they drain, the running backends not in `keep`."""
        kept = {id(b) for b in keep.values()}
        for key, backend in list(self._running.items()):
            if id(backend) not in kept:
                del self._running[key]
                task = asyncio.create_task(self._close_when_drained(backend))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def _close_when_drained(self, backend: Backend) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        while backend.active and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if backend.active:
            log.warning("backend=%s closed with requests still in flight", backend.spec.name)
        try:
            await backend.close()
        except Exception as exc:
            log.warning("backend=%s failed to close: %r", backend.spec.name, exc)

    async def close(self) -> None:
        """Close everything (at shutdown)."""
        for task in list(self._closing):
            await task
        for backend in self._running.values():
            try:
                await backend.close()
            except Exception as exc:
                log.warning("backend=%s failed to close: %r", backend.spec.name, exc)
        self._running.clear()
