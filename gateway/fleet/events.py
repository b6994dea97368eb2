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
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

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
        self._lock_path = Path(directory) / "events.lock"

    async def append(self, kind: str, by: str, **facts: Any) -> int:
        return await asyncio.to_thread(self._append, event(kind, by, facts))

    async def since(self, after: int) -> list[Event]:
        return await asyncio.to_thread(self._since, after)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

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
        with self._locked():
            events = self._read()
            entry = {"id": events[-1]["id"] + 1 if events else 1, **entry}
            if len(events) + 1 >= 2 * EVENTS:
                kept = [*events[-(EVENTS - 1) :], entry]
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text("".join(json.dumps(e) + "\n" for e in kept))
                os.replace(tmp, self.path)
            else:
                with self.path.open("a") as f:
                    f.write(json.dumps(entry) + "\n")
            return int(entry["id"])

    def _since(self, after: int) -> list[Event]:
        with self._locked():
            events = self._read()[-EVENTS:]
        return [e for e in events if e["id"] > after]
