"""A FastAPI 0.100 service behind a real `gateway serve`, the gateway on Starlette 0.27.

The gateway imports Starlette itself (its admin API, console, inventory), and installs
beside a team's FastAPI, which pins its own Starlette: the gateway must run on that one.
pyproject.toml's lower bound is Starlette 0.27, FastAPI 0.100's (the first FastAPI on
Pydantic 2). `make install` puts exactly those in `.venv/fastapi-old`, and every process
here runs with that directory first on PYTHONPATH. Each test checks that the app and the
gateway really ran on them, so none can pass on the venv's newer ones by accident.

The app's answers through the gateway are compared with its answers under uvicorn alone,
after removing only what a proxy may change.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from websockets.sync.client import connect

from tests.harness import ROOT, GatewayProcess, free_port, write_routes
from tests.pinned import TIMEOUT, Pinned, seen

OLD = ROOT / ".venv" / "fastapi-old"
FASTAPI, STARLETTE = "0.100.", "0.27."

TABLE = """\
version: 1
backends:
  legacy: {wsgi: "tests.fastapi_old_apps:legacy"}
  service: {asgi: "tests.fastapi_old_apps:app", session_from: legacy}
default: service
routes:
  - {id: books, path: /books/, methods: [GET], backend: legacy}
  - {id: login, path: /login, methods: [POST], backend: legacy}
  - {id: whoami, path: /whoami, methods: [GET], backend: legacy}
"""

PINNED = Pinned(OLD, ("fastapi", "starlette"), "the old FastAPI and Starlette")


def assert_old(base_url: str) -> None:
    versions = httpx.get(base_url + "/versions", timeout=TIMEOUT).json()
    assert versions["fastapi"].startswith(FASTAPI), versions
    assert versions["starlette"].startswith(STARLETTE), versions
    assert versions["fastapi_dir"] == versions["starlette_dir"] == str(OLD)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = write_routes(tmp_path_factory.mktemp("fastapi-old"), TABLE)
    with GatewayProcess(config, env=PINNED.env()) as process:
        # The app runs in the gateway's process: the Starlette it imported is the gateway's.
        assert_old(process.url)
        yield process


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app alone, under uvicorn (the venv's: it imports no Starlette)."""
    port = free_port()
    log = tmp_path_factory.mktemp("alone") / "uvicorn.log"
    command = [sys.executable, "-m", "uvicorn", "tests.fastapi_old_apps:app", "--port", str(port)]
    with PINNED.alone(command, log, port) as url:
        assert_old(url)
        yield url


def test_the_gateway_and_the_app_run_on_the_old_starlette(gateway: GatewayProcess) -> None:
    # The fixture checked it; said once more as a test of its own.
    assert_old(gateway.url)
    assert httpx.get(gateway.url + "/versions", timeout=TIMEOUT).headers["x-gateway-backend"] == (
        "service"
    )


def test_the_declared_lower_bound_is_the_tested_starlette() -> None:
    # A bound moved without the test following it would claim an untested Starlette.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(d) for d in project["dependencies"]]
    (starlette,) = [r for r in declared if r.name == "starlette"]
    (bound,) = [s.version for s in starlette.specifier if s.operator == ">="]
    tested = [p.name.removesuffix(".dist-info").split("-")[1] for p in OLD.glob("starlette-*")]
    assert tested, f"no Starlette in {OLD}: run `make install`"
    assert Version(bound) == Version(tested[0]), (str(starlette), tested)


HOST = {"host": "shop.example:8443"}
Case = tuple[Callable[[httpx.Client], httpx.Response], Callable[[httpx.Response], bool]]
CASES: dict[str, Case] = {
    # A router's path parameter, the lifespan's state, and url_for on the client's Host.
    "path-state-url-for": (
        lambda c: c.get("/books/7", headers=HOST),
        lambda r: (
            r.json()
            == {
                "id": 7,
                "greeting": "hello from the lifespan",
                "self": "http://shop.example:8443/books/7",
            }
        ),
    ),
    "invalid-parameter": (
        lambda c: c.get("/books/seven"),
        lambda r: r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "book_id"],
    ),
    "head": (
        lambda c: c.head("/books/7/cover"),
        lambda r: r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "23",
    ),
    "head-on-get-only": (  # FastAPI's GET routes do not answer HEAD: 405, as alone
        lambda c: c.head("/versions"),
        lambda r: r.status_code == 405 and r.headers["allow"] == "GET",
    ),
    "app-500": (
        lambda c: c.get("/boom"),
        lambda r: (
            r.status_code == 500
            and r.headers["content-type"] == "text/plain; charset=utf-8"
            and r.text == "Internal Server Error"
        ),
    ),
    "not-found": (
        lambda c: c.get("/nowhere"),
        lambda r: r.status_code == 404 and r.json() == {"detail": "Not Found"},
    ),
    "redirect-slash": (  # the router's own redirect to /books/7/cover/ -> /books/7/cover
        lambda c: c.get("/books/7/cover/", headers=HOST),
        lambda r: (
            r.status_code == 307
            and r.headers["location"] == "http://shop.example:8443/books/7/cover"
        ),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_answer_through_the_gateway_is_the_apps_own(
    gateway: GatewayProcess, alone: str, case: str
) -> None:
    send, expect = CASES[case]
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT) as client:
        through = send(client)
    with httpx.Client(base_url=alone, timeout=TIMEOUT) as client:
        direct = send(client)
    assert expect(through), (through.status_code, through.headers, through.text)
    assert through.headers["x-gateway-backend"] == "service"
    assert seen(through) == seen(direct)


