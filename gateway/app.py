"""The gateway ASGI application: front door, lifespan, and the live table.

`Gateway.__call__` is the request path. It reads `self.table` once (the live
`RouteTable` snapshot), matches, and hands over to `dispatch.serve`. Paths
under the admin prefix and the metrics path are the gateway's own and never
reach a backend, however the client encodes them.

The lifespan owns everything long-lived: the WSGI thread pool, the shared
HTTP client, the running backends, and the file watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import posixpath
import signal
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gateway import upstream
from gateway.admin import Admin
from gateway.backends import BackendPool
from gateway.dispatch import own_answer, send_json, serve
from gateway.metrics import Metrics
from gateway.reload import Reloader
from gateway.rollback import RollbackWatch
from gateway.routefile.editing import EditError, flip
from gateway.routefile.model import ConfigError, GatewayConfig, RollbackSpec
from gateway.settings import Settings
from gateway.shadow import ShadowRunner, ShadowStats, merge_reports
from gateway.table import RouteTable, build_table
from gateway.types import Receive, Scope, Send

log = logging.getLogger("gateway")

# How long after a swap the heap is frozen again (see Gateway._refreeze_soon).
REFREEZE_DELAY = 2.0


class Gateway:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.table: RouteTable | None = None
        self.metrics = Metrics() if self.settings.metrics else None
        if self.metrics is not None:
            self.metrics.set_weights_source(self._weights)
        self.reloader = Reloader(self, Path(self.settings.config), self.settings.watch_interval)
        self.admin = Admin(self)
        self._prefix = self.settings.admin_prefix
        self._prefix_bare = self._prefix.rstrip("/")
        self._metrics_path = self.settings.metrics_path if self.metrics else None
        self._pool: BackendPool | None = None
        self.shadows: ShadowRunner | None = None
        self.policies = Policies(self)
        self._watcher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[object]] = set()
        self._heap_frozen = False
        self._refreeze: asyncio.Task[None] | None = None

    # --- request path --------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        if "//" in path or "/." in path or "\\" in path:
            # Encoded or dotted spellings must not smuggle a request past the
            # reserved-path check below, nor hide it from the admin API.
            path = posixpath.normpath(path.replace("\\", "/"))
            if path.startswith("//"):
                path = "/" + path.lstrip("/")
        if path.startswith(self._prefix) or path == self._prefix_bare:
            await self.admin(
                scope, receive, own_answer(scope, send), path[len(self._prefix_bare) :]
            )
            return
        if path == self._metrics_path and kind == "http":
            await self._serve_metrics(send)
            return
        table = self.table
        route = table.match(scope.get("method", "GET"), scope["path"]) if table else None
        if route is not None:
            await serve(route, scope, receive, send, self.shadows)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})
        elif table is None:
            await send_json(own_answer(scope, send), 503, {"error": "no route table yet"})
        else:
            message = {"error": "no route matches this request and there is no default"}
            await send_json(own_answer(scope, send), 404, message)

    async def _serve_metrics(self, send: Send) -> None:
        assert self.metrics is not None  # guarded by _metrics_path
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
        table = self.table
        return table.weights() if table is not None else []

    # --- the live table ------------------------------------------------------

    async def apply(self, config: GatewayConfig) -> RouteTable:
        """Start what `config` needs, publish its table, retire what it dropped."""
        if self._pool is None:
            raise RuntimeError("the gateway has not started")
        backends = await self._pool.prepare(config.backends)
        table = build_table(
            config, backends, self.metrics, self.settings.route_headers, self.policies
        )
        self.table = table  # the swap: one assignment, no lock on the request path
        self.policies.forget_unused(table)
        self._pool.retire(backends)
        if self.metrics is not None:
            self.metrics.reload_result(True, table.loaded_at)
        if self._heap_frozen:
            self._refreeze_soon()
        return table

    def _refreeze_soon(self) -> None:
        """Freeze the new table with the rest of the long-lived heap, once settled.

        A table built by a reload lives as long as the startup one, but it was not
        there when startup froze the heap: every full collection would walk it
        again (docs/benchmarks.md, "the garbage collector"). A burst of reloads
        refreezes once, after the last.
        """
        if self._refreeze is not None:
            self._refreeze.cancel()
        self._refreeze = asyncio.create_task(self._refreeze_after(REFREEZE_DELAY))

    async def _refreeze_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        # Not while a file is being parsed: its tree, frozen half-built, would
        # never be collected (it holds reference cycles).
        async with self.reloader.lock:
            # Collect what is not frozen (the reload's garbage) and freeze the rest.
            # Not unfreezing first keeps the pause to the new objects (tens of ms
            # for a 10,000-route table, not the whole heap's ~0.5 s); the old table
            # is freed by reference counting as its last request ends, frozen or not.
            gc.collect()
            gc.freeze()
        self._refreeze = None

    @property
    def ready(self) -> bool:
        return self.table is not None

    # --- lifespan ------------------------------------------------------------

    async def startup(self) -> None:
        executor = ThreadPoolExecutor(
            max_workers=self.settings.wsgi_threads, thread_name_prefix="gateway-wsgi"
        )
        self._pool = BackendPool(executor, upstream.new_client())
        self.shadows = ShadowRunner()
        config = await self.reloader.load_initial()
        log.info(
            "route table loaded: source=%s sha256=%s routes=%d backends=%s default=%s",
            self.settings.config,
            config.sha256[:12],
            len(config.routes),
            ",".join(b.name for b in config.backends),
            config.default or "-",
        )
        # Everything loaded so far lives as long as the process: the apps, the table,
        # the metric children. Keep it out of the collector's full passes, which
        # otherwise walk it every few seconds (docs/benchmarks.md rows 1 and 4).
        gc.collect()
        gc.freeze()
        self._heap_frozen = True
        self._watcher = asyncio.create_task(self.reloader.watch(), name="gateway-watch")
        self.spawn(self.policies.share_shadow_results())
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            # Only possible in the main thread (a served process, not an embedding test).
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        self.spawn(self.reloader.reload("SIGHUP"))

    def spawn(self, work: Coroutine[Any, Any, object]) -> None:
        """Run `work` in the background, kept until done and cancelled at shutdown."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def shutdown(self) -> None:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for own in (self._watcher, self._refreeze):
            if own is not None:
                own.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await own
        shadows, self.shadows = self.shadows, None
        if shadows is not None:
            await shadows.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
            await pool.http.close()
            pool.executor.shutdown(wait=False, cancel_futures=True)

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


