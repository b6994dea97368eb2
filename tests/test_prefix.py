"""`strip_prefix`: real Flask and FastAPI apps and a real uvicorn upstream, mounted under
a route's prefix behind a real gateway, build their URLs under it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from flask import Flask, redirect, request, url_for
from websockets.sync.client import connect

from gateway.app import Gateway
from gateway.cli import main
from gateway.routefile.loading import parse_config
from gateway.routefile.model import ConfigError
from gateway.settings import Settings
from gateway.types import Receive, Scope, Send
from tests.harness import ThreadServer, free_port, gateway_client, write_routes
from tests.lifespan import serve_lifespan

flask_app = Flask(__name__)


@flask_app.get("/books/<int:book_id>")
def flask_book(book_id: int) -> dict[str, Any]:
    return {
        "self": url_for("flask_book", book_id=book_id, _external=True),
        "script_root": request.script_root,
        "path": request.path,
        "script_name": request.environ["SCRIPT_NAME"],
        "path_info": request.environ["PATH_INFO"],
    }


@flask_app.get("/old")
def flask_old() -> Any:
    return redirect(url_for("flask_book", book_id=1))


fastapi_app = FastAPI()


@fastapi_app.get("/items/{item_id}", name="item")
async def item(item_id: int, request: Request) -> dict[str, Any]:
    return {
        "self": str(request.url_for("item", item_id=item_id)),
        "root_path": request.scope["root_path"],
        "path": request.url.path,
        "raw_path": request.scope["raw_path"].decode(),
    }


@fastapi_app.get("/old")
async def fastapi_old(request: Request) -> RedirectResponse:
    return RedirectResponse(request.url_for("item", item_id=1))


heard_log: list[dict[str, Any]] = []  # what the upstream received, latest last


async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
    """Says what it received: path, raw path, query and X-Forwarded-Prefix."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    headers = dict(scope["headers"])
    heard = {
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode(),
        "query": scope["query_string"].decode(),
        "prefix": headers.get(b"x-forwarded-prefix", b"").decode() or None,
    }
    heard_log.append(heard)
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(heard)})
        await send({"type": "websocket.close", "code": 1000})
        return
    body = json.dumps(heard).encode()
    start_headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})


TABLE = """\
version: 1
backends:
  legacy: {{wsgi: "tests.test_prefix:flask_app"}}
  new: {{asgi: "tests.test_prefix:fastapi_app"}}
  up: {{url: "{up}"}}
  based: {{url: "{up}/base"}}
  dead: {{url: "http://127.0.0.1:{dead}"}}
default: legacy
routes:
  - {{id: flask, path: "/api/v1/{{rest:path}}", strip_prefix: /api/v1, backend: legacy}}
  - {{id: fastapi, path: "/api/v2/{{rest:path}}", strip_prefix: /api/v2, backend: new}}
  - {{id: svc, path: "/svc/{{rest:path}}", strip_prefix: /svc, backend: up}}
  - {{id: based, path: "/based/{{rest:path}}", strip_prefix: /based, backend: based}}
  - {{id: based.root, path: /based, strip_prefix: /based, backend: based}}
  - {{id: whole, path: "/whole/{{rest:path}}", backend: based}}
  - {{id: fallen, path: "/fb/{{rest:path}}", strip_prefix: /fb, backend: dead, fallback: legacy}}
  - id: shadowed
    path: "/sh/{{rest:path}}"
    strip_prefix: /sh
    backend: new
    shadow: {{backend: based}}
  - id: canaried
    path: "/cn/{{rest:path}}"
    strip_prefix: /cn
    backend: legacy
    canary: {{backend: up, percent: 100}}
"""


@pytest.fixture(scope="module")
def routes_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with ThreadServer(upstream) as up:
        text = TABLE.format(up=up.url, dead=free_port())
        yield write_routes(tmp_path_factory.mktemp("prefix"), text)


@pytest.fixture(scope="module")
def gateway(routes_file: Path) -> Iterator[str]:
    """A gateway whose clients, on loopback, are trusted proxies (the default)."""
    with ThreadServer(Gateway(Settings(config=str(routes_file)))) as server:
        yield server.url


