"""The Redis store as the control plane's `Source`: read, follow, edit; and heartbeats.

Starting: a store that holds no table yet is seeded from `--config`, once, by
compare-and-set on revision 0 (of several workers and instances starting at
once, one seeds and the others read its table); a store that holds a table is
never written over, and `--config` is then ignored (logged, and shown in
`/-/routes`). A store that does not answer at start is no reason not to
serve: the worker serves `--config` and switches to the store's table as soon
as Redis answers.

Following: a worker applies every new revision within a second. A pub/sub
message wakes it at once; since pub/sub delivers at most once (and nothing
while disconnected) the worker also checks the revision every `check_every`
seconds, which catches up after a lost message or an outage.

Editing: an edit is a pure function of the current text (it validates its
result and raises on a refusal); it is run on the revision read, and written
back only if the store is still at that revision. Otherwise it is run again on
the newer text, so concurrent edits from any number of instances all land, and
a refused one changes nothing.

Reachability: every call has socket timeouts (`store.SOCKET_TIMEOUT`). While
Redis does not answer, `unreachable_since` says since when; the worker keeps
serving its last table, edits fail with `StoreUnavailable` (the admin API's 503),
and the next answered call catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.fleet.instances import iso
from gateway.fleet.store import Revision, Store, StoreAddress, StoreError, StoreUnavailable
from gateway.routefile.editing import Edit, EditResult
from gateway.routefile.model import ConfigError, Position, Problem

log = logging.getLogger("gateway.store")

CHECK_EVERY = 1.0
HEARTBEAT_TTL = 10.0
MAX_ATTEMPTS = 50  # compare-and-set retries before an edit gives up under contention


class RedisSource:
    def __init__(
        self,
        address: StoreAddress,
        seed: str | Path | None = None,
        check_every: float = CHECK_EVERY,
        heartbeat_ttl: float = HEARTBEAT_TTL,
    ) -> None:
        self.address = address
        self.store = Store(address)
        self.name = f"{address.shown} key {address.key}"  # names the text in problems
        self.seed = Path(seed) if seed is not None else None
        self.check_every = check_every
        self.heartbeat_ttl = heartbeat_ttl
        self.seen = 0  # the newest revision read (applied, or rejected)
        self.unreachable_since: float | None = None
        self.error: str | None = None
        self.config_ignored: str | None = None
        self._revisions: dict[str, int] = {}  # sha256 of a text read -> its revision
        self._wake = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        # Set when this worker's state may have changed (a reload done): the heartbeat
        # goes out at once, not at the next beat.
        self.beat_now = asyncio.Event()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self.store.close()

    async def _call(self, awaitable: Any) -> Any:
        """Run one store call, keeping track of whether the store answers."""
        try:
            result = await awaitable
        except StoreUnavailable as exc:
            if self.unreachable_since is None:
                self.unreachable_since = time.time()
                log.error("store unreachable, serving the last table: %s", exc)
            self.error = str(exc)
            raise
        if self.unreachable_since is not None:
            down = time.time() - self.unreachable_since
            log.info("store reachable again after %.1fs: %s", down, self.address.shown)
            self.unreachable_since = None
            self.error = None
        return result

    # --- Source ----------------------------------------------------------------

    async def read(self) -> bytes:
        try:
            current: Revision = await self._call(self.store.read())
        except StoreUnavailable as exc:
            if self.seen == 0 and self.seed is not None:
                log.warning("store unreachable at start: serving %s until it answers", self.seed)
                return self._read_seed()
            raise ConfigError([Problem(Position(self.name, 1, 1), str(exc))]) from None
        if current.revision == 0:
            current = await self._seeded()
        elif self.seed is not None and self.config_ignored is None:
            if current.text == self._read_seed():
                self.config_ignored = ""  # the store's table is the file's: nothing to say
                return self._noted(current)
            self.config_ignored = str(self.seed)
            log.warning(
                "--config %s ignored: the store holds a table (revision %d)",
                self.seed,
                current.revision,
            )
        return self._noted(current)

    def _noted(self, current: Revision) -> bytes:
        self._note(current.text, current.revision)
        return current.text

    def _read_seed(self) -> bytes:
        assert self.seed is not None  # callers check
        try:
            return self.seed.read_bytes()
        except OSError as exc:
            raise ConfigError.unreadable(str(self.seed), exc) from None

    async def _seeded(self) -> Revision:
        """The store holds no table: write `--config` as revision 1 (unless this worker
        has served the store's table before: a store emptied since is not refilled
        from a file that may be long out of date)."""
        if self.seed is None or self.seen > 0:
            raise ConfigError(
                [
                    Problem(
                        Position(self.name, 1, 1),
                        "the store holds no route table; load one with "
                        "'gateway push FILE --store URL'",
                    )
                ]
            )
        text = self._read_seed()
        written = await self._call(self.store.write(0, text, f"seed {self.seed}", "seed", []))
        if not written.ok:  # another worker or instance seeded it first
            return await self._call(self.store.read())  # type: ignore[no-any-return]
        log.info("store was empty: seeded from %s as revision 1", self.seed)
        return Revision(written.revision, text)

    def _note(self, text: bytes, revision: int) -> None:
        self.seen = max(self.seen, revision)
        if len(self._revisions) > 64:
            self._revisions.clear()
        self._revisions[hashlib.sha256(text).hexdigest()] = revision

    def revision_of(self, sha256: str | None) -> int:
        """The store's revision whose text has this digest (0: not from the store)."""
        return self._revisions.get(sha256 or "", 0)

    async def changed(self) -> str:
        """Wait for a revision other than the last read (or for the store to answer
        again after an outage, when the live table may be a stale one)."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="gateway-store-listen")
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.check_every)
            self._wake.clear()
            was_down = self.unreachable_since is not None
            try:
                revision = await self._call(self.store.revision())
            except StoreUnavailable:
                continue
            if revision != self.seen:
                return f"store revision {revision}"
            if was_down:
                return "store reachable again"

    async def _listen(self) -> None:
        while True:
            try:
                async for _revision in self.store.changes():
                    self._wake.set()
            except StoreUnavailable:
                pass  # the periodic check reports it, and catches up
            await asyncio.sleep(self.check_every)
            self._wake.set()  # resubscribed: what was missed meanwhile is checked

    async def edit(self, edit: Edit, by: str, kind: str) -> EditResult:
        """`edit` on the current text, written by compare-and-set on its revision; run
        again on the newer text when someone wrote first."""
        for _ in range(MAX_ATTEMPTS):
            current: Revision = await self._call(self.store.read())
            if current.revision == 0:
                raise StoreError(
                    f"store {self.address.shown} holds no route table; "
                    "load one with 'gateway push FILE --store URL'"
                )
            result = await asyncio.to_thread(edit, current.text, self.name)
            if result.data == current.text:
                return result
            written = await self._call(
                self.store.write(current.revision, result.data, by, kind, result.changed)
            )
            if written.ok:
                self._note(result.data, written.revision)
                return result
        raise StoreError(f"store {self.address.shown} kept changing; the edit was not made")

    def describe(self, applied_sha: str | None) -> dict[str, Any]:
        """The store as `/-/routes` shows it (no password)."""
        return {
            "url": self.address.shown,
            "key": self.address.key,
            "revision": self.revision_of(applied_sha),
            "latest_seen": self.seen,
            "reachable": self.unreachable_since is None,
            "unreachable_since": iso(self.unreachable_since),
            "error": self.error,
            "config_ignored": self.config_ignored or None,
        }

    # --- heartbeats ------------------------------------------------------------

    async def heartbeats(self, beat: Callable[[], dict[str, Any]]) -> None:
        """Publish this worker's heartbeat every third of its TTL, and at once when
        `beat_now` is set, until cancelled."""
        last: dict[str, Any] = {}
        try:
            while True:
                self.beat_now.clear()
                last = beat()
                with contextlib.suppress(StoreUnavailable):
                    await self._call(self.store.heartbeat(last, self.heartbeat_ttl))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.beat_now.wait(), self.heartbeat_ttl / 3)
        finally:
            if last:
                # A worker that stops leaves the fleet now, not a TTL later.
                with contextlib.suppress(StoreUnavailable):
                    await self.store.forget_worker(last["instance"], last["pid"])
