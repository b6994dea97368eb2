"""The event log of a serve without a store, and its rollback overrides: files in the
serve's private state directory, shared by its workers (here: several processes)."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import random
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.backends import BackendPool
from gateway.control import ControlPlane
from gateway.fleet.events import FileEvents, Recorder
from gateway.fleet.overrides import Overrides, overlay
from gateway.fleet.store import EVENTS
from gateway.routefile.loading import parse_config
from gateway.shadow import ShadowRunner
from gateway.sources import FileSource
from gateway.wsgi import WSGIOptions
from tests.harness import TEST_BACKENDS


def _append_many(directory: str, worker: int) -> None:
    async def run() -> None:
        log = FileEvents(directory)
        for i in range(60):
            await log.append("flip", f"worker {worker}", n=i)

    asyncio.run(run())


def test_workers_share_one_bounded_log_with_unique_increasing_ids(tmp_path: Path) -> None:
    workers = [
        multiprocessing.get_context("fork").Process(target=_append_many, args=(str(tmp_path), w))
        for w in range(4)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    events = asyncio.run(FileEvents(tmp_path).since(0))
    assert [e["id"] for e in events] == list(range(1, 241))  # none lost, none twice
    for w in range(4):
        assert [e["n"] for e in events if e["by"] == f"worker {w}"] == list(range(60))
    assert [e["id"] for e in asyncio.run(FileEvents(tmp_path).since(238))] == [239, 240]


def test_the_log_keeps_the_last_500(tmp_path: Path) -> None:
    async def run() -> list[int]:
        log = FileEvents(tmp_path)
        for i in range(2 * EVENTS + 7):
            await log.append("reload", "file change", n=i)
        return [e["id"] for e in await log.since(0)]

    ids = asyncio.run(run())
    assert ids == list(range(EVENTS + 8, 2 * EVENTS + 8))
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) < 2 * EVENTS


TABLE = (
    "version: 1\n"
    + TEST_BACKENDS
    + """\
default: legacy
routes:
  - {id: a, path: /a, backend: new, fallback: legacy}
  - {id: b, path: /b, backend: new, fallback: legacy}
"""
)


def test_an_override_holds_until_the_route_changes_in_the_source(tmp_path: Path) -> None:
    overrides = Overrides(tmp_path)
    config = parse_config(TABLE, "routes.yaml")
    assert overrides.prune(config) == {}
    before = overrides.signature()
    overrides.add("a", "new", "legacy", "5 of 10 failed", persist=False)
    assert overrides.signature() != before  # workers notice by polling it
    held = Overrides(tmp_path).prune(config)  # another worker sees it
    assert list(held) == ["a"]
    live = overlay(config, held)
    assert [(r.id, r.backend) for r in live.routes] == [("a", "legacy"), ("b", "new")]
    assert live.sha256 == config.sha256  # the source's text has not changed
    # An operator flips the route in the source: the override is moot, and dropped.
    flipped = dataclasses.replace(
        config, routes=(dataclasses.replace(config.routes[0], backend="legacy"), config.routes[1])
    )
    assert overrides.prune(flipped) == {}
    assert overrides.prune(config) == {}  # flipping back to new does not revive it


def test_a_rollback_written_while_a_worker_starts_is_applied_there(tmp_path: Path) -> None:
    # Another worker trips after this one read the table, before this one follows the file.
    routes = tmp_path / "routes.yaml"
    routes.write_text(TABLE)
    state = tmp_path / "state"
    state.mkdir()

    def backend_of_a(control: ControlPlane) -> str:
        assert control.table is not None
        route = control.table.match("GET", "/a")
        assert route is not None
        return route.primary.name

    async def run() -> None:
        control = ControlPlane(FileSource(routes), state_dir=str(state))
        pool = BackendPool(WSGIOptions(), None)
        await control.start(pool, ShadowRunner())
        try:
            assert backend_of_a(control) == "new"
            Overrides(state).add("a", "new", "legacy", "3 of 3 failed", persist=False)
            follow = asyncio.create_task(control.rollbacks.follow(0.01))
            try:
                async with asyncio.timeout(5):
                    while backend_of_a(control) != "legacy":
                        await asyncio.sleep(0.01)
            finally:
                follow.cancel()
        finally:
            await pool.close()

    asyncio.run(run())


class MemoryLog:
    """An event log in memory whose appends each take their own time (`jitter`), and
    whose first `failures` appends fail as a full disk does."""

    def __init__(self, failures: int = 0, jitter: bool = False) -> None:
        self.failures = failures
        self.jitter = jitter
        self.logged: list[tuple[str, float]] = []  # (kind, when it happened)

    async def append(self, kind: str, by: str, **facts: Any) -> int:
        if self.jitter:
            await asyncio.sleep(random.uniform(0, 0.01))
        if self.failures:
            self.failures -= 1
            raise OSError("No space left on device")
        self.logged.append((kind, facts["at"]))
        return len(self.logged)

    async def since(self, after: int) -> list[dict[str, Any]]:
        return []


def record(tmp_path: Path, log: MemoryLog, kinds: list[str], expected: int) -> float:
    """Record `kinds` through a control plane, one after the other; wait until the log
    holds `expected` events. When the first was recorded."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(TABLE)

    async def run() -> float:
        control = ControlPlane(FileSource(routes), events=log)
        happened = time.time()
        for kind in kinds:
            control.record(kind, "automatic rollback" if kind == "rollback" else "test")
        async with asyncio.timeout(5):
            while len(log.logged) < expected:
                await asyncio.sleep(0.01)
        await control.close()
        return happened

    return asyncio.run(run())