def test_flask_gets_the_prefix_as_script_name_and_builds_urls_under_it(
    gateway: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a2wsgi would let the process's SCRIPT_NAME win over the mount: the route's wins.
    monkeypatch.setenv("SCRIPT_NAME", "/elsewhere")
    answer = httpx.get(gateway + "/api/v1/books/7")
    assert answer.status_code == 200
    assert answer.json() == {
        "self": gateway + "/api/v1/books/7",
        "script_root": "/api/v1",
        "path": "/books/7",
        "script_name": "/api/v1",
        "path_info": "/books/7",
    }
    moved = httpx.get(gateway + "/api/v1/old")
    assert moved.status_code == 302
    assert moved.headers["location"] == "/api/v1/books/1"


def test_fastapi_gets_the_prefix_as_root_path_and_builds_urls_under_it(gateway: str) -> None:
    answer = httpx.get(gateway + "/api/v2/items/3")
    assert answer.status_code == 200
    assert answer.json() == {
        "self": gateway + "/api/v2/items/3",
        "root_path": "/api/v2",
        "path": "/api/v2/items/3",
        "raw_path": "/api/v2/items/3",
    }
    moved = httpx.get(gateway + "/api/v2/old")
    assert moved.status_code == 307
    assert moved.headers["location"] == gateway + "/api/v2/items/1"


def test_a_url_backend_gets_the_rest_and_x_forwarded_prefix(gateway: str) -> None:
    answer = httpx.get(gateway + "/svc/items/5?q=1")
    assert answer.json() == {
        "path": "/items/5",
        "raw_path": "/items/5",
        "query": "q=1",
        "prefix": "/svc",
    }
    # A trusted proxy stripped a prefix of its own before: the gateway's comes after it.
    heard = httpx.get(gateway + "/svc/items/5", headers={"X-Forwarded-Prefix": "/shop/"}).json()
    assert heard["prefix"] == "/shop/svc"


def test_an_untrusted_clients_x_forwarded_prefix_is_dropped(routes_file: Path) -> None:
    settings = Settings(config=str(routes_file), forwarded_allow_ips="10.0.0.1")
    with ThreadServer(Gateway(settings)) as server:
        spoofed = {"X-Forwarded-Prefix": "/evil"}
        heard = httpx.get(server.url + "/svc/items/5", headers=spoofed).json()
        assert heard["prefix"] == "/svc"
        # Without a prefix to state, the upstream hears none at all.
        assert httpx.get(server.url + "/whole/x", headers=spoofed).json()["prefix"] is None


def test_a_url_backend_with_a_base_path_gets_the_base_then_the_rest(gateway: str) -> None:
    heard = httpx.get(gateway + "/based/items/a%2Fb").json()
    assert heard["raw_path"] == "/base/items/a%2Fb"  # the client's encoding kept
    assert heard["prefix"] == "/based"
    # The mount point itself: the base path alone.
    assert httpx.get(gateway + "/based").json()["raw_path"] == "/base"
    # Without a prefix, the whole path follows the base path.
    heard = httpx.get(gateway + "/whole/items").json()
    assert (heard["raw_path"], heard["prefix"]) == ("/base/whole/items", None)


def test_every_side_of_a_route_is_mounted_under_its_prefix(gateway: str) -> None:
    # The fallback, after the primary could not be reached.
    fallen = httpx.get(gateway + "/fb/books/4")
    assert fallen.headers["x-gateway-backend"] == "legacy"
    assert fallen.json()["self"] == gateway + "/fb/books/4"
    assert (fallen.json()["script_name"], fallen.json()["path_info"]) == ("/fb", "/books/4")
    # The canary.
    heard = httpx.get(gateway + "/cn/items/2").json()
    assert (heard["raw_path"], heard["prefix"]) == ("/items/2", "/cn")
    # The shadow copy, sent in the background.
    assert httpx.get(gateway + "/sh/items/9").json()["root_path"] == "/sh"
    deadline = time.monotonic() + 10
    while {"raw_path": "/base/items/9", "prefix": "/sh"}.items() - _last_heard().items():
        assert time.monotonic() < deadline, f"no shadow copy came: {heard_log[-3:]}"
        time.sleep(0.05)


def _last_heard() -> dict[str, Any]:
    return heard_log[-1] if heard_log else {}


def test_an_oddly_spelled_path_is_split_where_the_route_matched_it(gateway: str) -> None:
    # Dot segments cannot climb out of the mount, above the upstream's base path.
    heard = httpx.get(gateway + "/based/x/%2e%2e/y").json()
    assert heard["raw_path"] == "/base/y"
    # An encoded slash inside the prefix, and an empty segment.
    assert httpx.get(gateway + "/svc%2Fitems").json()["raw_path"] == "/items"
    flask = httpx.get(gateway + "/api//v1/books/7").json()
    assert (flask["script_name"], flask["path_info"]) == ("/api/v1", "/books/7")


def test_a_websocket_to_a_url_backend_gets_the_rest_and_the_prefix(gateway: str) -> None:
    with connect(gateway.replace("http", "ws") + "/svc/live?x=1") as ws:
        heard = json.loads(ws.recv(timeout=10))
    assert heard == {"path": "/live", "raw_path": "/live", "query": "x=1", "prefix": "/svc"}


ROUTE = """\
version: 1
backends:
  legacy: {{wsgi: "tests.apps:wsgi"}}
routes:
  - id: r
    path: "{path}"
    strip_prefix: {prefix}
    backend: legacy
"""


@pytest.mark.parametrize(
    ("path", "prefix", "message"),
    [
        ("/api/v2/books", "/api/v2/", "must not end with '/'; write '/api/v2'"),
        ("/api/v2/books", "api/v2", "must start with '/'"),
        ("/books", "/", "must start with '/' and name at least one segment"),
        ("/api/v2/books", "/api//v2", "has an empty, '.' or '..' segment"),
        ("/api/v2/books", "/api/../v2", "has an empty, '.' or '..' segment"),
        ("/api/v2/books", "'/api/v%32'", "segment 'v%32' has a character other than"),
        ("/api/v1/books", "/api/v2", "path '/api/v1/books' is not under 'strip_prefix' '/api/v2'"),
        ("/api/v2x/books", "/api/v2", "is not under 'strip_prefix' '/api/v2'"),
        ("/api/{version}/books", "/api/v2", "is not under"),
        ("/api", "/api/v2", "is not under"),
        ("/api/v2/books", "[a]", "'strip_prefix' (a path such as /api/v2) must be a non-empty"),
    ],
)
def test_check_refuses_a_bad_prefix_with_its_position(path: str, prefix: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(ROUTE.format(path=path, prefix=prefix), "routes.yaml")
    (problem,) = info.value.problems
    assert str(problem).startswith("routes.yaml:7:19: route 'r': ")
    assert message in str(problem)


def test_a_route_on_the_prefix_itself_or_under_it_is_valid() -> None:
    for path in ("/api/v2", "/api/v2/", "/api/v2/{rest:path}", "/api/v2/books/{id}"):
        config = parse_config(ROUTE.format(path=path, prefix="/api/v2"), "routes.yaml")
        assert config.route("r").strip_prefix == "/api/v2"


def test_listings_show_the_prefix_and_a_flip_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = ROUTE.format(path="/api/v2/books", prefix="/api/v2").replace(
        "backends:\n", 'backends:\n  new: {asgi: "tests.apps:asgi"}\n'
    )
    path = write_routes(tmp_path, text)
    assert main(["routes", str(path)]) == 0
    listing = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert listing[1] == ["r", "*", "/api/v2/books", "(strips", "/api/v2)", "legacy"]
    assert main(["routes", str(path), "--json"]) == 0
    (route,) = json.loads(capsys.readouterr().out)["routes"]
    assert route["strip_prefix"] == "/api/v2"
    # A flip through the admin API edits the file and keeps the prefix.
    with gateway_client(path) as client:
        answer = client.put("/-/routes/r", json={"backend": "new"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["route"]["strip_prefix"] == "/api/v2"
        (route,) = client.get("/-/routes").json()["routes"]
        assert (route["backend"], route["strip_prefix"]) == ("new", "/api/v2")
    assert "strip_prefix: /api/v2" in path.read_text()
    assert parse_config(path.read_bytes(), "routes.yaml").route("r").backend == "new"


INVENTORY = """\
version: 1
backends:
  legacy: {wsgi: "tests.test_prefix:flask_app"}
  new: {asgi: "tests.test_prefix:fastapi_app"}
default: legacy
routes:
  - {id: legacy.api, path: "/api/v1/{rest:path}", strip_prefix: /api/v1, backend: legacy}
  - {id: items, path: "/api/v1/items/{id}", strip_prefix: /api/v1, backend: new}
  - {id: old, path: /api/v1/old, strip_prefix: /api/v1, backend: new, fallback: legacy}
"""


def test_inventory_joins_the_apps_at_the_paths_clients_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_routes(tmp_path, INVENTORY)
    capsys.readouterr()
    assert main(["inventory", "--config", str(path), "--json"]) == 0
    endpoints = {
        (e["method"], e["path"]): (e["status"], e["route"], e["backend"], e["implemented_by"])
        for e in json.loads(capsys.readouterr().out)["endpoints"]
    }
    # Both apps serve /old; under the prefix they are one endpoint, moved to the new side.
    assert endpoints[("GET", "/api/v1/old")] == ("migrated", "old", "new", ["legacy", "new"])
    assert endpoints[("GET", "/api/v1/items/{item_id}")] == ("new-only", "items", "new", ["new"])
    # The legacy app is reached under the prefix and, as the default, at its own paths.
    api_book = ("legacy-only", "legacy.api", "legacy", ["legacy"])
    assert endpoints[("GET", "/api/v1/books/{book_id}")] == api_book
    own_book = ("legacy-only", "_default", "legacy", ["legacy"])
    assert endpoints[("GET", "/books/{book_id}")] == own_book
    # No route mounts the new app at its own paths: nothing of it is listed there.
    assert ("GET", "/items/{item_id}") not in endpoints
    assert endpoints[("GET", "/api/v1/openapi.json")][1:3] == ("legacy.api", "legacy")
    # `check` judges the claims at the same paths: the catch-all sends the new app's
    # documentation to the legacy app, and nothing else is misrouted.
    assert main(["check", str(path)]) == 0
    warned = re.findall(
        r"unreachable: GET (\S+) is sent by route 'legacy.api'", capsys.readouterr().err
    )
    assert sorted(warned) == [
        "/api/v1/docs",
        "/api/v1/docs/oauth2-redirect",
        "/api/v1/openapi.json",
        "/api/v1/redoc",
    ]
