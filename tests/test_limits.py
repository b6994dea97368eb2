"""One client, or one backend, must not starve the others: the gateway's limits.

Every limit is tested on its failure path (the status a client gets, and that the
gateway keeps serving the others) with short limits set by the test itself.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from gateway.app import Gateway
from gateway.routefile.loading import parse_config
from gateway.routefile.model import DEFAULT_TIMEOUT, ConfigError
from gateway.settings import Settings
from tests import limit_apps
from tests.harness import ROOT, GatewayProcess, ThreadServer, gateway_client, write_routes

KINDS = """\
version: 1
backends:
  legacy: {wsgi: "tests.limit_apps:wsgi"%s}
  new: {asgi: "tests.apps:asgi"%s}
  remote: {url: "http://127.0.0.1:9"%s}
"""


@pytest.mark.parametrize(("extra", "limit"), [("", DEFAULT_TIMEOUT), (", timeout: 0", None)])
def test_every_backend_kind_has_the_same_time_limit(extra: str, limit: float | None) -> None:
    config = parse_config(KINDS % (extra, extra, extra), "routes.yaml", resolve_imports=False)
    assert DEFAULT_TIMEOUT == 30.0
    assert {b.name: b.time_limit for b in config.backends} == {
        "legacy": limit,
        "new": limit,
        "remote": limit,
    }


def test_a_hung_wsgi_handler_gets_a_504(tmp_path: Path) -> None:
    routes = write_routes(tmp_path, KINDS % (", timeout: 0.2", "", "") + "default: legacy\n")
    with gateway_client(routes) as client:
        r = client.get("/hang")
        assert r.status_code == 504
        assert r.json()["kind"] == "timeout"
        assert r.json()["backend"] == "legacy"
        assert client.get("/fine").json()["ok"] is True


def test_a_handler_listening_for_the_disconnect_still_times_out(tmp_path: Path) -> None:
    table = (
        KINDS % ("", "", "") + "  listening: {asgi: 'tests.limit_apps:listening', timeout: 0.3}\n"
    )
    routes = write_routes(tmp_path, table + "default: listening\n")
    with ThreadServer(Gateway(Settings(config=str(routes)))) as server:
        r = httpx.post(server.url + "/x", content=b"body", timeout=10)
        assert r.status_code == 504
        assert r.json()["kind"] == "timeout"


# --- request body caps ------------------------------------------------------------

CAPS = """\
version: 1
backends:
  legacy: {wsgi: "tests.limit_apps:wsgi", max_body: 20}
  new: {asgi: "tests.apps:asgi"}
default: new
routes:
  - {id: small, path: /small, backend: legacy, max_body: 5}
  - {id: open, path: /open, backend: legacy, max_body: 0}
  - {id: legacy, path: /legacy, backend: legacy}
