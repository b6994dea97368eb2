"""What a tripped rollback watch does: take the route off the failing backend, truly.

A rollback is an edit of the source like any flip (`ControlPlane.flip` with
`expect`: a route an operator moved meanwhile is left alone), so the file or
the store, every worker and every instance agree. When the source cannot take
it (a read-only file and no store; a store that does not answer) it is still
made: recorded as an override in the serve's state directory, which every
worker of this serve lays over its table (`gateway.fleet.overrides`), and
logged as "applied, not persisted". A rollback the store missed is written to
it once it answers again, if the route still has the value it had.

Log lines and events say what happened, never more: "stored", "applied, not
persisted", or "not needed" when the route had already moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from gateway.fleet.instances import iso
from gateway.fleet.overrides import holds
from gateway.fleet.store import StoreError, StoreUnavailable
from gateway.rollback import RollbackWatch
from gateway.routefile.editing import EditError
from gateway.routefile.model import ConfigError
from gateway.sources import ReadOnly

if TYPE_CHECKING:
    from gateway.control import ControlPlane

log = logging.getLogger("gateway.rollback")
BY = "automatic rollback"


class RollbackAction:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control

    def tripped(self, watch: RollbackWatch, total: int, failed: int) -> None:
        self.control.spawn(self.run(watch, total, failed))

    async def run(self, watch: RollbackWatch, total: int, failed: int) -> None:
        control = self.control
        spec = watch.spec
        why = (
            f"{failed} of {total} answers from {watch.backend} failed in {spec.window:g}s "
            f"(over the {spec.error_ratio:g} limit)"
        )
        said = (
            f"automatic rollback: route={watch.route_id} from={watch.backend} "
            f"to={watch.fallback} failed={failed} of {total} in {spec.window:g}s "
            f"(over the {spec.error_ratio:g} limit)"
        )
        facts: dict[str, Any] = {
            "route": watch.route_id,
            "from": watch.backend,
            "to": watch.fallback,
            "failed": failed,
            "total": total,
            "window": spec.window,
            "error_ratio": spec.error_ratio,
        }
        try:
            outcome = await control.flip(
                watch.route_id,
                watch.fallback,
                by=BY,
                expect=watch.backend,
                kind="rollback",
                persisted=True,
                **facts,
            )
        except (ReadOnly, StoreUnavailable, OSError) as exc:
            await self._apply_locally(watch, why, said, facts, exc)
            return
        except (ConfigError, EditError, StoreError) as exc:
            log.error("automatic rollback of route=%s not made: %s", watch.route_id, exc)
            return
        if not outcome.result.changed:
            log.warning(
                "automatic rollback of route=%s not needed: it is no longer on %s",
                watch.route_id,
                watch.backend,
            )
            return
        log.error("%s; stored in %s", said, control.source.name)
        self._count(watch.route_id)

    async def _apply_locally(
        self, watch: RollbackWatch, why: str, said: str, facts: dict[str, Any], exc: Exception
    ) -> None:
        control = self.control
        if control.overrides is None:  # an embedded gateway with no state directory
            log.error("automatic rollback of route=%s not made: %s", watch.route_id, exc)
            return
        current = control.overrides.read().get(watch.route_id)
        if current is not None and control.config and holds(current, control.config):
            return  # another worker of this serve made it already
        persist = isinstance(exc, StoreUnavailable)
        await asyncio.to_thread(
            control.overrides.add, watch.route_id, watch.backend, watch.fallback, why, persist
        )
        await control.reapply()
        log.error("%s; applied, not persisted: %s", said, exc)
        control.record("rollback", BY, persisted=False, reason=str(exc), **facts)
        self._count(watch.route_id)

    def _count(self, route_id: str) -> None:
        if self.control.metrics is not None:
            self.control.metrics.rollbacks.labels(route_id).inc()

    async def follow(self, every: float, persist_every: float = 1.0) -> None:
        """Re-apply the table when this serve's overrides change (another worker made a
        rollback), and write pending ones to the store once it answers. Until cancelled."""
        control = self.control
        overrides = control.overrides
        if overrides is None:
            return
        next_try = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            try:
                # Against what the live table read, not what this loop saw when it began:
                # a rollback another worker wrote between this worker's first load and
                # here must still be applied.
                if overrides.signature() != control.overrides_seen:
                    await control.reapply()
                if loop.time() >= next_try:
                    next_try = loop.time() + persist_every
                    await self._persist_pending()
            except Exception as exc:  # the watch must outlive any surprise
                log.error("following the rollbacks failed unexpectedly: %r", exc)

    async def _persist_pending(self) -> None:
        control = self.control
        assert control.overrides is not None  # follow() returns early without
        for override in control.overrides.read().values():
            if not override.persist:
                continue
            try:
                outcome = await control.flip(
                    override.route_id,
                    override.to,
                    by=BY,
                    expect=override.source,
                    kind="rollback",
                    persisted=True,
                    why=override.why,
                    since=iso(override.at),
                )
            except StoreUnavailable:
                return  # still down: next time
            except (ConfigError, EditError, StoreError, OSError) as exc:
                log.error("rollback of route=%s not stored: %s", override.route_id, exc)
            else:
                if outcome.result.changed:
                    log.info(
                        "automatic rollback of route=%s stored now that %s answers",
                        override.route_id,
                        control.source.name,
                    )
            # Stored, moot, or refused for good: the store's table is the truth again.
            with contextlib.suppress(OSError):
                await asyncio.to_thread(control.overrides.drop, {override.route_id})
            await control.reapply()

    def describe(self, routes: list[dict[str, Any]]) -> None:
        """Mark the routes of a `/-/routes` view that a local rollback holds."""
        control = self.control
        if control.overrides is None or control.config is None:
            return
        held = {rid: o for rid, o in control.overrides.read().items() if holds(o, control.config)}
        for route in routes:
            override = held.get(route["id"])
            if override is not None:
                route["state"] = "rolled back"
                route["rolled_back"] = {
                    "from": override.source,
                    "to": override.to,
                    "why": override.why,
                    "at": iso(override.at),
                    "persisted": False,
                }