class Policies:
    """State that outlives table swaps: shadow results, rollback windows."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.stats: dict[str, ShadowStats] = {}
        self.watches: dict[tuple[str, str, str, RollbackSpec], RollbackWatch] = {}

    def shadow_stats(self, route_id: str) -> ShadowStats:
        return self.stats.setdefault(route_id, ShadowStats())

    def shadow_reports(self) -> dict[str, dict[str, Any]]:
        """Every route's shadow results; with several workers, all of theirs together."""
        own = {route: stats.report() for route, stats in self.stats.items()}
        directory = self.gateway.settings.state_dir
        if not directory:
            return own
        reports = [own]
        for path in Path(directory).glob("shadow-*.json"):
            if path.name == f"shadow-{os.getpid()}.json":
                continue
            with contextlib.suppress(OSError, ValueError):
                reports.append(json.loads(path.read_bytes()))
        return merge_reports(reports)

    async def share_shadow_results(self, every: float = 1.0) -> None:
        """Publish this worker's shadow results for the others (several workers only)."""
        directory = self.gateway.settings.state_dir
        if not directory:
            return
        path = Path(directory) / f"shadow-{os.getpid()}.json"
        written = ""
        while True:
            await asyncio.sleep(every)
            data = json.dumps({r: s.report() for r, s in self.stats.items()})
            if data != written:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(data)
                os.replace(tmp, path)
                written = data

    def rollback_watch(
        self, route_id: str, backend: str, fallback: str, spec: RollbackSpec
    ) -> RollbackWatch:
        key = (route_id, backend, fallback, spec)
        watch = self.watches.get(key)
        if watch is None:
            watch = RollbackWatch(route_id, backend, fallback, spec, self._trip)
            self.watches[key] = watch
        return watch

    def forget_unused(self, table: RouteTable) -> None:
        """Drop the rollback watches `table` no longer uses: a route an operator moves
        back after a rollback starts over with an empty window, not a tripped watch."""
        used = {id(route.rollback) for route in table.routes if route.rollback is not None}
        self.watches = {key: w for key, w in self.watches.items() if id(w) in used}

    def _trip(self, watch: RollbackWatch, total: int, failed: int) -> None:
        log.error(
            "automatic rollback: route=%s from=%s to=%s failed=%d of %d in %gs "
            "(over the %g limit); the route stays on %s until an operator flips it",
            watch.route_id,
            watch.backend,
            watch.fallback,
            failed,
            total,
            watch.spec.window,
            watch.spec.error_ratio,
            watch.fallback,
        )
        self.gateway.spawn(self._roll_back(watch))

    async def _roll_back(self, watch: RollbackWatch) -> None:
        gateway = self.gateway
        try:
            await gateway.reloader.edit(
                flip, gateway.settings.config, watch.route_id, watch.fallback, watch.backend
            )
        except (ConfigError, EditError, OSError) as exc:
            log.error(
                "automatic rollback of route=%s could not write the file: %s", watch.route_id, exc
            )
            return
        if gateway.metrics is not None:
            gateway.metrics.rollbacks.labels(watch.route_id).inc()
        await gateway.reloader.reload("automatic rollback")


def create_app(settings: Settings | None = None) -> Gateway:
    return Gateway(settings)


def create_app_from_env() -> Gateway:
    """The factory each `gateway serve` worker process calls."""
    return Gateway(Settings.from_env())