"""


@pytest.fixture
def caps(tmp_path: Path) -> Iterator[TestClient]:
    limit_apps.seen.clear()
    with gateway_client(write_routes(tmp_path, CAPS), max_body=50) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "size", "status"),
    [
        ("/small", 5, 200),  # the route's own limit
        ("/small", 6, 413),
        ("/legacy", 20, 200),  # else its backend's
        ("/legacy", 21, 413),
        ("/new/echo", 50, 200),  # else the gateway's --max-body
        ("/new/echo", 51, 413),
        ("/open", 1000, 200),  # 0: no limit
    ],
)
def test_the_nearest_max_body_decides(caps: TestClient, path: str, size: int, status: int) -> None:
    r = caps.post(path, content=b"x" * size)
    assert r.status_code == status
    if status == 413:
        assert r.json()["kind"] == "body_too_large"
        assert r.json()["request_id"] == r.headers["x-request-id"]
        assert r.headers["connection"] == "close"
        assert limit_apps.seen == []  # a declared length past the limit never reaches the app


def chunks(size: int, step: int = 4) -> Iterator[bytes]:
    for start in range(0, size, step):
        yield b"x" * min(step, size - start)


def test_a_body_without_length_is_cut_at_the_limit(caps: TestClient) -> None:
    r = caps.post("/legacy", content=chunks(40))
    assert r.status_code == 413
    assert r.json()["kind"] == "body_too_large"
    # The app read a short body and answered 200: the client gets the gateway's 413.
    assert all(size <= 20 for size in limit_apps.seen)
    ok = caps.post("/legacy", content=chunks(20))
    assert ok.status_code == 200
    assert ok.json()["read"] == 20


def test_a_cut_counts_no_backend_error(caps: TestClient) -> None:
    caps.post("/small", content=b"x" * 6)
    metrics = caps.get("/-/metrics").text
    assert (
        'gateway_requests_total{backend="legacy",code="413",method="POST",route="small"} 1.0'
        in (metrics)
    )
    assert 'gateway_backend_errors_total{backend="legacy",kind="exception",route="small"} 0.0' in (
        metrics
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "  legacy: {wsgi: 'tests.limit_apps:wsgi', max_body: -1}",
            "routes.yaml:3:53: backend 'legacy': 'max_body' (bytes, 0 for none) must be a whole "
            "number from 0 to 1099511627776 (got -1)",
        ),
        (
            "  legacy: {asgi: 'tests.apps:asgi', threads: 4}",
            "routes.yaml:3:37: backend 'legacy': 'threads' is for wsgi backends only",
        ),
        (
            "  legacy: {wsgi: 'tests.limit_apps:wsgi', threads: 0}",
            "routes.yaml:3:52: backend 'legacy': 'threads' must be a whole number from 1 to 1024 "
            "(got 0)",
        ),
        (
            "  legacy: {wsgi: 'tests.limit_apps:wsgi'}\n"
            "routes:\n  - {id: a, path: /a, backend: legacy, max_body: 1.5}",
            "routes.yaml:5:50: route 'a': 'max_body' (bytes, 0 for none) must be a whole number "
            "from 0 to 1099511627776 (got 1.5)",
        ),
    ],
)
def test_limit_keys_are_checked_with_positions(entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"version: 1\nbackends:\n{entry}\n", "routes.yaml", resolve_imports=False)
    assert [str(p) for p in info.value.problems] == [message]


def raw_request(port: int, head: bytes, *, wait: float = 10.0) -> tuple[bytes, float]:
    """Send `head` (a request, maybe incomplete) on a new connection; read until the server
    closes it or `wait` passes. (everything read, seconds until it ended)"""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head)
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer, time.monotonic() - started


def test_a_stalled_body_gets_408_and_the_connection_closes(tmp_path: Path) -> None:
    routes = write_routes(tmp_path, CAPS)
    with ThreadServer(Gateway(Settings(config=str(routes), body_timeout=0.5))) as server:
        stalled = b"POST /new/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
        answer, seconds = raw_request(server.port, stalled)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"kind":"body_timeout"' in answer
        assert 0.5 <= seconds < 5  # answered, then closed: not left open
        assert httpx.post(server.url + "/new/echo", content=b"fine").json()["body"] == "fine"


# --- WSGI threads -------------------------------------------------------------------

POOLS = """\
version: 1
backends:
  legacy: {wsgi: "tests.limit_apps:wsgi", threads: 1, timeout: 0.5}
  other: {wsgi: "tests.limit_apps:other"}
  new: {asgi: "tests.apps:asgi"}
default: legacy
routes:
  - {id: other, path: /other, backend: other}
  - {id: new, path: "/new/{rest:path}", backend: new}
"""


def stalled_upload(port: int, path: str, sent: int = 10) -> socket.socket:
    """A connection that starts a 1,000-byte POST and sends only `sent` bytes of it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n".encode() + b"x" * sent
    )
    return sock


def read_answer(sock: socket.socket) -> bytes:
    answer = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            answer += chunk
    sock.close()
    return answer


def test_each_wsgi_backend_has_its_own_threads_and_a_bounded_wait(tmp_path: Path) -> None:
    settings = Settings(config=str(write_routes(tmp_path, POOLS)), wsgi_wait=0.2)
    with ThreadServer(Gateway(settings)) as server, httpx.Client(base_url=server.url) as client:
        # A hung handler: its client gets the 504 at once, but the thread stays taken
        # until the handler returns, and the pool counts it.
        started = time.monotonic()
        assert client.get("/hang").status_code == 504
        busy = client.get("/x")
        assert busy.status_code == 503
        assert busy.json()["kind"] == "busy"
        assert busy.json()["request_id"] == busy.headers["x-request-id"]
        assert time.monotonic() - started < limit_apps.HANG_SECONDS
        # Another WSGI backend, and the ASGI one, are not held up.
        other = client.get("/other")
        assert other.status_code == 200
        assert other.json()["thread"].startswith("wsgi-other")
        assert client.get("/new/x").status_code == 200
        time.sleep(limit_apps.HANG_SECONDS)
        assert client.get("/x").json()["thread"].startswith("wsgi-legacy")
        # A handler past its timeout that then answers in many chunks gives its
        # thread back too (nobody reads them: the gateway takes them).
        assert client.get("/hang-chunks").status_code == 504
        time.sleep(limit_apps.HANG_SECONDS + 0.5)
        assert client.get("/x").status_code == 200


