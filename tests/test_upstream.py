"""The remote backend and streaming, over real uvicorn servers on loopback."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.bodies import BodyGuard
from gateway.settings import Settings
from tests import apps
from tests.harness import ThreadServer, free_port, write_routes


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadServer]:
    with ThreadServer(apps.asgi) as server:
        yield server


def table(upstream_url: str) -> str:
    # Only /hang gets the short timeout: a loaded machine can take longer than
    # that to answer any request, and a 504 there would hide what the test checks.
    return f"""\
version: 1
backends:
  remote: {{url: "{upstream_url}", timeout: 10}}
  impatient: {{url: "{upstream_url}", timeout: 0.5}}
  down: {{url: "http://127.0.0.1:{free_port()}"}}
  new: {{asgi: "tests.apps:asgi"}}
default: remote
routes:
  - {{id: down, path: /down, backend: down}}
  - {{id: hang, path: /hang, backend: impatient}}
  - {{id: local.stream, path: /local/stream, backend: new}}
"""


@pytest.fixture
def gateway(tmp_path: Path, upstream: ThreadServer) -> Iterator[ThreadServer]:
    path = write_routes(tmp_path, table(upstream.url))
    with ThreadServer(Gateway(Settings(config=str(path)))) as server:
        yield server


def test_proxies_method_path_query_and_body(gateway: ThreadServer) -> None:
    r = httpx.post(gateway.url + "/a%20b/c?x=1&y=%2F", content=b"payload", timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert body["method"] == "POST"
    assert body["path"] == "/a b/c"
    assert body["query"] == "x=1&y=%2F"
    assert body["body"] == "payload"
    assert r.headers["x-gateway-backend"] == "remote"
    assert r.headers["x-echo"] == "1"


def test_forwarding_headers_and_hop_by_hop(gateway: ThreadServer) -> None:
    r = httpx.get(
        gateway.url + "/x",
        headers={
            "Connection": "keep-alive, x-private",
            "X-Private": "secret",
            "X-Forwarded-For": "203.0.113.9",
            "X-Request-ID": "rid-42",
            "TE": "trailers",
        },
        timeout=5,
    )
    seen = r.json()["headers"]
    assert "x-private" not in seen  # named by Connection: hop-by-hop
    assert "te" not in seen
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"
    assert seen["host"] == f"127.0.0.1:{gateway.port}"  # the client's, by default
    assert seen["x-request-id"] == "rid-42"
    assert r.headers["x-request-id"] == "rid-42"


def test_large_request_body_is_streamed_intact(gateway: ThreadServer) -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB, every byte value

    def body() -> Iterator[bytes]:
        for _ in range(32):
            yield chunk

    r = httpx.put(gateway.url + "/upload", content=body(), timeout=10)
    assert r.status_code == 200
    assert r.json()["body"].encode("latin-1") == chunk * 32


@pytest.mark.parametrize("path", ["/stream?n=3&delay=0.4", "/local/stream?n=3&delay=0.4"])
def test_streams_reach_the_client_chunk_by_chunk(gateway: ThreadServer, path: str) -> None:
    arrivals = []
    started = time.monotonic()
    with httpx.stream("GET", gateway.url + path, timeout=5) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for chunk in r.iter_raw():
            arrivals.append((time.monotonic() - started, chunk))
    assert b"".join(c for _, c in arrivals) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    # The first event arrives long before the stream ends: nothing was buffered. (Measured
    # from the first arrival, not the request, so a slow start on a busy machine is no
    # failure; buffered, every event would arrive at once.)
    assert arrivals[-1][0] - arrivals[0][0] >= 0.6


def test_client_disconnect_stops_the_upstream_stream(gateway: ThreadServer) -> None:
    with httpx.stream("GET", gateway.url + "/forever", timeout=5) as r:
        assert r.status_code == 200
        # Hold the iterator: dropping it (a `break` out of a for loop) would close
        # the connection at once and race the check below.
        chunks = r.iter_raw()
        assert next(chunks).startswith(b"data: tick")
        assert apps.open_streams[0] == 1
        chunks.close()
    # The client went away: the gateway must stop reading, and the upstream stream end.
    deadline = time.monotonic() + 5
    while apps.open_streams[0]:
        assert time.monotonic() < deadline, "the upstream stream outlived its client"
        time.sleep(0.02)


def test_connect_error_gives_json_502(gateway: ThreadServer) -> None:
    r = httpx.get(gateway.url + "/down", timeout=5)
    assert r.status_code == 502
    assert r.json()["kind"] == "connect"
    assert r.json()["request_id"] == r.headers["x-request-id"]
    assert r.headers["x-gateway-backend"] == "down"


def test_timeout_gives_json_504(gateway: ThreadServer) -> None:
    started = time.monotonic()
    r = httpx.get(gateway.url + "/hang", timeout=5)
    assert r.status_code == 504
    assert r.json()["kind"] == "timeout"
    assert time.monotonic() - started < 3
    # And the gateway keeps serving.
    assert httpx.get(gateway.url + "/ok", timeout=5).status_code == 200


def test_upstream_5xx_passes_through(gateway: ThreadServer) -> None:
    r = httpx.get(gateway.url + "/status/503", timeout=5)
    assert r.status_code == 503
    assert r.text == "status"


def test_demo_sse_stream_through_the_gateway(tmp_path: Path) -> None:
    routes = Path(__file__).resolve().parent.parent / "routes.yaml"
    path = write_routes(tmp_path, routes.read_text())
    with ThreadServer(Gateway(Settings(config=str(path)))) as gw:
        received: list[bytes] = []
        with httpx.stream("GET", gw.url + "/books/events?limit=2", timeout=10) as r:
            assert r.headers["x-gateway-backend"] == "new"
            created = httpx.post(gw.url + "/books", json={"title": "T", "author": "A"}, timeout=5)
            assert created.headers["x-gateway-backend"] == "legacy"  # a write, via Flask
            book_id = created.json()["id"]
            httpx.put(gw.url + f"/books/{book_id}", json={"year": 1999}, timeout=5)
            for chunk in r.iter_raw():
                received.append(chunk)
    text = b"".join(received).decode()
    assert "event: created" in text
    assert "event: updated" in text
    assert '"year":1999' in text.replace(" ", "")


@pytest.mark.parametrize(
    ("backend", "code"),
    [
        ("remote", "499"),
        ("new", "499"),
        # The body is read before a WSGI thread is taken: the app never runs.
        ("legacy", "499"),
    ],
)
def test_a_client_leaving_mid_upload_is_not_held_against_the_backend(
    tmp_path: Path,
    upstream: ThreadServer,
    backend: str,
    code: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three aborted uploads: no backend error, no rollback, no fallback; a backend that
    fails on the missing body is counted as 499 (the client left first, as nginx says)."""
    caplog.set_level(logging.INFO)
    text = f"""\
version: 1
backends:
  remote: {{url: "{upstream.url}", timeout: 10}}
  new: {{asgi: "tests.apps:asgi"}}
  legacy: {{wsgi: "tests.apps:wsgi"}}
  spare: {{asgi: "tests.apps:asgi"}}
default: remote
routes:
  - id: up
    path: /upload
    backend: {backend}
    fallback: spare
    rollback: {{error_ratio: 0.5, window: 60, min_requests: 3}}
"""
    path = write_routes(tmp_path, text)
    with ThreadServer(Gateway(Settings(config=str(path)))) as gw:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
                sock.sendall(
                    b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 100000\r\n\r\n"
                    + b"x" * 1000
                )
                time.sleep(0.1)  # the backend is reading the body when the client leaves
        aborted = ("gateway_requests_total", backend, code)
        deadline = time.monotonic() + 5
        while (samples := _samples(gw.url)).get(aborted) != 3:
            assert time.monotonic() < deadline, samples
            time.sleep(0.05)
        routes = httpx.get(gw.url + "/-/routes", timeout=5).json()["routes"]
    assert routes[0]["backend"] == backend  # no rollback
    assert path.read_text() == text
    counted = {key: n for key, n in samples.items() if n}
    assert counted == {aborted: 3}  # no backend error, no fallback, nothing else
    assert not [r for r in caplog.records if "backend failed" in r.getMessage()]
    gone = [r.getMessage() for r in caplog.records if "client went away" in r.getMessage()]
    assert len(gone) == (3 if code == "499" else 0)
    assert all(
        m.startswith(
            f"client went away before its request body was sent: route=up backend={backend}"
        )
        for m in gone
    )