def test_events_are_logged_in_the_order_they_happened(tmp_path: Path) -> None:
    """Each event is appended in the background; appends that take different times
    (a thread, a file lock, a store) still land in the order the events happened."""
    log = MemoryLog(jitter=True)
    kinds = [f"event-{index}" for index in range(30)]
    record(tmp_path, log, kinds, 30)
    assert [kind for kind, _ in log.logged] == kinds


def test_an_event_the_log_cannot_take_is_tried_again_and_keeps_its_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The store down or the disk full: the event is tried again until the log takes
    it, stamped when it happened, and the events after it wait their turn."""
    monkeypatch.setattr(Recorder, "RETRY", (0.05,))
    caplog.set_level("INFO", "gateway.control")
    log = MemoryLog(failures=2)
    happened = record(tmp_path, log, ["rollback", "reload"], 2)
    assert [kind for kind, _ in log.logged] == ["rollback", "reload"]
    assert abs(log.logged[0][1] - happened) < 0.05  # when it happened, not when stored
    assert [r.getMessage() for r in caplog.records] == [
        "event not recorded yet, trying again: kind=rollback by=automatic rollback: "
        "No space left on device",
        "event recorded after 3 tries: kind=rollback by=automatic rollback",
    ]


def test_an_event_never_taken_is_dropped_in_time_and_the_next_ones_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Tries are bounded in time: an event the log refuses past GIVE_UP is dropped
    and logged, and the events waiting behind it are recorded."""
    monkeypatch.setattr(Recorder, "RETRY", (0.05,))
    monkeypatch.setattr(Recorder, "GIVE_UP", 0.2)
    caplog.set_level("INFO", "gateway.control")
    log = MemoryLog()

    async def refuse_only_the_first(kind: str, by: str, **facts: Any) -> int:
        if kind == "rollback":
            raise OSError("No space left on device")
        log.logged.append((kind, facts["at"]))
        return len(log.logged)

    log.append = refuse_only_the_first  # type: ignore[method-assign]
    record(tmp_path, log, ["rollback", "reload"], 1)
    assert [kind for kind, _ in log.logged] == ["reload"]
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped == [
        "event dropped after 0s of tries: kind=rollback by=automatic rollback: "
        "No space left on device"
    ]
