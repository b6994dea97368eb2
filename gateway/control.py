"""The control plane: the one owner of the live route table and of its edits.

    ControlPlane
    ├── table             the live `RouteTable` snapshot (None until the first load)
    ├── apply(config)     start what a validated config needs, publish its table
    ├── reload(trigger)   read the source, validate, apply; or keep the live table
    ├── follow()          reload whenever the source says its text changed
    ├── flip / set_canary one step each: edit the source, validate, apply, record
    └── rollbacks         what a tripped rollback watch does (`gateway.rollback_action`)

Whatever the trigger (the source's watch, SIGHUP, `POST /-/reload`, an edit
through the admin API, an automatic rollback), a change is one serialised
operation: read the text, skip it if it is unchanged, validate it completely,
start new backends, then publish the new table by one assignment. Any failure
leaves the live table untouched and is kept as `last_error` until a good text
arrives. Where the text lives is the `Source`'s business (`gateway.sources`).

The live table is the source's table with the rollbacks the source could not
take laid over it (`gateway.fleet.overrides`); every edit, applied reload and
rejected text is recorded in the event log (`gateway.fleet.events`).

Validation runs in a worker thread, so the event loop keeps serving while a
large table is parsed (PyYAML takes ~1.6 s for 10,000 routes), and with the
cyclic garbage collector paused: its full passes would otherwise walk the
half-built tree several times, each pass stopping every thread (up to
~200 ms each for 10,000 routes; docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.backends import BackendPool
from gateway.fleet.events import EventLog, Recorder
from gateway.fleet.overrides import Overrides, overlay
from gateway.metrics import Metrics
from gateway.paths import ReservedPaths
from gateway.rollback_action import RollbackAction
from gateway.route_state import RouteState
from gateway.routefile.changes import changed_routes
from gateway.routefile.editing import Edit, EditResult, flip, set_canary
from gateway.routefile.loading import parse_config
from gateway.routefile.model import ConfigError, GatewayConfig, Position, Problem
from gateway.shadow import ShadowRunner
from gateway.sources import Source
from gateway.table import DEFAULT_LIMITS, BodyLimits, RouteTable, build_table

log = logging.getLogger("gateway.control")


@dataclass(frozen=True, slots=True)
class ReloadError:
    at: float
    problems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    changed: bool
    error: ReloadError | None = None


@dataclass(frozen=True, slots=True)
class EditOutcome:
    """An edit that was stored: what it changed, and whether its table is live here."""

    result: EditResult
    error: ReloadError | None = None  # the stored text could not be applied


class ControlPlane:
    def __init__(
        self,
        source: Source,
        metrics: Metrics | None = None,
        route_headers: bool = True,
        state_dir: str | None = None,
        reserved: ReservedPaths | None = None,
        events: EventLog | None = None,
        limits: BodyLimits = DEFAULT_LIMITS,
    ) -> None:
        self.source = source
        self.reserved = reserved
        self.limits = limits
        self.metrics = metrics
        self.route_headers = route_headers
        self.events = events
        self._recorder = Recorder(events, self.spawn) if events is not None else None
        self.overrides = Overrides(state_dir) if state_dir else None
        self.rollbacks = RollbackAction(self)
        self.state = RouteState(self.rollbacks.tripped, state_dir)
        self.config: GatewayConfig | None = None  # the source's table, before overrides
        self.table: RouteTable | None = None
        self.last_error: ReloadError | None = None
        # Held while a text is read, parsed, edited or applied: reloads and edits take
        # turns, and the heap refreeze waits until no parse is half done.
        self.lock = asyncio.Lock()
        self.on_applied: Callable[[], None] = lambda: None
        self.on_reloaded: Callable[[], None] = lambda: None  # whatever the outcome
        self._pool: BackendPool | None = None
        self._shadows: ShadowRunner | None = None
        self.applied_sha: str | None = None  # of the source's text the live table is from
        # The overrides file as it was when the live table read it (None: no file): a
        # worker re-applies whenever the file differs from that, whenever it was written.
        self.overrides_seen: tuple[int, int] | None = None
        self._failed_key: str | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    # --- applying tables -------------------------------------------------------

    async def start(self, pool: BackendPool, shadows: ShadowRunner) -> GatewayConfig:
        """The first load: on failure the gateway must not start (raises ConfigError)."""
        self._pool = pool
        self._shadows = shadows
        async with self.lock:
            config = parse_config(
                await self.source.read(), self.source.name, reserved=self.reserved
            )
            await self.apply(self._overlaid(config))
            self.config = config
            self.applied_sha = config.sha256
            return config

    def _overlaid(self, config: GatewayConfig) -> GatewayConfig:
        """`config` with the rollbacks it has not made moot (none without a state dir)."""
        if self.overrides is None:
            return config
        self.overrides_seen = self.overrides.signature()  # before reading: a later write shows
        return overlay(config, self.overrides.prune(config))

    async def reapply(self) -> None:
        """Apply the source's table again, with the rollbacks as they are now."""
        async with self.lock:
            if self.config is not None:
                await self.apply(self._overlaid(self.config))

    async def apply(self, config: GatewayConfig) -> RouteTable:
        """Start what `config` needs, publish its table, retire what it dropped."""
        if self._pool is None:
            raise RuntimeError("the control plane has not started")
        backends = await self._pool.prepare(config.backends)
        table = build_table(
            config,
            backends,
            self.metrics,
            self.route_headers,
            self.state,
            self._shadows,
            self.limits,
        )
        self.table = table  # the swap: one assignment, no lock on the request path
        self.state.forget_unused(
            {id(r.fallback.rollback) for r in table.routes if r.fallback and r.fallback.rollback}
        )
        self._pool.retire(backends)
        if self.metrics is not None:
            self.metrics.reload_result(True, table.loaded_at)
        self.on_applied()
        return table

    async def reload(self, trigger: str) -> ReloadResult:
        async with self.lock:
            return await self._reload(trigger)

    async def _reload(self, trigger: str) -> ReloadResult:
        try:
            return await self._reload_now(trigger)
        finally:
            self.on_reloaded()

    async def _reload_now(self, trigger: str) -> ReloadResult:
        source = self.source.name
        try:
            data = await self.source.read()
            if hashlib.sha256(data).hexdigest() == self.applied_sha:
                self._failed_key = None
                self.last_error = None
                return ReloadResult(changed=False)
            config = await asyncio.to_thread(_parse_paused_gc, data, source, self.reserved)
        except ConfigError as exc:
            return self._failed(exc.problems, _fingerprint(exc), trigger)
        try:
            await self.apply(self._overlaid(config))
        except Exception as exc:
            problem = Problem(Position(source, 1, 1), f"cannot apply: {exc}")
            return self._failed([problem], config.sha256, trigger)
        before, self.config = self.config, config
        self.applied_sha = config.sha256
        self._failed_key = None
        self.last_error = None
        self.record("reload", trigger, routes=changed_routes(before, config), pid=os.getpid())
        log.info(
            "route table applied: source=%s sha256=%s routes=%d trigger=%s pid=%d",
            source,
            config.sha256[:12],
            len(config.routes),
            trigger,
            os.getpid(),
        )
        return ReloadResult(changed=True)

    def _failed(self, problems: list[Problem], key: str, trigger: str) -> ReloadResult:
        error = ReloadError(time.time(), tuple(str(p) for p in problems))
        self.last_error = error
        if self.metrics is not None:
            self.metrics.reload_result(False, error.at)
        if key != self._failed_key:  # log a bad text once, not at every trigger
            self._failed_key = key
            log.error(
                "route table rejected, previous table keeps serving: source=%s problems=%d "
                "trigger=%s",
                self.source.name,
                len(problems),
                trigger,
            )
            for problem in problems:
                log.error("  %s", problem)
            self.record("rejected", trigger, problems=list(error.problems), pid=os.getpid())
        return ReloadResult(changed=False, error=error)

    async def follow(self) -> None:
        """Reload whenever the source's text changes, until cancelled."""
        while True:
            trigger = await self.source.changed()
            try:
                await self.reload(trigger)
            except Exception as exc:  # the watch must outlive any surprise
                log.error("reload failed unexpectedly: %r", exc)

    def view(self) -> dict[str, Any]:
        """The live table and the last rejected text, as JSON (`GET /-/routes`)."""
        error = self.last_error
        last_error = {"at": iso_time(error.at), "problems": list(error.problems)} if error else None
        table = self.table
        if table is None:
            return {"loaded": False, "last_error": last_error}
        config = table.config
        view = {
            "loaded": True,
            "version": config.version,
            "sha256": config.sha256,
            "source": config.source,
            "loaded_at": iso_time(table.loaded_at),
            "last_error": last_error,
            **config.view(),
        }
        if (store := self.source.describe(self.applied_sha)) is not None:
            view["store"] = store
        self.rollbacks.describe(view["routes"])
        return view

    # --- edits -----------------------------------------------------------------

    async def edit(self, edit: Edit, what: str, by: str, kind: str, **facts: Any) -> EditOutcome:
        """Store `edit` in the source, apply the result here, and record it.

        Raises `EditError` or `ConfigError` (the edit was refused: nothing changed),
        `ReadOnly` (the source takes no edits), `StoreError` (the store did not
        answer or kept changing) and `OSError` (the source could not store it)."""
        async with self.lock:
            result = await self.source.edit(edit, by, kind)
            if result.changed:
                log.info("route changed: %s routes=%s by=%s", what, ",".join(result.changed), by)
                self.record(kind, by, routes=result.changed, change=what, **facts)
            reload = await self._reload(by)
        return EditOutcome(result, reload.error)

    async def flip(
        self,
        route_id: str | None,
        backend: str,
        *,
        by: str,
        expect: str | None = None,
        kind: str = "flip",
        **facts: Any,
    ) -> EditOutcome:
        """Point a route (None: every route) at `backend`; with `expect`, only if it is
        still on `expect`."""
        what = f"flip route={route_id or '*'} backend={backend}"
        return await self.edit(flip(route_id, backend, expect), what, by, kind, **facts)

    async def set_canary(
        self, route_id: str, percent: float, backend: str | None = None, *, by: str
    ) -> EditOutcome:
        what = f"canary route={route_id} percent={percent:g}"
        return await self.edit(set_canary(route_id, percent, backend), what, by, "canary")

    def record(self, kind: str, by: str, **facts: Any) -> None:
        """Add an event to the log, in the background (a store may be slow to answer)."""
        if self._recorder is not None:
            self._recorder.record(kind, by, **facts)

    # --- background work -------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, object]) -> None:
        """Run `work` in the background, kept until done and cancelled by `close`."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def iso_time(ts: float) -> str:
    """A Unix time as ISO 8601 UTC with milliseconds: 2026-01-02T03:04:05.678Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_paused_gc(data: bytes, source: str, reserved: ReservedPaths | None) -> GatewayConfig:
    """`parse_config` without cyclic collections meanwhile (the parse makes no cycles
    to collect; the loop's few are collected once the parse is done)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return parse_config(data, source, reserved=reserved)
    finally:
        if was_enabled:
            gc.enable()


def _fingerprint(exc: ConfigError) -> str:
    """Identifies a rejection, so that the same bad text is logged once."""
    return "|".join(str(p) for p in exc.problems)
