"""Where the gateway's own cost per request goes: the in-process path, profiled.

    python -m bench.profile [new|legacy] [--requests N] [--top N]

Drives the gateway (`create_app`, the demo table) and, as the reference, the
same app alone, each in a process of its own, with the scope uvicorn would
give for `GET /books/1` and no socket, on uvloop as the servers run. Prints
the CPU time per request of each (all threads, unprofiled), then the
functions whose cost per request the gateway adds, from two cProfile runs
subtracted function by function: calls per request (exact; a coroutine
counts once per resumption) and own CPU time of the event loop's thread per
request (cProfile's overhead inflates it, about evenly per call: read it as
a ranking). For `legacy`, the WSGI app's side of the thread pool is the
same in both runs and is not profiled.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any, cast

from bench import tables
from bench.product import Settings, create_app

Message = MutableMapping[str, Any]
App = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]
PATH = tables.MEASURED_PATH
SCOPE: Message = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
    "scheme": "http",
    "method": "GET",
    "root_path": "",
    "path": PATH,
    "raw_path": PATH.encode(),
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
}


async def lifespan(app: App, state: dict[str, Any]) -> asyncio.Task[None]:
    """Start the app's lifespan and wait until it reports startup complete."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    started = asyncio.Event()
    await inbox.put({"type": "lifespan.startup"})

    async def send(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"startup failed: {message.get('message')}")

    scope: Message = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    task: asyncio.Task[None] = asyncio.ensure_future(app(scope, inbox.get, send))
    await asyncio.wait_for(started.wait(), 120)
    return task


async def request(app: App, state: dict[str, Any]) -> int:
    """One request as uvicorn hands it over; returns the status."""
    status = 0
    sent_body = False
    forever = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await forever.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app({**SCOPE, "headers": list(SCOPE["headers"]), "state": dict(state)}, receive, send)
    return status


async def measure(app: App, requests: int, profile: cProfile.Profile) -> float:
    """CPU seconds (all threads) per request unprofiled, after a warm-up; then as many
    requests profiled."""
    state: dict[str, Any] = {}
    await lifespan(app, state)
    for _ in range(50):
        if await request(app, state) != 200:
            raise RuntimeError(f"GET {PATH} did not answer 200")
    started = time.process_time()
    for _ in range(requests):
        await request(app, state)
    cpu = (time.process_time() - started) / requests
    profile.enable()
    for _ in range(requests):
        await request(app, state)
    profile.disable()
    return cpu


def one(side: str, which: str, requests: int, out: Path) -> None:
    """In a process of its own: measure the gateway or the app alone, write the profile."""
    workdir = out.parent
    tables.seed_database(workdir / f"{which}.db")
    app: App
    if which == "alone":
        if side == "new":
            from new_fastapi.app import app as fastapi_app

            app = fastapi_app
        else:
            from bench.legacy_asgi import app as wsgi_app

            app = cast(App, wsgi_app)
    else:
        config = tables.write(workdir, "routes.yaml", tables.demo(books_get=side))
        app = create_app(Settings(config=str(config), watch_interval=5))
    # The loop thread's CPU time, not the wall clock: waiting for a pool thread is not
    # the function's own cost, and on a shared machine the wall clock is mostly others.
    profile = cProfile.Profile(time.thread_time_ns, 1e-9)
    try:
        import uvloop

        wall = uvloop.run(measure(app, requests, profile))
    except ImportError:
        wall = asyncio.run(measure(app, requests, profile))
    profile.dump_stats(out)
    out.with_suffix(".wall").write_text(repr(wall))


Key = tuple[str, int, str]


def per_request(profile: pstats.Stats, requests: int) -> dict[Key, tuple[float, float]]:
    """(calls, own seconds) per request of each function. A built-in's name holds its
    type's address (`<built-in method __new__ of type object at 0x...>`), which differs
    between the two processes: it is left out, so that the runs compare."""
    stats: dict[Key, tuple[int, int, float, float, object]] = profile.stats  # type: ignore[attr-defined]
    found: dict[Key, tuple[float, float]] = {}
    for (filename, line, name), value in stats.items():
        key = (filename, line, _ADDRESS.sub("", name))
        calls, own = found.get(key, (0.0, 0.0))
        found[key] = (calls + value[1] / requests, own + value[2] / requests)
    return found


_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def where(key: Key) -> str:
    filename, line, name = key
    for marker in ("site-packages/", "/lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
    if filename.startswith(str(Path.cwd())):
        filename = os.path.relpath(filename)
    return f"{name} ({filename}:{line})" if line else name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("side", choices=("new", "legacy"), nargs="?", default="new")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--one", choices=("gateway", "alone"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        one(args.side, args.one, args.requests, args.out)
        return 0
    results: dict[str, tuple[float, dict[Key, tuple[float, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="gateway-profile-") as tmp:
        for which in ("alone", "gateway"):
            out = Path(tmp) / which / "profile.pstats"
            out.parent.mkdir()
            command = [sys.executable, "-m", "bench.profile", args.side, "--one", which]
            command += ["--requests", str(args.requests), "--out", str(out)]
            subprocess.run(command, check=True)
            stats = pstats.Stats(str(out))
            wall = float(out.with_suffix(".wall").read_text())
            results[which] = (wall, per_request(stats, args.requests))
    (alone_wall, theirs), (gateway_wall, ours) = results["alone"], results["gateway"]
    extra = []
    for key, (calls, own) in ours.items():
        ref_calls, ref_own = theirs.get(key, (0.0, 0.0))
        if abs(own - ref_own) > 0.05e-6 or calls != ref_calls:
            extra.append((own - ref_own, calls - ref_calls, key))
    extra.sort(reverse=True)
    calls_added = sum(c for c, _o in ours.values()) - sum(c for c, _o in theirs.values())
    print(
        f"{args.side}: {alone_wall * 1e6:.1f} us CPU per request alone, {gateway_wall * 1e6:.1f}"
        f" us through the gateway ({(gateway_wall - alone_wall) * 1e6:+.1f} us; in process, no "
        f"socket, unprofiled); {calls_added:+.0f} function calls per request (a coroutine "
        "counts once per resumption)"
    )
    print(f"\nown time and calls per request that the gateway adds, profiled (top {args.top}):")
    for own, calls, key in extra[: args.top]:
        print(f"  {own * 1e6:6.2f} us  {calls:+5.1f} calls  {where(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
