"""A backend's time limits, for every kind of backend, over real servers on loopback.

`timeout` bounds the time to the start of the answer, counted from when the
backend has the whole request body; `read_timeout` bounds each gap in the body
of the answer. Either may be set on a backend or on a route (the route's win).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from gateway import upstream_client
from gateway.app import Gateway
from gateway.routefile.loading import parse_config
from gateway.routefile.model import ConfigError
from gateway.settings import Settings
from tests import timeout_apps
from tests.harness import ThreadServer, write_routes

KINDS = ("url", "asgi", "wsgi")
GAP = 1.5  # seconds between two chunks of a slow stream: past every short limit below


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadServer]:
    with ThreadServer(timeout_apps.asgi) as server:
        yield server


def serve(tmp_path: Path, text: str) -> ThreadServer:
    return ThreadServer(Gateway(Settings(config=str(write_routes(tmp_path, text)))))


def backend(kind: str, upstream: ThreadServer, options: str) -> str:
    """A backend of `kind` serving `tests.timeout_apps`, with `options` as YAML keys."""
    target = {
        "url": f'url: "{upstream.url}"',
        "asgi": 'asgi: "tests.timeout_apps:asgi"',
        "wsgi": 'wsgi: "tests.timeout_apps:wsgi"',
    }[kind]
    return f"{{{target}, {options}}}"


def read_stream(url: str) -> tuple[bytes, bool, float]:
    """(the body as far as it came, whether it came whole, seconds it took)."""
    started = time.monotonic()
    body = b""
    try:
        with httpx.stream("GET", url, timeout=10) as r:
            assert r.status_code == 200
            for part in r.iter_raw():
                body += part
    except httpx.RemoteProtocolError:
        return body, False, time.monotonic() - started
    return body, True, time.monotonic() - started


def timeouts_counted(server: ThreadServer, route: str) -> float:
    text = httpx.get(server.url + "/-/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            wanted = labels.get("route") == route and labels.get("kind") == "timeout"
            if sample.name == "gateway_backend_errors_total" and wanted:
                return sample.value
    return 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_timeout_bounds_the_first_byte_not_the_gaps_of_a_stream(
    tmp_path: Path, upstream: ThreadServer, kind: str
) -> None:
    text = f"version: 1\nbackends:\n  b: {backend(kind, upstream, 'timeout: 1')}\ndefault: b\n"
    with serve(tmp_path, text) as gw:
        body, whole, seconds = read_stream(f"{gw.url}/stream?n=2&gap={GAP}")
        assert whole
        assert body == timeout_apps.chunk(0) + timeout_apps.chunk(1)
        assert seconds >= 2 * GAP  # the gaps were there, each past the timeout
        assert timeouts_counted(gw, "_default") == 0


@pytest.mark.parametrize("kind", KINDS)
def test_read_timeout_cuts_a_stream_that_stalls(
    tmp_path: Path, upstream: ThreadServer, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    options = "timeout: 1, read_timeout: 0.5"
    text = f"version: 1\nbackends:\n  b: {backend(kind, upstream, options)}\ndefault: b\n"
    with serve(tmp_path, text) as gw:
        body, whole, seconds = read_stream(f"{gw.url}/stream?n=2&gap={GAP}")
        assert not whole  # the client sees the truncation
        assert body == timeout_apps.chunk(0)
        assert seconds < 2 * GAP
        assert timeouts_counted(gw, "_default") == 1
        # A stream whose gaps stay under the limit is not cut, however long it lasts in
        # all: the clock's timer, armed for the first gap, fires while later ones run
        # and must find the limit counted afresh from the last chunk.
        body, whole, seconds = read_stream(f"{gw.url}/stream?n=12&gap=0.1")
        assert whole
        assert body == b"".join(timeout_apps.chunk(i) for i in range(12))
        assert seconds > 2 * 0.5  # longer than two of the limit
        assert timeouts_counted(gw, "_default") == 1
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("gateway")]
    cut = [m for m in logged if "backend failed" in m]
    assert len(cut) == 1, logged
    assert cut[0].startswith("backend failed: route=_default backend=b request_id=")
    assert "kind=timeout status=(response already started) GET /stream" in cut[0]
    assert cut[0].endswith("no response body bytes for 0.5s")


@pytest.mark.parametrize("kind", KINDS)
def test_a_slow_reader_is_not_a_stalled_backend(
    tmp_path: Path, upstream: ThreadServer, kind: str
) -> None:
    """32 MiB at once to a client that stops reading for 1.5 s: the backend waits on
    the client (flow control) for longer than its read_timeout, and is not cut."""
    options = "read_timeout: 0.5"
    text = f"version: 1\nbackends:\n  b: {backend(kind, upstream, options)}\ndefault: b\n"
    n = 512
    with serve(tmp_path, text) as gw:
        with httpx.stream("GET", f"{gw.url}/big?n={n}", timeout=10) as r:
            parts = r.iter_raw()
            size = len(next(parts))
            time.sleep(GAP)
            size += sum(len(part) for part in parts)
        assert size == n * timeout_apps.BIG
        assert timeouts_counted(gw, "_default") == 0


def slow_upload(pieces: int = 3, pause: float = 0.6) -> Iterator[bytes]:
    for i in range(pieces):
        if i:
            time.sleep(pause)
        yield f"piece{i};".encode()


@pytest.mark.parametrize("kind", KINDS)
def test_a_slow_upload_is_not_a_slow_answer(
    tmp_path: Path, upstream: ThreadServer, kind: str
) -> None:
    """Three pieces 0.6 s apart, a timeout of 1 s: the upload takes longer than the
    timeout, and the backend answers at once once it has the body."""
    text = f"version: 1\nbackends:\n  b: {backend(kind, upstream, 'timeout: 1')}\ndefault: b\n"
    expected = b"".join(slow_upload(pause=0))
    with serve(tmp_path, text) as gw:
        started = time.monotonic()
        r = httpx.post(
            gw.url + "/upload",
            content=slow_upload(),
            headers={"content-length": str(len(expected))},
            timeout=10,
        )
        assert time.monotonic() - started >= 1.2
        assert r.status_code == 200, r.text
        assert r.json() == {"body": expected.decode()}


def test_the_route_limits_win_for_every_backend_it_uses(
    tmp_path: Path, upstream: ThreadServer
) -> None:
    text = f"""\