def test_a_stalled_body_waits_in_the_loop_not_on_a_thread(tmp_path: Path) -> None:
    settings = Settings(config=str(write_routes(tmp_path, POOLS)), body_timeout=1.0)
    with ThreadServer(Gateway(settings)) as server:
        stalled = [stalled_upload(server.port, "/x") for _ in range(5)]
        time.sleep(0.2)
        # legacy has one thread: none of the stalled uploads holds it.
        r = httpx.post(server.url + "/x", content=b"abc", timeout=10)
        assert r.status_code == 200
        assert r.json()["read"] == 3
        for sock in stalled:
            assert read_answer(sock).startswith(b"HTTP/1.1 408 ")


def test_a_large_body_streams_to_the_thread_and_a_stall_frees_it(tmp_path: Path) -> None:
    routes = str(write_routes(tmp_path, POOLS))
    settings = Settings(config=routes, body_timeout=1.5, wsgi_buffer=16, wsgi_wait=0.2)
    with ThreadServer(Gateway(settings)) as server:
        sock = stalled_upload(server.port, "/x", sent=100)  # past the buffer: on the thread
        time.sleep(0.2)
        assert httpx.get(server.url + "/x", timeout=10).status_code == 503
        answer = read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"kind":"body_timeout"' in answer
        r = httpx.post(server.url + "/x", content=b"y" * 100, timeout=10)
        assert r.status_code == 200
        assert r.json()["read"] == 100


BOOK = {"title": "Dune", "author": "Frank Herbert", "year": 1965}


