"""A serving worker's link to the store: read the table, follow it, edit it, beat.

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
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from gateway.fleet.store import Revision, Store, StoreAddress, StoreError, StoreUnavailable

log = logging.getLogger("gateway.store")

T = TypeVar("T")
CHECK_EVERY = 1.0
HEARTBEAT_TTL = 10.0
MAX_ATTEMPTS = 50  # compare-and-set retries before an edit gives up under contention


class EditOutcome(Protocol):
    """What an edit returns (`EditResult`): the new text and the routes it changed."""

    @property
    def data(self) -> bytes: ...

    @property
    def changed(self) -> list[str]: ...


E = TypeVar("E", bound=EditOutcome)


class RedisSource:
    def __init__(
        self,
        address: StoreAddress,
        check_every: float = CHECK_EVERY,
        heartbeat_ttl: float = HEARTBEAT_TTL,
    ) -> None:
        self.address = address
        self.store = Store(address)
        self.name = f"{address.shown} key {address.key}"  # names the text in problems
        self.check_every = check_every
        self.heartbeat_ttl = heartbeat_ttl
        self.seen = 0  # the newest revision read (applied, or rejected)
        self.applied = 0  # the revision of the live table (0: not from the store)
        self.unreachable_since: float | None = None
        self.error: str | None = None

    async def close(self) -> None:
        await self.store.close()

    async def _call(self, awaitable: Awaitable[T]) -> T:
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

    async def read(self) -> Revision:
        current = await self._call(self.store.read())
        self.seen = max(self.seen, current.revision)
        return current

    async def seed(self, text: bytes, by: str) -> bool:
        """Write `text` as revision 1 if the store holds no table; False if it does."""
        written = await self._call(self.store.write(0, text, by, "seed", []))
        return written.ok

    async def edit(self, edit: Callable[[bytes, str], E], by: str, kind: str) -> tuple[E, int]:
        """Apply `edit` to the current text by compare-and-set; the result and the
        revision that holds it (the read one, when the edit changed nothing)."""
        for _ in range(MAX_ATTEMPTS):
            current = await self.read()
            if current.revision == 0:
                raise StoreError(
                    f"store {self.address.shown} holds no route table yet; "
                    "load one with 'gateway push FILE --store URL'"
                )
            result = await asyncio.to_thread(edit, current.text, self.name)
            if result.data == current.text:
                return result, current.revision
            written = await self._call(
                self.store.write(current.revision, result.data, by, kind, result.changed)
            )
            if written.ok:
                return result, written.revision
        raise StoreError(f"store {self.address.shown} kept changing; the edit was not made")

    async def follow(self, apply: Callable[[Revision], Awaitable[None]]) -> None:
        """Call `apply` with each revision newer than the last one read, until cancelled."""
        wake = asyncio.Event()
        listener = asyncio.create_task(self._listen(wake), name="gateway-store-listen")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.check_every)
                wake.clear()
                try:
                    revision = await self._call(self.store.revision())
                    if revision == self.seen:
                        continue
                    await apply(await self.read())
                except StoreUnavailable:
                    continue
                except Exception as exc:  # following must outlive any surprise
                    log.error("following the store failed unexpectedly: %r", exc)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self, wake: asyncio.Event) -> None:
        while True:
            try:
                async for _revision in self.store.changes():
                    wake.set()
            except StoreUnavailable:
                pass  # the periodic check reports it, and catches up
            await asyncio.sleep(self.check_every)
            wake.set()  # (re)subscribed: whatever was missed meanwhile is checked

    async def heartbeats(self, beat: Callable[[], dict[str, Any]]) -> None:
        """Publish this worker's heartbeat every third of its TTL, until cancelled."""
        last: dict[str, Any] = {}
        try:
            while True:
                last = beat()
                with contextlib.suppress(StoreUnavailable):
                    await self._call(self.store.heartbeat(last, self.heartbeat_ttl))
                await asyncio.sleep(self.heartbeat_ttl / 3)
        finally:
            if last:
                # A worker that stops is gone from the fleet now, not a TTL later.
                with contextlib.suppress(StoreUnavailable):
                    await self.store.forget_worker(last["instance"], last["pid"])

    def status(self) -> dict[str, Any]:
        """The store as `/-/routes` shows it (no password)."""
        return {
            "kind": "redis",
            "url": self.address.shown,
            "key": self.address.key,
            "revision": self.applied,
            "latest_seen": self.seen,
            "reachable": self.unreachable_since is None,
            "unreachable_since": self.unreachable_since,
            "error": self.error,
        }
