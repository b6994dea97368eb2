"""`gateway push | pull | history | revert | fleet` against a real redis-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.fleet.store import Store, StoreAddress
from tests.harness import TEST_BACKENDS
from tests.redis_server import RedisServer

TABLE = (
    "version: 1\n"
    + TEST_BACKENDS
    + """\
default: legacy
routes:
  - id: a  # the first route
    path: /a
    backend: %s
  - {id: b, path: /b, backend: legacy}
"""
)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path, password="pw-never-shown") as server:
        yield server


def gateway(*args: str) -> int:
    return main(list(args))


def test_push_pull_history_and_revert(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ("--store", redis_server.url, "--store-key", "t")
    first = tmp_path / "one.yaml"
    first.write_text(TABLE % "legacy")
    second = tmp_path / "two.yaml"
    second.write_text(TABLE % "new")

    assert gateway("pull", *store) == 1
    assert "holds no route table yet" in capsys.readouterr().err
    assert gateway("push", str(first), *store) == 0
    assert capsys.readouterr().out == f"{first}: pushed, revision 0 -> 1\n"
    assert gateway("push", str(second), "--if-revision", "1", *store) == 0
    assert capsys.readouterr().out == f"{second}: pushed, revision 1 -> 2\n"
    # A compare-and-set on a stale revision is refused and changes nothing.
    assert gateway("push", str(first), "--if-revision", "1", *store) == 1
    err = capsys.readouterr().err
    assert "the store is at revision 2, not 1; nothing was pushed" in err
    assert gateway("pull", *store) == 0
    out = capsys.readouterr()
    assert out.out == TABLE % "new"  # the text as written, comments kept
    assert out.err == "# revision 2\n"

    assert gateway("revert", "1", *store) == 0
    assert capsys.readouterr().out == "reverted to the text of revision 1: revision 2 -> 3\n"
    assert gateway("pull", *store) == 0
    assert capsys.readouterr().out == TABLE % "legacy"
    assert gateway("history", *store) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["3", "2", "1"]
    assert lines[0].split()[2] == "revert" and lines[0].endswith("routes: a")
    assert lines[1].split()[2] == "push" and lines[1].endswith("routes: a")
    assert lines[2].endswith("routes: a,b")
    assert all(" cli " in line for line in lines)

    async def events() -> list[dict[str, object]]:
        s = Store(StoreAddress(redis_server.url, "t"))
        try:
            return await s.events()
        finally:
            await s.close()

    kinds = [(e["kind"], e["revision"]) for e in asyncio.run(events())]
    assert kinds == [("push", 1), ("push", 2), ("revert", 3)]
    assert gateway("revert", "9", *store) == 1
    assert "revision 9 is not among the kept ones" in capsys.readouterr().err


def test_an_invalid_file_is_never_pushed(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ("--store", redis_server.url, "--store-key", "t")
    bad = tmp_path / "bad.yaml"
    bad.write_text((TABLE % "nowhere").replace("tests.apps:wsgi", "no_such_module:app"))
    assert gateway("push", str(bad), *store) == 1
    err = capsys.readouterr().err
    assert "unknown backend 'nowhere'" in err and "no_such_module" in err
    assert err.splitlines()[-1] == f"{bad}: 2 problems; nothing was pushed"
    # Without the import check (a machine without the apps), the rest is still checked.
    assert gateway("push", str(bad), "--no-import-check", *store) == 1
    err = capsys.readouterr().err
    assert "unknown backend 'nowhere'" in err and "no_such_module" not in err
    assert gateway("pull", *store) == 1  # still nothing in the store


def test_an_unreachable_store_is_one_line_and_exit_1(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = redis_server.url
    redis_server.stop()
    path = tmp_path / "one.yaml"
    path.write_text(TABLE % "legacy")
    assert gateway("push", str(path), "--store", url) == 1
    err = capsys.readouterr().err
    assert err.startswith("gateway push: store redis://:***@127.0.0.1:")
    assert "did not answer" in err and "pw-never-shown" not in err
    assert len(err.splitlines()) == 1
    assert gateway("pull", "--store", "http://nowhere") == 2
    assert "must start with redis://" in capsys.readouterr().err
    # A bad port is a bad argument, told in one line before any connection is tried.
    assert gateway("pull", "--store", "redis://:pw-never-shown@127.0.0.1:port/0") == 2
    err = capsys.readouterr().err
    assert err.startswith("gateway pull: the store URL is invalid: ")
    assert "redis://:***@127.0.0.1:port/0" in err and "pw-never-shown" not in err
    assert len(err.splitlines()) == 1
    assert gateway("pull", "--store", "unix:///run/redis.sock?password=pw-never-shown&db=x") == 2
    assert capsys.readouterr().err == (
        "gateway pull: the store URL is invalid: Invalid value for 'db' in connection URL. "
        "(got 'unix:///run/redis.sock?password=***&db=x')\n"
    )


def test_fleet_reports_instances_behind_the_store(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async def beat(revision: int, pid: int) -> None:
        s = Store(StoreAddress(redis_server.url, "t"))
        try:
            if await s.revision() == 0:
                await s.write(0, b"x", "me", "push", [])
                await s.write(1, b"y", "me", "push", [])
            await s.heartbeat(
                {
                    "instance": "i1",
                    "host": "h",
                    "instance_pid": 10,
                    "instance_since": 0.0,
                    "pid": pid,
                    "revision": revision,
                    "last_error": None,
                    "last_seen": 1.0,
                },
                ttl=30,
            )
        finally:
            await s.close()

    store = ("--store", redis_server.url, "--store-key", "t")
    assert gateway("fleet", *store) == 1
    assert "no instance serves from this store (key prefix 't'" in capsys.readouterr().err
    asyncio.run(beat(2, 11))
    asyncio.run(beat(1, 12))
    assert gateway("fleet", "--json", "--wait", "0.3", *store) == 1
    out = capsys.readouterr()
    view = json.loads(out.out)
    assert view["revision"] == 2
    [instance] = view["instances"]
    assert (instance["id"], instance["pid"], instance["revision"]) == ("i1", 10, 1)
    assert [(w["pid"], w["revision"]) for w in instance["workers"]] == [(11, 2), (12, 1)]
    assert "1 instance(s) not on revision 2" in out.err
    asyncio.run(beat(2, 12))
    assert gateway("fleet", *store) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("ok     i1  h pid 10  r2")


def test_flip_and_canary_with_store_edit_the_store(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ("--store", redis_server.url, "--store-key", "t")
    shown = redis_server.url.replace(":pw-never-shown@", ":***@")
    assert gateway("flip", "a", "new", *store) == 1
    assert capsys.readouterr().err == (
        f"{shown}: store {shown} holds no route table; load one with "
        "'gateway push FILE --store URL'; nothing was changed\n"
    )
    path = tmp_path / "one.yaml"
    path.write_text(TABLE % "legacy")
    assert gateway("push", str(path), *store) == 0
    capsys.readouterr()
    assert gateway("flip", "a", "new", *store) == 0
    assert capsys.readouterr().out == f"{shown}: a -> new\n"
    assert gateway("flip", "a", "new", *store) == 0
    assert capsys.readouterr().out == f"{shown}: a already on new; nothing to change\n"
    assert gateway("flip", "nope", "new", *store) == 1
    assert "unknown route 'nope' (use one of: a, b); nothing was changed" in capsys.readouterr().err
    assert gateway("canary", "a", "12.5", "--backend", "legacy", *store) == 0
    assert capsys.readouterr().out == f"{shown}: a canary set at 12.5% to legacy\n"
    assert gateway("pull", *store) == 0
    assert capsys.readouterr().out == (TABLE % "new").replace(
        "    backend: new\n", "    backend: new\n    canary: {backend: legacy, percent: 12.5}\n"
    )  # one line added, the rest (comments included) as written
    assert gateway("history", *store) == 0
    kinds = [line.split()[2] for line in capsys.readouterr().out.splitlines()]
    assert kinds == ["canary", "flip", "push"]  # the no-op flip and the refusal wrote nothing
    assert gateway("flip", "a", "new", "--store", "http://x") == 2
    assert "must start with redis://" in capsys.readouterr().err