version: 1
backends:
  hasty: {backend("asgi", upstream, "timeout: 0.3")}
  patient: {backend("wsgi", upstream, "timeout: 5")}
  spare: {backend("url", upstream, "timeout: 5")}
  trickle: {backend("asgi", upstream, "read_timeout: 0.5")}
default: hasty
routes:
  - {{id: longer, path: /longer/slow, backend: hasty, timeout: 3}}
  - {{id: none, path: /none/slow, backend: hasty, timeout: 0}}
  - {{id: shorter, path: /shorter/slow, backend: patient, timeout: 0.3}}
  - id: canary
    path: /canary/slow
    backend: hasty
    canary: {{backend: patient, percent: 100}}
    timeout: 0.3
  - {{id: fallback, path: /fallback/slow, backend: patient, fallback: spare, timeout: 0.3}}
  - {{id: cut, path: /cut/stream, backend: patient, read_timeout: 0.5}}
  - {{id: uncut, path: /uncut/stream, backend: trickle, read_timeout: 0}}
"""
    with serve(tmp_path, text) as gw:

        def get(path: str) -> httpx.Response:
            return httpx.get(gw.url + path, timeout=10)

        assert get("/slow?wait=1").status_code == 504  # the backend's own 0.3 s
        assert get("/longer/slow?wait=1").status_code == 200
        assert get("/none/slow?wait=1").status_code == 200
        for path, answered_by in [
            ("/shorter/slow", "patient"),
            ("/canary/slow", "patient"),
            ("/fallback/slow", "spare"),  # the primary timed out, then its fallback
        ]:
            r = get(path + "?wait=1")
            assert r.status_code == 504, path
            assert (r.json()["kind"], r.json()["backend"]) == ("timeout", answered_by)
        body, whole, _ = read_stream(f"{gw.url}/cut/stream?n=2&gap={GAP}")
        assert (body, whole) == (timeout_apps.chunk(0), False)
        body, whole, _ = read_stream(f"{gw.url}/uncut/stream?n=2&gap=1")
        assert (body, whole) == (timeout_apps.chunk(0) + timeout_apps.chunk(1), True)
        shown = {r["id"]: r for r in get("/-/routes").json()["routes"]}
    assert (shown["longer"]["timeout"], "read_timeout" in shown["longer"]) == (3, False)
    assert (shown["cut"]["read_timeout"], "timeout" in shown["cut"]) == (0.5, False)
    assert shown["uncut"]["read_timeout"] == 0
    assert shown["fallback"]["timeout"] == 0.3


def test_read_timeout_leaves_an_accepted_websocket_alone(tmp_path: Path) -> None:
    text = """\
