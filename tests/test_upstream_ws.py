"""WebSockets through a url backend, against a real uvicorn upstream, with a real
client (the websockets library) in front of a real uvicorn gateway."""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from gateway.app import Gateway
from gateway.routefile.model import BackendSpec
from gateway.settings import Settings
from gateway.upstream import HTTPBackend
from tests.harness import ThreadServer, write_routes
from tests.raw_upstream import RawUpstream

closes: dict[str, tuple[int, str]] = {}  # ?id= -> what the upstream heard at the close
flood_sent = [0]
redirects = [0]  # handshakes /loop answered with a redirect
BIG = 64 * 1024


async def echo(ws: WebSocket) -> None:
    offered = ws.scope.get("subprotocols", [])
    await ws.accept(subprotocol=next((p for p in ("chat.v2", "chat.v1") if p in offered), None))
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            closes[ws.query_params.get("id", "")] = (message["code"], message.get("reason") or "")
            return
        if message.get("text") is not None:
            await ws.send_text("echo:" + message["text"])
        else:
            await ws.send_bytes(message["bytes"][::-1])


async def closing(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text("bye")
    await ws.close(code=4001, reason="done here")


async def whoami(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_json({"host": ws.headers.get("host"), "xff": ws.headers.get("x-forwarded-for")})
    await ws.close()


async def greet(ws: WebSocket) -> None:
    """Accepts with headers of its own: two cookies and a custom header."""
    headers = [(b"set-cookie", b"seat=12; Path=/"), (b"set-cookie", b"row=b; HttpOnly")]
    await ws.accept(subprotocol="chat.v1", headers=[*headers, (b"x-upstream", b"yes")])
    await ws.send_text("hi")
    await ws.close()


async def refuse(ws: WebSocket) -> None:
    denial = PlainTextResponse("no entry", 401, headers={"www-authenticate": 'Bearer realm="x"'})
    await ws.send_denial_response(denial)


async def crash(ws: WebSocket) -> None:
    raise RuntimeError("the handshake handler is broken")


async def flood(ws: WebSocket) -> None:
    await ws.accept()
    with_error = False
    try:
        for _ in range(2000):
            await ws.send_bytes(b"x" * BIG)
            flood_sent[0] += 1
    except (WebSocketDisconnect, RuntimeError, OSError):
        with_error = True
    assert with_error or flood_sent[0] == 2000


async def loop(ws: WebSocket) -> None:
    redirects[0] += 1
    url = f"{ws.url.path}?{ws.url.query}"
    await ws.send_denial_response(RedirectResponse(url, 302))  # to itself, query and all


upstream_app = Starlette(
    routes=[
        WebSocketRoute("/loop", loop),
        WebSocketRoute("/echo", echo),
        WebSocketRoute("/closing", closing),
        WebSocketRoute("/whoami", whoami),
        WebSocketRoute("/greet", greet),
        WebSocketRoute("/refuse", refuse),
        WebSocketRoute("/crash", crash),
        WebSocketRoute("/flood", flood),
    ]
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadServer]:
    with ThreadServer(upstream_app) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(upstream: ThreadServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    text = f'version: 1\nbackends:\n  remote: {{url: "{upstream.url}"}}\ndefault: remote\n'
    path = write_routes(tmp_path_factory.mktemp("ws"), text)
    with ThreadServer(Gateway(Settings(config=str(path)))) as server:
        yield f"ws://127.0.0.1:{server.port}"


def test_text_and_binary_frames_and_the_negotiated_subprotocol(gateway: str) -> None:
    with connect(gateway + "/echo", subprotocols=["chat.v1", "chat.v2"], open_timeout=10) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v2"  # the upstream's choice, not the gateway's
        assert ws.response.headers["x-gateway-backend"] == "remote"
        ws.send("héllo")
        assert ws.recv(timeout=10) == "echo:héllo"
        ws.send(bytes(range(256)))
        assert ws.recv(timeout=10) == bytes(range(256))[::-1]
    with connect(gateway + "/echo", open_timeout=10) as ws:
        assert ws.subprotocol is None


def test_the_upstreams_handshake_headers_reach_the_client(
    gateway: str, upstream: ThreadServer
) -> None:
    with connect(f"ws://127.0.0.1:{upstream.port}/greet", subprotocols=["chat.v1"]) as ws:  # type: ignore[list-item]
        alone = ws.response.headers
    with connect(gateway + "/greet", subprotocols=["chat.v1"], open_timeout=10) as ws:  # type: ignore[list-item]
        through = ws.response.headers
        assert ws.subprotocol == "chat.v1"
        assert ws.recv(timeout=10) == "hi"
    assert through.get_all("set-cookie") == ["seat=12; Path=/", "row=b; HttpOnly"]
    assert through.get_all("x-upstream") == ["yes"]
    # The handshake's own fields are each hop's, given once by the gateway's server.
    for name in ("sec-websocket-protocol", "sec-websocket-accept", "upgrade", "connection"):
        assert len(through.get_all(name)) == 1, (name, through.raw_items())
    assert len(through.get_all("date")) == 1
    own = {"x-gateway-backend", "x-gateway-route", "x-request-id"}
    assert {k.lower() for k in through} - own == {k.lower() for k in alone}


def test_a_clients_close_code_and_reason_reach_the_upstream(gateway: str) -> None:
    with connect(gateway + "/echo?id=closer", open_timeout=10) as ws:
        ws.send("x")
        ws.recv(timeout=10)
        ws.close(code=4002, reason="client done")
    _wait_for(lambda: "closer" in closes)
    assert closes["closer"] == (4002, "client done")


def test_a_client_that_vanishes_closes_the_upstream(
    gateway: str, caplog: pytest.LogCaptureFixture
) -> None:
    with connect(gateway + "/echo?id=vanished", open_timeout=10) as ws:
        ws.send("x")
        ws.recv(timeout=10)
        ws.socket.shutdown(socket.SHUT_RDWR)  # no close frame: the connection just ends
    _wait_for(lambda: "vanished" in closes)
    assert closes["vanished"][0] in (1000, 1001)  # "going away", or a plain end
    assert not [r for r in caplog.records if "backend failed" in r.getMessage()]


def test_the_upstreams_close_code_and_reason_reach_the_client(gateway: str) -> None:
    with connect(gateway + "/closing", open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "bye"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "done here")


def test_the_upstream_sees_the_clients_host_and_address(gateway: str) -> None:
    with connect(gateway + "/whoami", open_timeout=10) as ws:
        seen = ws.recv(timeout=10)
    assert f'"host":"{gateway.removeprefix("ws://")}"' in str(seen)
    assert '"xff":"127.0.0.1"' in str(seen)


def test_a_refused_handshake_is_relayed_as_the_upstreams_answer(gateway: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(gateway + "/refuse", open_timeout=10)
    response = info.value.response
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="x"'
    assert response.headers["x-gateway-backend"] == "remote"
    with pytest.raises(InvalidStatus) as crashed:
        connect(gateway + "/crash", open_timeout=10)
    assert crashed.value.response.status_code == 500
    # Counted by the upstream's status, as an HTTP answer is.
    url = gateway.replace("ws://", "http://")
    _wait_for(lambda: {"401", "500"} <= set(_counts(url)))
    assert _counts(url)["401"] == _counts(url)["500"] == 1


def test_a_client_that_reads_nothing_stops_the_upstream(
    gateway: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that stops reading: every buffer on the way fills, then the upstream's
    sends wait. Unbounded, the upstream would send all 2000 x 64 KiB (125 MiB)."""
    flood_sent[0] = 0
    port = int(gateway.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            b"GET /flood HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert sock.recv(12) == b"HTTP/1.1 101"
        stalled = -1
        deadline = time.monotonic() + 15
        while stalled != flood_sent[0]:  # until nothing moves for half a second
            assert time.monotonic() < deadline, flood_sent[0]
            stalled = flood_sent[0]
            time.sleep(0.5)
        # Kernel buffers on both hops hold a few MiB (about 60 messages without the
        # gateway, 150 with it, on Linux loopback); 125 MiB means nothing pushed back.
        assert stalled < 600, stalled
    # A client that leaves is not the upstream's failure.
    time.sleep(0.5)
    assert not [r for r in caplog.records if "backend failed" in r.getMessage()]


@pytest.mark.parametrize(("path", "code"), [("/refuse", 1008), ("/crash", 1011)])
def test_without_the_denial_extension_a_refusal_is_a_close(
    upstream: ThreadServer, path: str, code: int
) -> None:
    """A server without `websocket.http.response` hears a close: 1008 for a 4xx, 1011 else."""
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        async with aiohttp.ClientSession() as client:
            backend = HTTPBackend(BackendSpec("remote", "url", upstream.url), client)
            scope = {
                "type": "websocket",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "headers": [(b"host", b"gw.example")],
                "scheme": "ws",
                "client": ("127.0.0.1", 5000),
                "subprotocols": [],
            }
            messages = iter([{"type": "websocket.connect"}])

            async def receive() -> dict[str, Any]:
                return next(messages)

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await backend(scope, receive, send)

    asyncio.run(run())
    assert sent == [{"type": "websocket.close", "code": code}]


def _wait_for(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def _counts(url: str) -> dict[str, float]:
    """gateway_requests_total by code (this module's gateway serves WebSockets only)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/-/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.name == "gateway_requests_total":
                code = sample.labels["code"]
                found[code] = found.get(code, 0) + sample.value
    return found


def test_a_redirected_handshake_reaches_the_client_and_is_not_followed(
    gateway: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The upstream answers the handshake with a redirect: the client gets it as the
    upstream gave it; the gateway does not follow it, which would take the client's
    cookies and credentials wherever the upstream points."""
    caplog.set_level("INFO")
    before = redirects[0]
    # A client library would follow the redirect itself: the handshake by hand.
    conn = http.client.HTTPConnection(gateway.removeprefix("ws://"), timeout=10)
    handshake = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        "Authorization": "Bearer h-s3cret",
        "Cookie": "sid=c-s3cret",
    }
    conn.request("GET", "/loop?token=q-s3cret", headers=handshake)
    response = conn.getresponse()
    conn.close()
    assert response.status == 302
    assert response.headers["location"] == "/loop?token=q-s3cret"
    assert response.headers["x-gateway-backend"] == "remote"
    assert redirects[0] == before + 1  # asked once, not followed
    assert not [r for r in caplog.records if "backend failed" in r.getMessage()]


def test_a_failed_handshake_logs_no_secret_of_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upstream that answers the handshake with no HTTP at all: aiohttp's error
    carries the request (its URL with the query, every header); the log line carries
    none of it."""
    caplog.set_level("INFO")
    with RawUpstream() as raw:
        text = f'version: 1\nbackends:\n  raw: {{url: "{raw.url}"}}\ndefault: raw\n'
        path = write_routes(tmp_path, text)
        with ThreadServer(Gateway(Settings(config=str(path)))) as server:
            with pytest.raises(InvalidStatus) as info:
                connect(
                    f"ws://127.0.0.1:{server.port}/garbage?token=q-s3cret",
                    additional_headers={
                        "Authorization": "Bearer h-s3cret",
                        "Cookie": "sid=c-s3cret",
                    },
                    open_timeout=10,
                )
            assert info.value.response.status_code == 403  # closed before accepting
            _wait_for(lambda: [r for r in caplog.records if "backend failed" in r.getMessage()])
    failed = [r.getMessage() for r in caplog.records if "backend failed" in r.getMessage()]
    assert "kind=protocol" in failed[0]
    assert not [r for r in caplog.records if "s3cret" in r.getMessage()]
