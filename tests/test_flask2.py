"""A Flask 2.x app behind a real `gateway serve`: the gateway works at the user's versions.

Flask 2.x is still common in teams' apps, and the gateway installs no Flask of its own.
The venv's Flask is 3.x; `make install` puts Flask 2.3 and Werkzeug 2.3 in `.venv/flask2`,
and every process here runs with that directory first on PYTHONPATH. Each test checks
that the app really ran on 2.x, so none can pass on Flask 3 by accident.

The app's answers through the gateway are compared with its answers alone (under its
own Werkzeug 2.3 server), after removing only what a proxy may change; the shared
login and `gateway check` / `inventory` read the app through Flask 2's and Werkzeug
2's own interfaces.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT, GatewayProcess, free_port, write_routes
from tests.pinned import TIMEOUT, Pinned, seen

FLASK2 = ROOT / ".venv" / "flask2"

TABLE = """\
version: 1
backends:
  team: {wsgi: "tests.flask2_apps:app"}
  partner: {asgi: "tests.flask2_apps:partner", session_from: team}
default: team
routes:
  - {id: me, path: /me, methods: [GET], backend: partner}
  - {id: rename, path: /rename, methods: [POST], backend: partner}
  - {id: signout, path: /signout, methods: [POST], backend: partner}
"""

PINNED = Pinned(FLASK2, ("flask", "werkzeug"), "Flask 2.x")


def assert_flask2(base_url: str) -> None:
    versions = httpx.get(base_url + "/versions", timeout=TIMEOUT).json()
    assert versions["flask"].startswith("2."), versions
    assert versions["werkzeug"].startswith("2."), versions
    assert versions["flask_dir"] == versions["werkzeug_dir"] == str(FLASK2)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = write_routes(tmp_path_factory.mktemp("flask2"), TABLE)
    with GatewayProcess(config, env=PINNED.env()) as process:
        assert_flask2(process.url)
        yield process.url


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app alone, under its own Werkzeug 2.3 server."""
    port = free_port()
    log = tmp_path_factory.mktemp("alone") / "werkzeug.log"
    code = (
        "from werkzeug.serving import run_simple\n"
        "from tests.flask2_apps import app\n"
        f"run_simple('127.0.0.1', {port}, app, threaded=True)\n"
    )
    with PINNED.alone([sys.executable, "-c", code], log, port) as url:
        assert_flask2(url)
        yield url


def test_the_app_runs_on_flask_2_through_the_gateway(gateway: str) -> None:
    # The fixture checked it; said once more as a test of its own.
    assert_flask2(gateway)
    answer = httpx.get(gateway + "/versions", timeout=TIMEOUT)
    assert answer.headers["x-gateway-backend"] == "team"


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


UPLOAD = bytes(range(256)) * 1000  # 256 kB, sent in 7 kB chunks of unknown total length
HOST = {"host": "shop.example:8443"}

