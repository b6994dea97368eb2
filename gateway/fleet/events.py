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
import logging
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

from gateway.filelock import exclusive
from gateway.fleet.store import EVENTS, Store

Event = dict[str, Any]
log = logging.getLogger("gateway.control")


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


class Recorder:
    """Appends events to a log in the background, one at a time in the order they
    happened (each append may take a thread, a file lock or a round trip to the store,
    and two at once could land out of order), each stamped when it happened.

    An event the log cannot take (the store down, the disk full) is tried again,
    after `RETRY` seconds (the last delay repeating), for `GIVE_UP` seconds in all;
    later events wait behind it, so the order holds. An event dropped then, or one
    still waiting when the gateway stops, is logged, never a failed change."""

    RETRY = (0.5, 1.0, 2.0, 5.0)
    GIVE_UP = 300.0

    def __init__(
        self, events: EventLog, spawn: Callable[[Coroutine[Any, Any, object]], None]
    ) -> None:
        self.events = events
        self._spawn = spawn
        self._order = asyncio.Lock()  # wakes its waiters first come, first served

    def record(self, kind: str, by: str, **facts: Any) -> None:
        facts.setdefault("at", round(time.time(), 3))
        self._spawn(self._append(kind, by, facts))

    async def _append(self, kind: str, by: str, facts: dict[str, Any]) -> None:
        async with self._order:
            waited = 0.0
            tries = 0
            while True:
                try:
                    await self.events.append(kind, by, **facts)
                except asyncio.CancelledError:
                    if tries:
                        log.warning("event not recorded (stopping): kind=%s by=%s", kind, by)
                    raise
                except Exception as exc:
                    if waited >= self.GIVE_UP:
                        log.warning(
                            "event dropped after %.0fs of tries: kind=%s by=%s: %s",
                            waited,
                            kind,
                            by,
                            exc,
                        )
                        return
                    if not tries:
                        log.warning(
                            "event not recorded yet, trying again: kind=%s by=%s: %s",
                            kind,
                            by,
                            exc,
                        )
                    delay = self.RETRY[min(tries, len(self.RETRY) - 1)]
                    tries += 1
                    await asyncio.sleep(delay)
                    waited += delay
                else:
                    if tries:
                        log.info(
                            "event recorded after %d tries: kind=%s by=%s", tries + 1, kind, by
                        )
                    return