version: 1
backends:
  new: {asgi: "tests.apps:asgi", timeout: 1, read_timeout: 0.3}
default: new
"""
    with serve(tmp_path, text) as gw, connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
        time.sleep(1)  # quiet for longer than both limits
        ws.send("still here")
        assert ws.recv(timeout=5) == "echo:still here"


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose listener never accepts, with its queue full: a connection to it
    hangs (the kernel drops the SYNs) instead of being refused."""
    with socket.socket() as listener, contextlib.ExitStack() as stack:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        for _ in range(3):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        time.sleep(0.2)
        yield port


def test_connecting_to_an_upstream_is_bounded_even_without_a_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream_client, "CONNECT_TIMEOUT", 0.5)
    with unanswered_port() as port:
        text = f'version: 1\nbackends:\n  b: {{url: "http://127.0.0.1:{port}", timeout: 0}}\n'
        with serve(tmp_path, text + "default: b\n") as gw:
            started = time.monotonic()
            r = httpx.get(gw.url + "/", timeout=10)
            assert time.monotonic() - started < 5
    assert r.status_code == 502
    assert r.json()["kind"] == "connect"


ROUTE = "version: 1\nbackends:\n  b: {asgi: 'tests.apps:asgi'}\nroutes:\n  - "


@pytest.mark.parametrize(
    ("entry", "problems"),
    [
        (
            "{id: a, path: /a, backend: b, timeout: -1}",
            [
                "5:44: route 'a': 'timeout' (seconds, 0 for none) must be a number from 0 to 3600 "
                "(got -1)"
            ],
        ),
        (
            "{id: a, path: /a, backend: b, read_timeout: .inf, timeout: soon}",
            [
                "5:49: route 'a': 'read_timeout' (seconds, 0 for none) must be a number from 0 "
                "to 3600 (got inf)",
                "5:64: route 'a': 'timeout' (seconds, 0 for none) must be a number from 0 to "
                "3600 (got 'soon')",
            ],
        ),
        (
            "{id: a, path: /a, backend: b, read_timeout: 3601}",
            [
                "5:49: route 'a': 'read_timeout' (seconds, 0 for none) must be a number from 0 "
                "to 3600 (got 3601)"
            ],
        ),
    ],
)
def test_route_time_limits_are_checked_with_positions(entry: str, problems: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(ROUTE + entry + "\n", "routes.yaml", resolve_imports=False)
    assert [str(p) for p in info.value.problems] == ["routes.yaml:" + p for p in problems]


def test_backend_read_timeout_is_checked_and_both_show_in_a_route_view() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            "version: 1\nbackends:\n  b: {url: 'http://127.0.0.1:9', read_timeout: .nan}\n",
            "routes.yaml",
            resolve_imports=False,
        )
    assert [str(p) for p in info.value.problems] == [
        "routes.yaml:3:48: backend 'b': 'read_timeout' (seconds, 0 for none) must be a number "
        "from 0 to 3600 (got nan)"
    ]
    config = parse_config(
        ROUTE + "{id: a, path: /a, backend: b, timeout: 2.5, read_timeout: 0}\n",
        resolve_imports=False,
    )
    view = config.view()["routes"][0]
    assert (view["timeout"], view["read_timeout"]) == (2.5, 0)
    assert json.loads(json.dumps(view)) == view