# Each case: the request as a team's client sends it, and what the test asserts beside
# "the same as the app alone".
Case = tuple[Callable[[httpx.Client], httpx.Response], Callable[[httpx.Response], bool]]
CASES: dict[str, Case] = {
    "get-query": (
        lambda c: c.get("/search", params=[("q", "café & co"), ("tag", "a"), ("tag", "b")]),
        lambda r: r.json() == {"q": "café & co", "tags": ["a", "b"]},
    ),
    "post-form": (
        lambda c: c.post("/form", data={"title": "Dune", "tags": ["sf", "classic"]}),
        lambda r: r.json() == {"form": {"title": ["Dune"], "tags": ["sf", "classic"]}},
    ),
    "post-json": (
        lambda c: c.post("/json", json={"title": "Dune", "year": 1965}),
        lambda r: r.status_code == 201 and r.json()["keys"] == ["title", "year"],
    ),
    "chunked-upload": (
        lambda c: c.post("/upload", content=chunks(UPLOAD, 7000)),
        lambda r: (
            r.json()
            == {
                "size": len(UPLOAD),
                "sha256": hashlib.sha256(UPLOAD).hexdigest(),
                "chunked": "chunked",
                "input_terminated": True,
            }
        ),
    ),
    "redirect-external": (
        lambda c: c.get("/go", headers=HOST),
        lambda r: (
            r.status_code == 302
            and r.headers["location"] == "http://shop.example:8443/landing?page=2"
        ),
    ),
    "not-found": (
        lambda c: c.get("/nowhere"),
        lambda r: r.status_code == 404 and "<h1>Not Found</h1>" in r.text,
    ),
    "handler-raises": (
        lambda c: c.get("/boom"),
        lambda r: (
            r.status_code == 500
            and r.headers["content-type"] == "text/html; charset=utf-8"
            and "<h1>Internal Server Error</h1>" in r.text
        ),
    ),
    "head": (
        lambda c: c.head("/search", params={"q": "dune"}),
        lambda r: (
            r.status_code == 200
            and r.content == b""
            and r.headers["content-type"] == "application/json"
            and int(r.headers["content-length"]) > 0
        ),
    ),
    "converter": (
        lambda c: c.get("/items/7"),
        lambda r: r.json() == {"id": 7},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_answer_through_the_gateway_is_the_apps_own(gateway: str, alone: str, case: str) -> None:
    send, expect = CASES[case]
    with httpx.Client(base_url=gateway, timeout=TIMEOUT) as client:
        through = send(client)
    with httpx.Client(base_url=alone, timeout=TIMEOUT) as client:
        direct = send(client)
    assert expect(through), (through.status_code, through.headers, through.text)
    assert through.headers["x-gateway-backend"] == "team"
    assert seen(through) == seen(direct)


def cookie_attributes(set_cookie: str) -> list[str]:
    """A Set-Cookie header less its value (which carries the time it was signed)."""
    name_value, *attributes = set_cookie.split("; ")
    return [name_value.split("=")[0], *attributes]


def test_a_cookie_session_is_the_apps_own(gateway: str, alone: str) -> None:
    with httpx.Client(base_url=gateway, timeout=TIMEOUT) as client:
        login = client.post("/login", data={"user": "alice"})
        assert login.json() == {"user": "alice"}
        assert client.get("/whoami").json() == {"user": "alice"}
        cookie = client.cookies["session"]
    direct = httpx.post(alone + "/login", data={"user": "alice"}, timeout=TIMEOUT)
    assert cookie_attributes(login.headers["set-cookie"]) == cookie_attributes(
        direct.headers["set-cookie"]
    )
    # The cookie set through the gateway is the one the app alone reads.
    assert httpx.get(alone + "/whoami", cookies={"session": cookie}, timeout=TIMEOUT).json() == {
        "user": "alice"
    }
    # A tampered cookie is what Flask 2 makes of it: no session.
    signed, signature = cookie.rsplit(".", 1)
    forged = f"{signed}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    tampered = httpx.get(gateway + "/whoami", cookies={"session": forged}, timeout=TIMEOUT)
    assert tampered.json() == {"user": None}


def test_the_shared_login_reads_and_writes_a_flask_2_session(gateway: str, alone: str) -> None:
    with httpx.Client(base_url=gateway, timeout=TIMEOUT) as client:
        anonymous = client.get("/me")
        assert anonymous.status_code == 401
        assert anonymous.headers["x-gateway-backend"] == "partner"
        client.post("/login", data={"user": "alice"})
        assert client.get("/me").json() == {"user": "alice"}

        # A write by the partner becomes the cookie Flask 2 sets, read by the app alone.
        renamed = client.post("/rename", json={"user": "bob"})
        assert renamed.headers["x-gateway-backend"] == "partner"
        assert cookie_attributes(renamed.headers["set-cookie"]) == ["session", "HttpOnly", "Path=/"]
        cookie = client.cookies["session"]
        assert httpx.get(
            alone + "/whoami", cookies={"session": cookie}, timeout=TIMEOUT
        ).json() == {"user": "bob"}
        assert client.get("/whoami").json() == {"user": "bob"}

        # A sign-out is Flask 2's deletion of the cookie.
        out = client.post("/signout")
        deleted = out.headers["set-cookie"]
        assert deleted.startswith("session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0")
        assert "session" not in client.cookies
        assert client.get("/me").status_code == 401
        assert client.get("/whoami").json() == {"user": None}


def test_check_reads_the_flask_2_url_map(tmp_path: Path) -> None:
    PINNED.check_strict(
        tmp_path,
        TABLE,
        "OK (3 routes, 2 backends, default: team)",
        # A route that sends a Flask 2 endpoint (a converter in its rule) where it is not served.
        '  - {id: items, path: "/items/{item_id}", methods: [GET], backend: partner}\n',
        "warning: unreachable: GET /items/{item_id} is sent by route 'items' to 'partner', "
        "which does not implement it (implemented by: team)",
    )


def test_inventory_lists_the_flask_2_apps_endpoints(tmp_path: Path) -> None:
    done = PINNED.run_cli("inventory", "--json", "--config", str(write_routes(tmp_path, TABLE)))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    team = {(e["method"], e["path"]) for e in doc["endpoints"] if "team" in e["implemented_by"]}
    assert team == {
        ("GET", "/versions"),
        ("GET", "/search"),
        ("POST", "/form"),
        ("POST", "/json"),
        ("POST", "/upload"),
        ("GET", "/go"),
        ("GET", "/landing"),
        ("POST", "/login"),
        ("GET", "/whoami"),
        ("GET", "/boom"),
        ("GET", "/items/{item_id}"),
        ("GET", "/files/{name:path}"),
        ("DELETE", "/files/{name:path}"),
        ("GET", "/static/{filename:path}"),
    }
