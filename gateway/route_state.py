"""What a route keeps across table swaps: shadow results and rollback windows.

A reload builds every `Route` afresh, but the counts a shadow has gathered and
the window a rollback watch is filling belong to the route, not to one table:
`build_table` takes them from here. With several workers, each publishes its
shadow results to the serve's private state directory, and `/-/shadow` merges
every worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from gateway.rollback import RollbackWatch, Trip
from gateway.routefile.model import RollbackSpec
from gateway.shadow import ShadowStats, merge_reports


class RouteState:
    def __init__(self, on_trip: Trip, state_dir: str | None = None) -> None:
        self.on_trip = on_trip
        self.state_dir = state_dir
        self.stats: dict[str, ShadowStats] = {}
        self.watches: dict[tuple[str, str, str, RollbackSpec], RollbackWatch] = {}

    def shadow_stats(self, route_id: str) -> ShadowStats:
        return self.stats.setdefault(route_id, ShadowStats())

    def shadow_reports(self) -> dict[str, dict[str, Any]]:
        """Every route's shadow results; with several workers, all of theirs together."""
        own = {route: stats.report() for route, stats in self.stats.items()}
        if not self.state_dir:
            return own
        reports = [own]
        for path in Path(self.state_dir).glob("shadow-*.json"):
            if path.name == f"shadow-{os.getpid()}.json":
                continue
            with contextlib.suppress(OSError, ValueError):
                reports.append(json.loads(path.read_bytes()))
        return merge_reports(reports)

    async def share_shadow_results(self, every: float = 1.0) -> None:
        """Publish this worker's shadow results for the others (several workers only)."""
        if not self.state_dir:
            return
        path = Path(self.state_dir) / f"shadow-{os.getpid()}.json"
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
            watch = RollbackWatch(route_id, backend, fallback, spec, self.on_trip)
            self.watches[key] = watch
        return watch

    def forget_unused(self, used: set[int]) -> None:
        """Keep only the watches whose ids are in `used` (the live table's): a route an
        operator moves back after a rollback starts over with an empty window, not a
        tripped watch."""
        self.watches = {key: w for key, w in self.watches.items() if id(w) in used}
