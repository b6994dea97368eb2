"""Flips under load on a real `gateway serve --workers 2`: zero failed requests.

These are the acceptance tests of the live route table. Steady concurrent
traffic runs while routes flip by file edit, CLI and admin API (and while
invalid files are written); every response is recorded and checked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT, GatewayProcess
from tests.under_load import Sample, request_until

CLIENTS = 24
SETTLE = 1.0  # the promise: a saved change is live everywhere within 1 s


@dataclass
class Flip:
    wall: str
    begun: float  # the change may take effect from here on
    done: float  # ... and must have taken effect everywhere by done + SETTLE
    backend: str
    how: str


def demo_routes(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text((ROOT / "routes.yaml").read_text())
    return path


def set_backend_by_file(path: Path, backend: str) -> None:
    """An operator's editor: write a temp file, rename it over (books.get only)."""
    lines = path.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if "id: books.get" in line)
    end = next(i for i in range(index, len(lines)) if "backend:" in lines[i])
    lines[end] = lines[end].split("backend:")[0] + f"backend: {backend}\n"
    tmp = path.with_name(".routes.yaml.tmp")
    tmp.write_text("".join(lines))
    os.replace(tmp, path)


async def load(url: str, stop: asyncio.Event, samples: list[Sample]) -> None:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        await asyncio.gather(
            *(request_until(stop, client, "/books/1", samples) for _ in range(CLIENTS))
        )


def check(samples: list[Sample], flips: list[Flip], end: float, log: str = "") -> None:
    failed = [s for s in samples if s.status != 200]
    assert not failed, (
        f"{len(failed)} failed requests of {len(samples)}, e.g. "
        f"{[(s.status, s.error) for s in failed[:3]]}"
    )
    assert len(samples) > 200, f"only {len(samples)} requests: the load did not run"
    for flip, following in zip(flips, [*flips[1:], None], strict=True):
        until = following.begun if following else end
        # Whole requests only: one sent just before the next flip may be served after it.
        window = [s for s in samples if flip.done + SETTLE <= s.started and s.finished < until]
        assert window, f"no traffic after the {flip.how} flip to {flip.backend}"
        wrong = [s for s in window if s.backend != flip.backend]
        assert not wrong, (
            f"{len(wrong)} of {len(window)} responses from {SETTLE}s after the {flip.how} "
            f"flip to {flip.backend} came from {wrong[0].backend}, the latest "
            f"{max(s.started for s in wrong) - flip.done:.3f}s after the flip "
            f"({flip.done - flip.begun:.3f}s to flip, at {flip.wall})\n{log}"
        )


async def seed(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        r = await client.post("/books", json={"title": "Dune", "author": "Herbert"})
        assert r.status_code == 201


def test_fifty_flips_under_load_by_file_cli_and_admin_api(tmp_path: Path) -> None:
    routes = demo_routes(tmp_path)

    async def scenario(gw: GatewayProcess) -> tuple[list[Sample], list[Flip], float]:
        await seed(gw.url)
        samples: list[Sample] = []
        flips: list[Flip] = []
        stop = asyncio.Event()
        traffic = asyncio.create_task(load(gw.url, stop, samples))
        await asyncio.sleep(0.5)
        backend = "new"
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as admin:
            for i in range(51):
                backend = "legacy" if backend == "new" else "new"
                how = ("file", "cli", "admin")[i % 3]
                begun = time.monotonic()
                if how == "file":
                    set_backend_by_file(routes, backend)
                elif how == "cli":
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "gateway.cli",
                        "flip",
                        "books.get",
                        backend,
                        "--config",
                        str(routes),
                        cwd=ROOT,
                        stdout=asyncio.subprocess.DEVNULL,
                    )
                    assert await proc.wait() == 0
                else:
                    r = await admin.put("/-/routes/books.get", json={"backend": backend})
                    assert r.status_code == 200, r.text
                flips.append(Flip(time.strftime("%H:%M:%S"), begun, time.monotonic(), backend, how))
                await asyncio.sleep(SETTLE + 0.6)  # a window a busy machine still sends into
        stop.set()
        end = time.monotonic()
        await traffic
        return samples, flips, end

    with GatewayProcess(routes, "--workers", "2") as gw:
        samples, flips, end = asyncio.run(scenario(gw))
        log = gw.log()
    check(samples, flips, end, log)
    assert len(flips) == 51
    assert "Traceback" not in log


def test_invalid_files_mid_load_change_nothing_until_a_valid_one(tmp_path: Path) -> None:
    routes = demo_routes(tmp_path)
    good = routes.read_text()
    breakages = [
        lambda t, i: t.replace("backend: new", f"backend: missing{i}", 1),
        lambda t, i: t.replace("methods: [GET, HEAD]", f"methods: [GET, NOPE{i}]"),
        lambda t, i: t + f"  - id: books.list\n    path: /x{i}\n    backend: new\n",
        lambda t, i: t.replace("version: 1", f"version: 1\nbogus{i}: true"),
        lambda t, i: t[: len(t) // 2] + f"\n  - [unclosed{i}\n",
    ]

    async def scenario(gw: GatewayProcess) -> tuple[list[Sample], list[Flip], float]:
        await seed(gw.url)
        samples: list[Sample] = []
        stop = asyncio.Event()
        traffic = asyncio.create_task(load(gw.url, stop, samples))
        start = time.monotonic()
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as admin:
            for i in range(20):
                tmp = routes.with_name(".tmp")
                tmp.write_text(breakages[i % len(breakages)](good, i))
                os.replace(tmp, routes)
                await asyncio.sleep(0.15)
            await asyncio.sleep(SETTLE)
            state = (await admin.get("/-/routes")).json()
            assert state["last_error"] is not None
            assert state["last_error"]["problems"][0].startswith(str(routes))
            assert [r["backend"] for r in state["routes"]] == ["new"] * 5
            routes.write_text(good)  # (not yet seen: the flip below replaces it)
            begun = time.monotonic()
            set_backend_by_file(routes, "legacy")
            flipped = time.monotonic()
            await asyncio.sleep(SETTLE + 0.5)
            state = (await admin.get("/-/routes")).json()
            assert state["last_error"] is None
        stop.set()
        end = time.monotonic()
        await traffic
        flips = [
            Flip("", start - SETTLE, start - SETTLE, "new", "none"),
            Flip("", begun, flipped, "legacy", "file"),
        ]
        return samples, flips, end

    with GatewayProcess(routes, "--workers", "2") as gw:
        samples, flips, end = asyncio.run(scenario(gw))
        log = gw.log()
    check(samples, flips, end)
    assert "route table rejected" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_reloads_every_worker(tmp_path: Path, workers: str) -> None:
    routes = demo_routes(tmp_path)
    with GatewayProcess(routes, "--workers", workers, "--watch-interval", "5") as gw:
        assert httpx.get(gw.url + "/books").headers["x-gateway-backend"] == "new"
        text = routes.read_text().replace("backend: new", "backend: legacy", 1)
        routes.write_text(text)
        time.sleep(0.1)
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGHUP)
        # Generous: 40 requests in a row on a busy machine take seconds by themselves.
        deadline = time.monotonic() + 15
        streak = 0
        while streak < 40:  # enough in a row that both workers have answered
            assert time.monotonic() < deadline, "workers did not all reload on SIGHUP"
            backend = httpx.get(gw.url + "/books").headers["x-gateway-backend"]
            streak = streak + 1 if backend == "legacy" else 0
        assert gw.proc.poll() is None  # still serving, not restarted or killed
        assert "trigger=SIGHUP" in gw.log()