def _samples(url: str) -> dict[tuple[str, str, str], float]:
    """Route `up`'s request, error and fallback counts: (name, backend, code or kind)."""
    found = {}
    text = httpx.get(url + "/-/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("route") != "up" or not sample.name.endswith("_total"):
                continue
            backend = labels.get("backend", labels.get("from", ""))
            found[(sample.name, backend, labels.get("code", labels.get("kind", "")))] = sample.value
    return found


def test_only_a_disconnect_before_the_body_is_complete_excuses_a_backend() -> None:
    async def gone_after(messages: list[dict[str, object]]) -> bool:
        pending = iter(messages)

        async def receive() -> dict[str, object]:
            return next(pending)

        watch = BodyGuard(receive, {"headers": []}, None, None)
        for _ in messages:
            await watch.receive()
        return watch.gone

    part = {"type": "http.request", "body": b"a", "more_body": True}
    last = {"type": "http.request", "body": b"b", "more_body": False}
    leave = {"type": "http.disconnect"}
    assert asyncio.run(gone_after([part, leave])) is True
    # The whole body arrived: a backend failing afterwards has no excuse.
    assert asyncio.run(gone_after([part, last, leave])) is False


def test_a_post_right_after_an_upstream_failure_is_answered(gateway: ThreadServer) -> None:
    """An app that raises gets Starlette's 500, and then uvicorn closes the connection,
    without having said so in the answer (no `Connection: close`). A request sent on that
    connection in between is reset, and a POST cannot be retried. The connection that
    carried a 5xx is not reused: the POST right after it gets its answer, every time."""
    with httpx.Client(base_url=gateway.url, timeout=5) as client:
        for _ in range(10):
            assert client.get("/fail").status_code == 500
            answer = client.post("/after", content=b"")
            assert answer.status_code == 200, answer.text
            assert answer.json()["method"] == "POST"


def test_a_5xx_before_the_upload_ended_is_relayed_and_its_connection_not_reused(
    gateway: ThreadServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The upstream answers 500 without reading the body, while the gateway is still
    sending it: the upload stops there, the client gets the 500 as the app sent it, no
    gateway error is logged, and the next POST is answered on a connection of its own
    (that one is closed twice over: aiohttp drops a connection whose upload it cut,
    and the gateway one that carried a 5xx)."""

    def upload() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 4096
            time.sleep(0.005)

    with httpx.Client(base_url=gateway.url, timeout=5) as client:
        for _ in range(3):
            failed = client.post("/fail", content=upload())
            assert (failed.status_code, failed.text) == (500, "Internal Server Error")
            answer = client.post("/after", content=b"next")
            assert answer.status_code == 200, answer.text
            assert answer.json()["body"] == "next"
    assert not [r for r in caplog.records if r.name.startswith("gateway") and r.levelno >= 40]
