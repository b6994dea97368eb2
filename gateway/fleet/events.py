"""The event log: every edit, applied reload and rejected table, the last 500 kept.

An event is a small JSON object: `id` (increasing), `at` (epoch seconds), `kind`
(`flip`, `canary`, `push`, `revert`, `rollback`, `reload`, `rejected`), `by` (who:
`cli`, `admin-api 10.0.0.7`, `automatic rollback`, ...), and the facts of its kind.
Never a request's secrets, never the store's password.

With a store the log lives in Redis, shared by the fleet. Without one it lives
in the serve's private state directory, shared by that serve's workers: one
JSON line per event, appended under a lock and cut back to the last 500 when
it has grown to twice that (so a write is an append, not a rewrite).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

from gateway.filelock import exclusive
from gateway.fleet.store import EVENTS, Store

Event = dict[str, Any]


class EventLog(Protocol):
    async def append(self, kind: str, by: str, **facts: Any) -> int: ...

    async def since(self, after: int) -> list[Event]:
        """The kept events with an id above `after`, oldest first."""
        ...


def event(kind: str, by: str, facts: dict[str, Any]) -> Event:
    return {"at": round(time.time(), 3), "kind": kind, "by": by, **facts}


class StoreEvents:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def append(self, kind: str, by: str, **facts: Any) -> int:
        return await self.store.append_event(event(kind, by, facts))

    async def since(self, after: int) -> list[Event]:
        return [e for e in await self.store.events() if e["id"] > after]


class FileEvents:
    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / "events.jsonl"
        # [first id, last id] of the log, so that an append does not read the log
        self._ends = Path(directory) / "events.ends"
        self._lock_path = Path(directory) / "events.lock"

    async def append(self, kind: str, by: str, **facts: Any) -> int:
        return await asyncio.to_thread(self._append, event(kind, by, facts))

    async def since(self, after: int) -> list[Event]:
        return await asyncio.to_thread(self._since, after)

    def _read(self) -> list[Event]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        events: list[Event] = []
        for line in lines:
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def _append(self, entry: Event) -> int:
        with exclusive(self._lock_path):
            try:
                first, last = (int(n) for n in json.loads(self._ends.read_text()))
            except (OSError, ValueError):
                events = self._read()
                first, last = (events[0]["id"], events[-1]["id"]) if events else (1, 0)
            last += 1
            line = json.dumps({"id": last, **entry}) + "\n"
            if last - first + 1 >= 2 * EVENTS:
                kept = [json.dumps(e) + "\n" for e in self._read()[-(EVENTS - 1) :]]
                first = last - len(kept)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text("".join([*kept, line]))
                os.replace(tmp, self.path)
            else:
                with self.path.open("a") as f:
                    f.write(line)
            self._ends.write_text(json.dumps([first, last]))
            return last

    def _since(self, after: int) -> list[Event]:
        with exclusive(self._lock_path):
            events = self._read()[-EVENTS:]
        return [e for e in events if e["id"] > after]
