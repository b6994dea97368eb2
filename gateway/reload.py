"""Following `routes.yaml` while serving: detect, validate, swap, or keep the old table.

A change is noticed by polling the file's identity (inode, size, mtime,
following symlinks), which catches every way a file is replaced: an editor
writing in place, a temp file renamed over it, and a Kubernetes ConfigMap
whose `..data` symlink is swapped to a new directory. Polling also works the
same on every platform and needs no extra dependency; at the default 0.25 s
it costs one `stat()` call per interval.

Whatever the trigger (the watcher, SIGHUP, `POST /-/reload`, a flip through
the admin API), a reload is one serialised operation: read the bytes, skip if
they are unchanged, validate completely, start new backends, then publish the
new table by one assignment. Any failure leaves the live table untouched and
is kept as `last_error` until a good file arrives.

Validation runs in a worker thread, so the event loop keeps serving while a
large file is parsed (PyYAML takes ~1.6 s for 10,000 routes), and with the
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec

from gateway.routefile.editing import EditResult
from gateway.routefile.loading import parse_config
from gateway.routefile.model import ConfigError, GatewayConfig, Position, Problem

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway.reload")

P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class ReloadError:
    at: float
    problems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    changed: bool
    error: ReloadError | None = None


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks: a swapped ConfigMap target changes the inode
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Reloader:
    def __init__(self, gateway: Gateway, path: Path, interval: float) -> None:
        self.gateway = gateway
        self.path = path
        self.interval = interval
        self.last_error: ReloadError | None = None
        # Held while the file is parsed, edited or applied: reloads and edits take
        # turns, and the heap refreeze waits until no parse is half done.
        self.lock = asyncio.Lock()
        self._applied_sha: str | None = None
        self._failed_key: str | None = None
        self._signature = _signature(path)

    async def load_initial(self) -> GatewayConfig:
        """The first load: on failure the gateway must not start (raises ConfigError)."""
        async with self.lock:
            self._signature = _signature(self.path)
            data = self._read()
            config = parse_config(data, str(self.path))
            await self.gateway.apply(config)
            self._applied_sha = config.sha256
            return config

    async def reload(self, reason: str) -> ReloadResult:
        async with self.lock:
            self._signature = _signature(self.path)
            try:
                data = self._read()
                if hashlib.sha256(data).hexdigest() == self._applied_sha:
                    self._failed_key = None
                    self.last_error = None
                    return ReloadResult(changed=False)
                config = await asyncio.to_thread(_parse_paused_gc, data, str(self.path))
            except ConfigError as exc:
                return self._failed(exc.problems, _fingerprint(exc), reason)
            try:
                await self.gateway.apply(config)
            except Exception as exc:
                problem = Problem(Position(str(self.path), 1, 1), f"cannot apply: {exc}")
                return self._failed([problem], config.sha256, reason)
            self._applied_sha = config.sha256
            self._failed_key = None
            self.last_error = None
            log.info(
                "route table applied: source=%s sha256=%s routes=%d trigger=%s pid=%d",
                self.path,
                config.sha256[:12],
                len(config.routes),
                reason,
                os.getpid(),
            )
            return ReloadResult(changed=True)

    async def edit(
        self, change: Callable[P, EditResult], *args: P.args, **kwargs: P.kwargs
    ) -> EditResult:
        """Run a file edit (`editing.flip`, `set_canary`) off the loop, in turn with
        reloads; the caller reloads afterwards to apply it here."""
        async with self.lock:
            return await asyncio.to_thread(change, *args, **kwargs)

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(
                [Problem(Position(str(self.path), 1, 1), f"cannot read the file: {reason}")]
            ) from None

    def _failed(self, problems: list[Problem], key: str, reason: str) -> ReloadResult:
        error = ReloadError(time.time(), tuple(str(p) for p in problems))
        self.last_error = error
        metrics = self.gateway.metrics
        if metrics is not None:
            metrics.reload_result(False, error.at)
        if key != self._failed_key:  # log a bad file once, not at every trigger
            self._failed_key = key
            log.error(
                "route table rejected, previous table keeps serving: source=%s problems=%d "
                "trigger=%s",
                self.path,
                len(problems),
                reason,
            )
            for problem in problems:
                log.error("  %s", problem)
        return ReloadResult(changed=False, error=error)

    async def watch(self) -> None:
        """Poll the file until cancelled; reload when its identity changes."""
        while True:
            await asyncio.sleep(self.interval)
            current = _signature(self.path)
            if current == self._signature:
                continue
            # Let a writer finish: only read once the file has held still briefly.
            await asyncio.sleep(min(0.05, self.interval))
            if _signature(self.path) != current:
                continue
            try:
                await self.reload("file change")
            except Exception as exc:  # the watcher must outlive any surprise
                log.error("reload failed unexpectedly: %r", exc)


def _parse_paused_gc(data: bytes, source: str) -> GatewayConfig:
    """`parse_config` without cyclic collections meanwhile (the parse makes no cycles
    to collect; the loop's few are collected once the parse is done)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return parse_config(data, source)
    finally:
        if was_enabled:
            gc.enable()


def _fingerprint(exc: ConfigError) -> str:
    """Identifies a rejection, so that the same bad file is logged once."""
    return "|".join(str(p) for p in exc.problems)
