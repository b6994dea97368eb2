"""Rollbacks applied to the live table but not (yet) to its source.

An automatic rollback is an edit of the source, like a flip. When the source
cannot take it (a read-only `routes.yaml` with no store, or a store that does
not answer), the rollback must still take the route off the failing backend on
every worker of this serve: it is recorded here, in the serve's private state
directory (`rollbacks.json`), and every worker lays it over the table it applies.

An override holds while the source still puts the route on the backend it was
taken off (`from`). Once the route's own value in the source changes (an
operator flipped it, or a store that answers again took the rollback as an
edit), the override has done its job and is dropped. The state directory dies
with the serve, so a restart drops them all: the source is the truth again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.filelock import exclusive
from gateway.routefile.model import GatewayConfig

FILE = "rollbacks.json"


@dataclass(frozen=True, slots=True)
class Override:
    route_id: str
    source: str  # `from`: the backend the source names, which failed
    to: str
    why: str
    at: float
    persist: bool  # write it to the source when the source takes edits again


class Overrides:
    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / FILE
        self._lock_path = Path(directory) / "rollbacks.lock"

    def signature(self) -> tuple[int, int] | None:
        """Changes whenever the file is replaced: workers poll it with the table."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def read(self) -> dict[str, Override]:
        try:
            raw = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}
        found: dict[str, Override] = {}
        for route_id, item in raw.items():
            with contextlib.suppress(KeyError, TypeError):
                found[route_id] = Override(
                    route_id, item["from"], item["to"], item["why"], item["at"], item["persist"]
                )
        return found

    def _write(self, overrides: dict[str, Override]) -> None:
        data = {
            o.route_id: {
                "from": o.source,
                "to": o.to,
                "why": o.why,
                "at": o.at,
                "persist": o.persist,
            }
            for o in overrides.values()
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)

    def add(self, route_id: str, source: str, to: str, why: str, persist: bool) -> Override:
        override = Override(route_id, source, to, why, round(time.time(), 3), persist)
        with exclusive(self._lock_path):
            current = self.read()
            current[route_id] = override
            self._write(current)
        return override

    def drop(self, route_ids: set[str]) -> None:
        if not route_ids:
            return
        with exclusive(self._lock_path):
            current = self.read()
            kept = {k: v for k, v in current.items() if k not in route_ids}
            if kept != current:
                self._write(kept)

    def prune(self, config: GatewayConfig) -> dict[str, Override]:
        """Drop the overrides `config` has made moot; the ones that still hold."""
        current = self.read()
        moot = {rid for rid, o in current.items() if not holds(o, config)}
        self.drop(moot)
        return {rid: o for rid, o in current.items() if rid not in moot}


def as_json(o: Override) -> dict[str, object]:
    return {"from": o.source, "to": o.to, "why": o.why, "at": o.at, "persist": o.persist}


def holds(override: Override, config: GatewayConfig) -> bool:
    """The source still puts the route on the backend that failed."""
    try:
        return config.route(override.route_id).backend == override.source
    except KeyError:
        return False


def overlay(config: GatewayConfig, overrides: dict[str, Override]) -> GatewayConfig:
    """`config` with each holding override's route on its fallback (same sha256:
    the source's text has not changed)."""
    if not overrides:
        return config
    routes = tuple(
        dataclasses.replace(r, backend=overrides[r.id].to)
        if r.id in overrides and holds(overrides[r.id], config)
        else r
        for r in config.routes
    )
    return dataclasses.replace(config, routes=routes)
