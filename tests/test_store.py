"""The Redis store's keys against a real redis-server: compare-and-set, history,
events, heartbeats, and failing fast (with no password shown) when Redis does not answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.fleet.store import EVENTS, HISTORY, Store, StoreAddress, StoreUnavailable
from tests.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


def test_writes_are_compare_and_set_on_the_revision(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        store = Store(StoreAddress(redis_server.url, "t"))
        try:
            assert (await store.read()).revision == 0
            first = await store.write(0, b"one", "alice", "push", ["a"])
            assert (first.ok, first.revision) == (True, 1)
            stale = await store.write(0, b"two", "bob", "push", ["b"])
            assert (stale.ok, stale.revision) == (False, 1)  # told where the store is
            current = await store.read()
            assert (current.revision, current.text) == (1, b"one")  # the refusal changed nothing
            second = await store.write(1, b"two", "bob", "flip", ["b"])
            assert (second.ok, second.revision) == (True, 2)
            [newest, oldest] = await store.history()
            assert newest["revision"] == 2 and newest["text"] == "two"
            assert (newest["by"], newest["kind"], newest["changed"]) == ("bob", "flip", ["b"])
            assert oldest["revision"] == 1 and oldest["by"] == "alice"
        finally:
            await store.close()

    asyncio.run(scenario())


def test_concurrent_writers_never_lose_an_edit(redis_server: RedisServer) -> None:
    """Each writer retries its read-modify-write until its own compare-and-set wins."""

    async def scenario() -> list[int]:
        store = Store(StoreAddress(redis_server.url, "t"))
        await store.write(0, b"", "seed", "push", [])

        async def append(word: str) -> None:
            while True:
                current = await store.read()
                text = current.text + word.encode() + b"\n"
                if (await store.write(current.revision, text, word, "push", [])).ok:
                    return

        try:
            await asyncio.gather(*(append(f"w{i}") for i in range(40)))
            final = await store.read()
            lines = sorted(int(w[1:]) for w in final.text.decode().split())
            assert final.revision == 41
            return lines
        finally:
            await store.close()

    assert asyncio.run(scenario()) == list(range(40))


def test_history_and_events_are_bounded(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        store = Store(StoreAddress(redis_server.url, "t"))
        try:
            for revision in range(HISTORY + 5):
                assert (await store.write(revision, b"x%d" % revision, "me", "push", [])).ok
            history = await store.history()
            assert len(history) == HISTORY
            assert history[0]["revision"] == HISTORY + 5 and history[-1]["revision"] == 6
            for i in range(EVENTS + 3):
                await store.append_event({"kind": "flip", "n": i})
            events = await store.events()
            assert len(events) == EVENTS
            assert [e["id"] for e in events] == list(range(4, EVENTS + 4))  # oldest first
            assert events[-1] == {"id": EVENTS + 3, "kind": "flip", "n": EVENTS + 2}
        finally:
            await store.close()

    asyncio.run(scenario())


def test_heartbeats_expire_after_their_ttl(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        store = Store(StoreAddress(redis_server.url, "t"))
        try:
            await store.heartbeat({"instance": "a", "pid": 1, "revision": 3}, ttl=0.3)
            await store.heartbeat({"instance": "a", "pid": 2, "revision": 3}, ttl=30)
            assert sorted(b["pid"] for b in await store.heartbeats()) == [1, 2]
            await asyncio.sleep(0.5)
            assert [b["pid"] for b in await store.heartbeats()] == [2]
            await store.forget_worker("a", 2)
            assert await store.heartbeats() == []
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_published_revision_reaches_a_subscriber(redis_server: RedisServer) -> None:
    async def scenario() -> int:
        store = Store(StoreAddress(redis_server.url, "t"))
        try:
            changes = store.changes()
            waiting = asyncio.create_task(anext(changes))
            await asyncio.sleep(0.2)  # subscribed
            await store.write(0, b"one", "me", "push", [])
            revision = await asyncio.wait_for(waiting, 5)
            await changes.aclose()
            return revision
        finally:
            await store.close()

    assert asyncio.run(scenario()) == 1


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
def test_an_unanswering_redis_fails_fast_without_showing_the_password(
    tmp_path: Path, fault: str
) -> None:
    with RedisServer(tmp_path, password="s3cret-pw") as server:
        address = StoreAddress(server.url, "t")
        assert "s3cret-pw" not in address.shown and ":***@" in address.shown

        async def attempt() -> tuple[str, float]:
            store = Store(address)
            try:
                await store.write(0, b"one", "me", "push", [])  # a pooled connection exists
                if fault == "stopped":
                    server.stop()
                else:
                    server.freeze()
                started = time.monotonic()
                with pytest.raises(StoreUnavailable) as caught:
                    await store.read()
                return str(caught.value), time.monotonic() - started
            finally:
                server.thaw()
                await store.close()

        message, took = asyncio.run(attempt())
        assert took < 8, f"an unanswering Redis held a call for {took:.1f}s"
        assert message.startswith(f"store {address.shown} did not answer")
        assert "s3cret-pw" not in message


def test_a_wrong_password_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    with RedisServer(tmp_path, password="right") as server:
        address = StoreAddress(server.url.replace(":right@", ":wrong-pw@"), "t")

        async def attempt() -> str:
            store = Store(address)
            try:
                with pytest.raises(StoreUnavailable) as caught:
                    await store.revision()
                return str(caught.value)
            finally:
                await store.close()

        message = asyncio.run(attempt())
        assert "wrong-pw" not in message and "***" in message


def test_a_store_url_must_name_redis() -> None:
    with pytest.raises(ValueError, match="redis://"):
        StoreAddress("http://user:pw@host/0")
    with pytest.raises(ValueError) as caught:
        StoreAddress("http://user:pw@host/0")
    assert "pw@" not in str(caught.value)


def test_a_password_in_the_query_is_hidden_too() -> None:
    address = StoreAddress("unix:///run/redis.sock?db=0&password=s3cret", "t")
    assert address.shown == "unix:///run/redis.sock?db=0&password=***"
    assert address.clean("boom s3cret") == "boom ***"


def test_a_percent_encoded_password_is_hidden_as_written_and_as_read() -> None:
    """redis-py reads `p%40ss%2Fw0rd` as `p@ss/w0rd`: a message of its own would
    hold that form, the URL the other."""
    address = StoreAddress("redis://:p%40ss%2Fw0rd@127.0.0.1:6379/0", "t")
    assert address.shown == "redis://:***@127.0.0.1:6379/0"
    cleaned = address.clean("AUTH p@ss/w0rd refused; URL had p%40ss%2Fw0rd")
    assert cleaned == "AUTH *** refused; URL had ***"
