"""The route table in Redis: its keys, and the few operations every user of them needs.

Keys, all under one prefix (`--store-key`, default `gateway`):

    {key}:table          hash: `text` (the routes.yaml text) and `revision` (1, 2, ...)
    {key}:history        list, newest first: the last 50 revisions, each with its text,
                         when, by whom and which routes it changed
    {key}:changes        pub/sub channel: the new revision, after every write
    {key}:events         list, newest first: the last 500 events; ids from {key}:events:seq
    {key}:worker:{instance}:{pid}   a serving worker's heartbeat, expiring after its TTL

Every write of the table is a compare-and-set on the revision, done by one Lua
script (Redis runs a script alone): the text, the history entry and the
notification change together or not at all, and a writer that read an older
revision changes nothing and is told the current one. The revision is the
table's, not the file format's `version: 1`.

Every call has socket timeouts: a Redis that is down or frozen (SIGSTOP) makes a
call fail within a few seconds with `StoreUnavailable`, never hang. The URL's
password never leaves this module: `StoreAddress.shown` is what logs and answers use.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

HISTORY = 50
EVENTS = 500
# A frozen Redis accepts connections (the kernel does) but never answers: each
# call gives up after this, and is retried once (a pooled connection may be stale
# after a Redis restart), so an edit fails within a few seconds.
SOCKET_TIMEOUT = 1.5

_WRITE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0') or -1
if current ~= tonumber(ARGV[1]) then return {0, current} end
local revision = current + 1
redis.call('HSET', KEYS[1], 'text', ARGV[2], 'revision', revision)
redis.call('LPUSH', KEYS[2], '{"revision":' .. revision .. ',' .. string.sub(ARGV[3], 2))
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
redis.call('PUBLISH', KEYS[3], revision)
return {1, revision}
"""

_APPEND = """
local id = redis.call('INCR', KEYS[2])
redis.call('LPUSH', KEYS[1], '{"id":' .. id .. ',' .. string.sub(ARGV[1], 2))
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return id
"""


class StoreError(Exception):
    """The store refused or could not do what was asked."""


class StoreUnavailable(StoreError):
    """Redis did not answer (down, unreachable, frozen, or refused the login)."""


class MissingDependency(StoreError):
    """redis-py is not installed."""


@dataclass(frozen=True, slots=True)
class StoreAddress:
    """A store's URL and key prefix. `shown` is the URL without its password."""

    url: str
    key: str = "gateway"

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"the store URL must start with redis://, rediss:// or unix:// (got {self.shown!r})"
            )
        try:
            from redis.asyncio import ConnectionPool
        except ImportError:
            pass  # Store says that redis-py is missing
        else:
            try:  # what Redis.from_url would refuse later (a port, a db or a timeout not a number)
                ConnectionPool.from_url(self.url)  # connects to nothing
            except ValueError as exc:  # its messages name the value, never the password
                raise ValueError(f"the store URL is invalid: {exc} (got {self.shown!r})") from None
        if not self.key or any(c.isspace() for c in self.key):
            raise ValueError("the store key prefix must be a non-empty word")

    @property
    def shown(self) -> str:
        parts = urlsplit(self.url)
        shown = self.url
        if parts.password is not None:
            user = parts.username or ""
            host = parts.netloc.rpartition("@")[2]
            shown = urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
        if "password=" in parts.query:  # unix:///run/redis.sock?password=...
            query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)]
            shown = shown.replace(parts.query, urlencode(query, safe="*"))
        return shown

    def _passwords(self) -> list[str]:
        """Each password as written and as redis-py reads it (percent-decoded)."""
        parts = urlsplit(self.url)
        found = [v for k, v in parse_qsl(parts.query) if k == "password" and v]
        if parts.password:
            found = [parts.password, unquote(parts.password), *found]
        return sorted(set(found), key=len, reverse=True)  # the longer first

    def clean(self, message: str) -> str:
        """`message` with the password taken out, should a library ever include it."""
        for password in self._passwords():
            message = message.replace(password, "***")
        return message


@dataclass(frozen=True, slots=True)
class Revision:
    revision: int  # 0: the store holds no table yet
    text: bytes


@dataclass(frozen=True, slots=True)
class Written:
    ok: bool  # False: the store had moved on to `revision`; nothing was written
    revision: int