def test_stalled_uploads_to_the_legacy_app_starve_nobody(
    tmp_path: Path, bookstore_db: Path
) -> None:
    """`gateway serve` on the demo table: 40 uploads that stall (more than the 32
    threads of the legacy app), then both apps answer at once."""
    routes = write_routes(tmp_path, (ROOT / "routes.yaml").read_text())
    with GatewayProcess(routes, "--body-timeout", "4") as gw:
        stalled = [stalled_upload(gw.port, "/books") for _ in range(40)]
        time.sleep(0.5)
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            started = time.monotonic()
            created = client.post("/books", json=BOOK)  # legacy (WSGI)
            assert created.status_code == 201, created.text
            assert created.headers["x-gateway-backend"] == "legacy"
            listed = client.get("/books")  # new (ASGI)
            assert listed.status_code == 200
            assert listed.headers["x-gateway-backend"] == "new"
            assert time.monotonic() - started < 3
        answers = [read_answer(sock) for sock in stalled]
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[0]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"max_body": -1}, "max body must be 0 (no limit) or a number of bytes"),
        ({"body_timeout": -1}, "body timeout must be 0 (no limit) or a number of seconds"),
        ({"wsgi_buffer": -1}, "wsgi buffer must be a number of bytes"),
        ({"wsgi_wait": 0}, "wsgi wait must be above 0 and at most 3600 seconds"),
        ({"max_head": 1000}, "max head must be at least 1024 bytes"),
        ({"head_timeout": 0}, "head timeout must be above 0 and at most 3600 seconds"),
        ({"limit_concurrency": -1}, "limit concurrency must be 0 (no limit) or a number"),
    ],
)
def test_limit_settings_are_checked(setting: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings(**setting)  # type: ignore[arg-type]


# --- request heads and concurrency (gateway serve) ------------------------------------

HEADS = """\
version: 1
backends:
  legacy: {wsgi: "tests.limit_apps:wsgi"}
  new: {asgi: "tests.apps:asgi", timeout: 3}
default: legacy
routes:
  - {id: hang, path: /hang, backend: new}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    routes = write_routes(tmp_path_factory.mktemp("heads"), HEADS)
    limits = ["--max-head", "8192", "--head-timeout", "1", "--timeout-keep-alive", "1"]
    with GatewayProcess(routes, *limits, "--limit-concurrency", "2") as gw:
        yield gw


def test_a_head_past_max_head_gets_431(served: GatewayProcess) -> None:
    assert httpx.get(served.url + "/x", headers={"x-big": "a" * 7000}).status_code == 200
    for size in (9000, 1 << 20):
        head = b"GET /x HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
        answer, _ = raw_request(served.port, head)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        assert b'"kind":"header_too_large"' in answer
    endless = b"GET /x HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 100_000  # never ends
    answer, _ = raw_request(served.port, endless)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_a_request_pipelined_behind_a_refused_head_is_never_served(
    served: GatewayProcess,
) -> None:
    """A head past the limit and a request behind it in the same write: one 431, then
    the connection closes; nothing after the refused head is parsed or answered."""
    big = b"GET /x HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    small = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody"
    answer, _ = raw_request(served.port, big + small)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    # Nor did uvicorn take the rest for a broken request (its 400, lost on the closed
    # connection, and a warning).
    assert "Invalid HTTP request" not in served.log()


def test_a_half_sent_head_gets_408_and_an_idle_connection_closes_silently(
    served: GatewayProcess,
) -> None:
    answer, seconds = raw_request(served.port, b"GET /x HTTP/1.1\r\nHost: t\r\n")
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"kind":"head_timeout"' in answer
    assert 0.9 <= seconds < 5
    answer, seconds = raw_request(served.port, b"")
    assert answer == b""  # closed by the keep-alive timeout, without a word
    assert 0.9 <= seconds < 5


def test_a_later_head_on_a_kept_alive_connection_gets_its_own_full_head_timeout(
    served: GatewayProcess,
) -> None:
    """One timer per connection serves every head on it: a head that begins after an
    earlier request still gets its whole `--head-timeout`, counted from its own start."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    conn.request("GET", "/x")
    first = conn.getresponse()
    first.read()
    assert first.status == 200
    assert conn.sock is not None  # kept alive
    with conn.sock as sock:
        time.sleep(0.6)  # within the keep-alive timeout (1 s), past half the head timeout
        started = time.monotonic()
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n")  # a head that never ends
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
        seconds = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 0.9 <= seconds < 5, seconds


def test_bodies_larger_than_max_head_are_not_heads(served: GatewayProcess) -> None:
    """Only a request's head counts towards `--max-head`: bodies of 25 times its size,
    with a length and chunked, pass on a kept-alive connection, and a head past the
    limit after them on that same connection is still refused."""
    body = b"b" * 200_000
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    for chunked in (False, True):  # an iterable body goes chunked
        conn.request("POST", "/x", body=iter([body]) if chunked else body)
        answer = conn.getresponse()
        assert answer.status == 200
        assert json.loads(answer.read())["read"] == len(body)
    conn.request("GET", "/x", headers={"X-Big": "a" * 9000})
    refused = conn.getresponse()
    assert refused.status == 431
    assert json.loads(refused.read())["kind"] == "header_too_large"
    conn.close()


def test_a_head_after_a_body_in_the_same_read_is_not_charged_for_the_body(
    served: GatewayProcess,
) -> None:
    """The end of a body and the start of the next request's head may come in one read:
    the body's bytes (20 kB here, past `--max-head`) do not count towards the head."""
    head = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 40000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(head + b"b" * 20_000)
        time.sleep(0.3)  # the rest of the body and the next head's start: one read
        sock.sendall(b"b" * 20_000 + b"GET /x HTTP/1.1\r\nHost: t\r\n")
        time.sleep(0.3)
        sock.sendall(b"Connection: close\r\n\r\n")
        answers = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                answers += chunk
    statuses = re.findall(rb"HTTP/1.1 (\d+) ", answers)
    assert statuses == [b"200", b"200"], answers[:300]
    assert b'"read": 40000' in answers or b'"read":40000' in answers


def test_past_limit_concurrency_a_503_but_never_for_the_probes(served: GatewayProcess) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        hung = [pool.submit(httpx.get, served.url + "/hang", timeout=10) for _ in range(2)]
        time.sleep(0.5)
        refused = httpx.get(served.url + "/x")
        assert refused.status_code == 503
        assert refused.json()["kind"] == "overloaded"
        assert refused.headers["retry-after"] == "1"
        assert httpx.get(served.url + "/-/healthz").status_code == 200
        assert httpx.get(served.url + "/-/readyz").status_code == 200
        assert [f.result().status_code for f in hung] == [504, 504]
    assert httpx.get(served.url + "/x").status_code == 200
