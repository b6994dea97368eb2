"""Dispatch to each backend kind, the response headers, and every failure path."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from a2wsgi import WSGIMiddleware
from starlette._utils import is_async_callable
from starlette.websockets import WebSocketDisconnect

from gateway.app import Gateway
from gateway.settings import Settings
from tests import apps
from tests.harness import TEST_BACKENDS, ThreadServer, gateway_client, write_routes

TABLE = (
    "version: 1\n"
    + TEST_BACKENDS
    + """\
  slow: {asgi: "tests.apps:asgi", timeout: 0.3}
  bare: {asgi: "tests.apps:raw_raise"}
default: legacy
routes:
  - id: echo.new
    path: /new/{rest:path}
    backend: new
  - id: fail
    path: /fail
    backend: new
  - id: hang
    path: /hang
    backend: slow
  - id: raw
    path: /raw
    backend: bare
  - id: ws
    path: /ws
    backend: new
  - id: ws.legacy
    path: /ws-legacy
    backend: legacy
"""
)


@pytest.fixture
def routes(tmp_path: Path) -> Path:
    return write_routes(tmp_path, TABLE)


def test_wsgi_backend_serves_what_no_route_claims(routes: Path) -> None:
    with gateway_client(routes) as client:
        r = client.post("/anything", content=b"hello")
    assert r.status_code == 200
    body = r.json()
    assert body["app"] == "wsgi"
    assert body["body"] == "hello"
    assert r.headers["x-gateway-route"] == "_default"
    assert r.headers["x-gateway-backend"] == "legacy"
    # The backend saw the very request id the client got back.
    assert body["request_id"] == r.headers["x-request-id"]
    assert len(r.headers["x-request-id"]) == 32


def test_asgi_backend_gets_lifespan_state_and_request_id(routes: Path) -> None:
    apps.lifespan_events.clear()
    with gateway_client(routes) as client:
        assert apps.lifespan_events == ["startup"]
        r = client.get("/new/x?q=1", headers={"X-Request-ID": "client-id-1"})
    assert apps.lifespan_events == ["startup", "shutdown"]
    assert r.status_code == 200
    body = r.json()
    assert body["app"] == "echo"
    assert body["path"] == "/new/x"
    assert body["query"] == "q=1"
    assert body["db"] == "ready"  # state set up by the app's own lifespan
    assert body["headers"]["x-request-id"] == "client-id-1"
    assert r.headers["x-request-id"] == "client-id-1"
    assert r.headers["x-gateway-route"] == "echo.new"
    assert r.headers["x-gateway-backend"] == "new"
    assert r.headers["x-echo"] == "1"  # the backend's own headers pass through


def test_invalid_client_request_id_is_replaced(routes: Path) -> None:
    with gateway_client(routes) as client:
        r = client.get("/new/x", headers={"X-Request-ID": "bad id with spaces"})
        legacy = client.get("/legacy/x", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces"
    assert r.json()["headers"]["x-request-id"] == r.headers["x-request-id"]
    # The backend sees only the replacement (a WSGI app would get both, joined by a comma).
    assert legacy.headers["x-gateway-backend"] == "legacy"
    assert legacy.json()["request_id"] == legacy.headers["x-request-id"]


def test_route_headers_can_be_turned_off(routes: Path) -> None:
    with gateway_client(routes, route_headers=False) as client:
        r = client.get("/new/x")
    assert "x-gateway-route" not in r.headers
    assert "x-gateway-backend" not in r.headers
    assert "x-request-id" in r.headers


def test_no_default_gives_json_404(tmp_path: Path) -> None:
    path = write_routes(
        tmp_path,
        "version: 1\n" + TEST_BACKENDS + "routes:\n  - {id: a, path: /a, backend: new}\n",
    )
    with gateway_client(path) as client:
        assert client.get("/a").status_code == 200
        r = client.get("/b")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "no route matches this request and there is no default"}
    assert len(r.headers["x-request-id"]) == 32  # the gateway's own answers carry one too


@pytest.mark.parametrize(
    ("path", "route", "backend"),
    # Raised before answering (an app's own 500 stands: tests/test_app_answers.py).
    [("/raw", "raw", "bare"), ("/raise", "_default", "legacy")],
)
def test_backend_that_raises_gives_json_500_and_gateway_keeps_serving(
    routes: Path, path: str, route: str, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    with gateway_client(routes) as client:
        r = client.get(path)
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert body == {
            "error": "the backend raised an error",
            "kind": "exception",
            "route": route,
            "backend": backend,
            "request_id": r.headers["x-request-id"],
        }
        assert "Traceback" not in r.text
        assert r.headers["x-gateway-backend"] == backend
        assert client.get("/new/still-alive").status_code == 200
    failures = [rec for rec in caplog.records if rec.name == "gateway.dispatch"]
    assert len(failures) == 1
    assert f"route={route} backend={backend}" in failures[0].getMessage()
    assert failures[0].exc_info is None  # one line, no traceback


def test_backend_that_hangs_gives_json_504(routes: Path) -> None:
    with gateway_client(routes) as client:
        r = client.get("/hang")
    assert r.status_code == 504
    assert r.json()["kind"] == "timeout"
    assert r.json()["request_id"] == r.headers["x-request-id"]


def test_backend_5xx_answers_pass_through_untouched(tmp_path: Path) -> None:
    path = write_routes(tmp_path, TABLE.replace("/new/{rest:path}", "/status/{code}"))
    with gateway_client(path) as client:
        r = client.get("/status/503")  # the ASGI app answers 503 itself, and returns
    assert r.status_code == 503
    assert r.text == "status"
    assert r.headers["x-gateway-route"] == "echo.new"
    assert r.headers["x-request-id"]


def test_websocket_to_asgi_backend(routes: Path) -> None:
    with gateway_client(routes) as client, client.websocket_connect("/ws") as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "echo:hi"


def test_websocket_to_wsgi_backend_is_refused(routes: Path) -> None:
    with gateway_client(routes) as client:
        with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/ws-legacy"):
            pass
        assert info.value.code == 1003


@pytest.mark.parametrize(
    "path",
    ["/-/routes", "//-/routes", "/new/../-/routes", "/./-/routes", "/-//routes"],
)
def test_admin_paths_never_reach_a_backend(routes: Path, path: str) -> None:
    with gateway_client(routes) as client:
        r = client.get("http://testserver" + path)  # a full URL: "//x" alone names a host
    assert "x-gateway-backend" not in r.headers
    assert r.status_code == 200
    assert json.loads(r.text)["default"] == "legacy"


def test_backend_whose_startup_fails_keeps_the_gateway_from_starting(tmp_path: Path) -> None:
    path = write_routes(
        tmp_path,
        'version: 1\nbackends:\n  new: {asgi: "tests.apps:failing_startup"}\ndefault: new\n',
    )
    with (
        pytest.raises(RuntimeError, match="backend 'new' failed to start: database unreachable"),
        gateway_client(path),
    ):
        pass


def test_servers_and_frameworks_take_the_gateway_for_an_asgi3_app(routes: Path) -> None:
    """`Gateway.__call__` returns the coroutine that serves the request rather than
    being one: it is marked, so uvicorn's interface detection and Starlette's check
    still see an ASGI 3 app (uvicorn would otherwise call it as an ASGI 2 app)."""
    gateway = Gateway(Settings(config=str(routes)))
    config = uvicorn.Config(app=gateway, interface="auto", proxy_headers=False)
    config.load()
    assert config.interface == "asgi3"
    assert config.loaded_app is gateway
    assert is_async_callable(gateway)


def test_request_ids_are_32_hex_digits_and_never_repeat(routes: Path) -> None:
    """Ids are made ahead in batches: across batches they stay unique and well formed,
    and the backend sees the one the client gets back."""
    with gateway_client(routes) as client:
        answers = [client.get("/new/x") for _ in range(150)]  # over two batches
    ids = [r.headers["x-request-id"] for r in answers]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch("[0-9a-f]{32}", i) for i in ids), ids[:3]
    assert all(r.json()["headers"]["x-request-id"] == i for r, i in zip(answers, ids, strict=True))


def test_a_forked_worker_makes_request_ids_of_its_own() -> None:
    """Ids made ahead in a parent are not reused by a child forked from it (a server
    that forks its workers after importing the app)."""
    from gateway import http as gateway_http

    scope: dict[str, object] = {"headers": []}
    gateway_http.survey(scope)  # the parent has ids made ahead
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            child_ids = [gateway_http.survey({"headers": []}) for _ in range(3)]
            os.write(writer, b",".join(child_ids))
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        child = set(pipe.read().split(b","))
    os.waitpid(pid, 0)
    parent = {gateway_http.survey({"headers": []}) for _ in range(3)}
    assert len(child) == 3 and not child & parent


@pytest.mark.parametrize(
    ("backend", "app"),
    [
        ('asgi: "tests.apps:scope_keys"', apps.scope_keys),
        ('wsgi: "tests.apps:wsgi_scope_keys"', WSGIMiddleware(apps.wsgi_scope_keys)),
    ],
    ids=["asgi", "wsgi"],
)
def test_an_app_gets_the_scope_keys_uvicorn_gives_it(
    tmp_path: Path, backend: str, app: Any
) -> None:
    """The keys the gateway keeps on a request's scope for itself (whether it has a
    body, the socket's own peer when forwarded headers came) never reach the app: an
    ASGI app's scope, a WSGI app's `asgi.scope` (against a2wsgi alone)."""
    text = f"version: 1\nbackends:\n  app: {{{backend}}}\ndefault: app\n"
    path = write_routes(tmp_path, text)
    headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    with (
        ThreadServer(app) as alone,
        ThreadServer(Gateway(Settings(config=str(path)))) as gateway,
    ):
        for server in (alone, gateway):
            keys = httpx.post(server.url + "/x", content=b"body", headers=headers).json()
            assert not [k for k in keys if k.startswith("gateway.")], keys
        assert (
            httpx.post(gateway.url + "/x", content=b"body", headers=headers).json()
            == httpx.post(alone.url + "/x", content=b"body", headers=headers).json()
        )