def test_a_websocket_is_the_apps_own(gateway: GatewayProcess, alone: str) -> None:
    for base in (gateway.url, alone):
        with connect(base.replace("http", "ws", 1) + "/ws/lobby", open_timeout=TIMEOUT) as ws:
            ws.send("hi")
            assert ws.recv(timeout=TIMEOUT) == "lobby: hi (old-fastapi)"
    metrics = httpx.get(gateway.url + "/-/metrics", timeout=TIMEOUT).text
    counted = (
        'gateway_requests_total{backend="service",code="101",method="WEBSOCKET",route="_default"}'
    )
    assert f"{counted} 1.0" in metrics.splitlines(), metrics


def test_the_shared_login_reads_and_ends_the_flask_session(gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT) as client:
        anonymous = client.get("/me")  # user_required's 401, in FastAPI's own shape
        assert (anonymous.status_code, anonymous.json()) == (401, {"detail": "Unauthorized"})
        assert client.post("/login", data={"user": "alice"}).json() == {"user": "alice"}
        me = client.get("/me")
        assert me.json() == {"user": "alice"}
        assert me.headers["x-gateway-backend"] == "service"

        out = client.post("/signout")
        assert out.json() == {"user": None}
        assert out.headers["set-cookie"].startswith("session=; Expires=Thu, 01 Jan 1970")
        assert client.get("/me").status_code == 401
        assert client.get("/whoami").json() == {"user": None}


def test_the_admin_api_and_console_run_on_the_old_starlette(gateway: GatewayProcess) -> None:
    admin = gateway.url + "/-/"
    table = httpx.get(admin + "routes", timeout=TIMEOUT).json()
    assert (table["default"], table["last_error"]) == ("service", None)
    assert [(r["id"], r["backend"]) for r in table["routes"]] == [
        ("books", "legacy"),
        ("login", "legacy"),
        ("whoami", "legacy"),
    ]
    assert httpx.get(gateway.url + "/books/", timeout=TIMEOUT).json()["side"] == "legacy"

    # A flip through the admin API: the route's next request is the service's.
    flipped = httpx.put(admin + "routes/books", json={"backend": "service"}, timeout=TIMEOUT)
    assert flipped.status_code == 200, flipped.text
    moved = httpx.get(gateway.url + "/books/", timeout=TIMEOUT)
    assert moved.json() == {"side": "service", "books": [1, 2]}
    assert moved.headers["x-gateway-route"] == "books"
    assert "backend: service" in gateway.config.read_text()  # persisted to the source

    # The admin API's own errors, through its exception handlers: JSON, every one.
    unknown = httpx.put(admin + "routes/books", json={"backend": "nope"}, timeout=TIMEOUT)
    assert unknown.status_code == 422 and "nope" in unknown.json()["error"], unknown.text
    missing = httpx.get(admin + "no-such-thing", timeout=TIMEOUT)
    assert (missing.status_code, missing.json()) == (404, {"error": "no such admin endpoint"})
    wrong_method = httpx.delete(admin + "routes", timeout=TIMEOUT)
    assert wrong_method.status_code == 405
    assert set(wrong_method.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert wrong_method.json() == {"error": "method DELETE not allowed on this path"}

    # The console's page and an asset it names.
    page = httpx.get(admin + "console", timeout=TIMEOUT)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    script = httpx.get(admin + "console/console.js", timeout=TIMEOUT)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert len(script.content) > 1000
    assert httpx.get(admin + "console/figures", timeout=TIMEOUT).json()["at"]

    metrics = httpx.get(admin + "metrics", timeout=TIMEOUT).text.splitlines()
    assert (
        'gateway_requests_total{backend="service",code="200",method="GET",route="books"} 1.0'
        in (metrics)
    )


def test_check_reads_the_old_fastapi_routes(tmp_path: Path) -> None:
    PINNED.check_strict(
        tmp_path,
        TABLE,
        "OK (3 routes, 2 backends, default: service)",
        # A route that sends the service's WebSocket where it is not served.
        '  - {id: chat, path: "/ws/{room}", backend: legacy}\n',
        "warning: unreachable: WEBSOCKET /ws/{room} is sent by route 'chat' to 'legacy', "
        "which does not implement it (implemented by: service)",
    )


def test_inventory_lists_the_old_fastapi_apps_endpoints(tmp_path: Path) -> None:
    done = PINNED.run_cli("inventory", "--json", "--config", str(write_routes(tmp_path, TABLE)))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    service = {
        (e["method"], e["path"]) for e in doc["endpoints"] if "service" in e["implemented_by"]
    }
    assert service == {
        ("GET", "/versions"),
        ("GET", "/books/"),
        ("GET", "/books/{book_id}"),
        ("GET", "/books/{book_id}/cover"),  # and HEAD, folded into GET
        ("GET", "/boom"),
        ("WEBSOCKET", "/ws/{room}"),
        ("GET", "/me"),
        ("POST", "/signout"),
        # FastAPI's own pages
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
    }