class Store:
    """A connection pool to one store. Methods raise `StoreUnavailable` when Redis
    does not answer; they never retry beyond the one reconnect."""

    def __init__(self, address: StoreAddress, socket_timeout: float = SOCKET_TIMEOUT) -> None:
        try:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise MissingDependency(
                "a Redis store needs redis-py: pip install 'strangler-gateway[redis]'"
            ) from None
        self.address = address
        k = address.key
        self.keys = {
            "table": f"{k}:table",
            "history": f"{k}:history",
            "changes": f"{k}:changes",
            "events": f"{k}:events",
            "seq": f"{k}:events:seq",
        }
        self.redis = Redis.from_url(
            address.url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )
        self._write = self.redis.register_script(_WRITE)
        self._append = self.redis.register_script(_APPEND)

    async def close(self) -> None:
        await self.redis.aclose()

    async def _call(self, awaitable: Any) -> Any:
        """Await one Redis call, turning every way of not answering into StoreUnavailable."""
        from redis.exceptions import RedisError

        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise StoreUnavailable(
                f"store {self.address.shown} did not answer: {self.address.clean(reason)}"
            ) from None

    # --- the table -----------------------------------------------------------

    async def revision(self) -> int:
        value = await self._call(self.redis.hget(self.keys["table"], "revision"))
        return int(value or 0)

    async def read(self) -> Revision:
        text, revision = await self._call(self.redis.hmget(self.keys["table"], "text", "revision"))
        return Revision(int(revision or 0), bytes(text or b""))

    async def write(
        self, expected: int, text: bytes, by: str, kind: str, changed: list[str]
    ) -> Written:
        """Make `text` current if the store is still at revision `expected`."""
        entry = {"at": time.time(), "by": by, "kind": kind, "changed": changed}
        entry["text"] = text.decode("utf-8", "replace")
        keys = [self.keys["table"], self.keys["history"], self.keys["changes"]]
        args: list[bytes | str | int] = [expected, text, json.dumps(entry), HISTORY]
        ok, revision = await self._call(self._write(keys=keys, args=args))
        return Written(bool(ok), int(revision))

    async def history(self) -> list[dict[str, Any]]:
        """The kept revisions, newest first (each with its text)."""
        raw = await self._call(self.redis.lrange(self.keys["history"], 0, HISTORY - 1))
        return [json.loads(item) for item in raw]

    async def changes(self) -> AsyncIterator[int]:
        """Revisions as they are announced; raises StoreUnavailable when the link breaks.

        Pub/sub delivers at most once and not while disconnected: callers also
        check the revision now and then."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await self._call(pubsub.subscribe(self.keys["changes"]))
            while True:
                message = await self._call(pubsub.get_message(timeout=1.0))
                if message is not None and message.get("type") == "message":
                    try:
                        yield int(message["data"])
                    except ValueError:
                        continue  # someone else's message on our channel
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py

    # --- events and heartbeats ---------------------------------------------------

    async def append_event(self, event: dict[str, Any]) -> int:
        data = json.dumps(event)
        keys = [self.keys["events"], self.keys["seq"]]
        return int(await self._call(self._append(keys=keys, args=[data, EVENTS])))

    async def events(self) -> list[dict[str, Any]]:
        """The kept events, oldest first."""
        raw = await self._call(self.redis.lrange(self.keys["events"], 0, EVENTS - 1))
        return [json.loads(item) for item in reversed(raw)]

    def _worker_key(self, instance: str, pid: int) -> str:
        return f"{self.address.key}:worker:{instance}:{pid}"

    async def heartbeat(self, beat: dict[str, Any], ttl: float) -> None:
        key = self._worker_key(beat["instance"], beat["pid"])
        await self._call(self.redis.set(key, json.dumps(beat), px=max(1, int(ttl * 1000))))

    async def forget_worker(self, instance: str, pid: int) -> None:
        await self._call(self.redis.delete(self._worker_key(instance, pid)))

    async def heartbeats(self) -> list[dict[str, Any]]:
        pattern = f"{self.address.key}:worker:*"

        async def collect() -> list[dict[str, Any]]:
            keys = [k async for k in self.redis.scan_iter(match=pattern, count=500)]
            values = await self.redis.mget(keys) if keys else []
            return [json.loads(v) for v in values if v is not None]

        beats: list[dict[str, Any]] = await self._call(collect())
        return beats
