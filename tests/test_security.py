"""Security: no request secret in a log line, one normalised path deciding where a
request goes, reserved paths, and who may read and change the admin API."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.app import Gateway
from gateway.paths import canonical
from gateway.routefile.loading import parse_config
from gateway.routefile.model import ConfigError
from gateway.settings import Settings
from gateway.table import KNOWN_MAX, KNOWN_PATH
from tests.harness import (
    BOOKS_ON_NEW,
    GatewayProcess,
    ThreadServer,
    free_port,
    gateway_client,
    write_routes,
)
from tests.raw_upstream import RawUpstream

SECRETS = {
    "authorization": "Bearer s3cr3t-AUTH",
    "cookie": "session=s3cr3t-COOKIE",
    "x-api-key": "s3cr3t-KEY",
}
SECRET_QUERY = "token=s3cr3t-QUERY"


def served_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The gateway's and its server's log lines (not the test client's own)."""
    return [r.getMessage() for r in caplog.records if r.name.startswith(("gateway", "uvicorn"))]


@pytest.fixture(scope="module")
def raw_upstream() -> Iterator[RawUpstream]:
    with RawUpstream() as upstream:
        yield upstream


@pytest.fixture
def remote_gateway(tmp_path: Path, raw_upstream: RawUpstream) -> Iterator[ThreadServer]:
    path = write_routes(
        tmp_path,
        f"""\
version: 1
backends:
  raw: {{url: "{raw_upstream.url}", timeout: 5}}
  impatient: {{url: "{raw_upstream.url}", timeout: 0.5}}
  down: {{url: "http://127.0.0.1:{free_port()}"}}
default: raw
routes:
  - {{id: hang, path: /hang, backend: impatient}}
  - {{id: down, path: /down, backend: down}}
""",
    )
    with ThreadServer(Gateway(Settings(config=str(path)))) as server:
        yield server


# Each failure kind of a remote upstream: (path, status, kind)
FAILURES = [
    ("/down", 502, "connect"),
    ("/hang", 504, "timeout"),
    ("/garbage", 502, "protocol"),
    ("/crlf-header", 502, "protocol"),
    ("/status-999", 502, "protocol"),
    ("/close", 502, "protocol"),
]


@pytest.mark.parametrize(("path", "status", "kind"), FAILURES)
def test_no_secret_of_the_request_reaches_the_log(
    remote_gateway: ThreadServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    status: int,
    kind: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    r = httpx.post(
        f"{remote_gateway.url}{path}?{SECRET_QUERY}",
        headers=SECRETS,
        content=b"body=s3cr3t-BODY",
        timeout=10,
    )
    assert r.status_code == status
    assert r.json()["kind"] == kind
    assert r.json()["request_id"] == r.headers["x-request-id"]
    lines = served_log(caplog)
    failures = [line for line in lines if "backend failed" in line]
    assert failures, lines  # the failure is logged, with its kind
    assert f"kind={kind}" in failures[0]
    assert not [line for line in lines if "s3cr3t" in line]


def test_a_stream_broken_mid_body_logs_no_secret(
    remote_gateway: ThreadServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{remote_gateway.url}/short-body?{SECRET_QUERY}", headers=SECRETS, timeout=10)
    lines = served_log(caplog)
    assert [line for line in lines if "stream" in line], lines
    assert not [line for line in lines if "s3cr3t" in line]


def test_the_access_log_carries_no_query_string(tmp_path: Path) -> None:
    path = write_routes(
        tmp_path,
        """\
version: 1
backends:
  legacy: {wsgi: "tests.apps:wsgi"}
default: legacy
""",
    )
    with GatewayProcess(path, "--access-log") as gateway:
        r = httpx.get(f"{gateway.url}/some/page?{SECRET_QUERY}", timeout=5)
        assert r.status_code == 200
        log = gateway.log()
    assert "/some/page?..." in log
    assert "s3cr3t" not in log


# --- one normalised path decides ---------------------------------------------------

ROUTES_SPLIT = BOOKS_ON_NEW + '  - {id: book, path: "/books/{id}", backend: new}\n'


def raw_get(port: int, target: str, headers: str = "") -> tuple[int, dict[str, str], bytes]:
    """One request with the target exactly as written (HTTP clients normalise theirs)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            f"GET {target} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body


@pytest.fixture(scope="module")
def split_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    path = write_routes(tmp_path_factory.mktemp("split"), ROUTES_SPLIT)
    with ThreadServer(Gateway(Settings(config=str(path)))) as server:
        yield server


@pytest.mark.parametrize(
    ("target", "route"),
    [
        ("/books", "books"),
        ("//books", "books"),
        ("/./books", "books"),
        ("/x/../books", "books"),
        ("/%2Fbooks", "books"),
        ("/%2e/books", "books"),
        ("/books/%2E%2E/books", "books"),
        ("/books//7", "book"),
        ("/books/./7", "book"),
        ("/books%2F7", "book"),
        ("/../../books/7", "book"),
        ("/books/", "_default"),  # a different path: legacy's, as the route file says
    ],
)
def test_every_spelling_lands_where_its_canonical_form_does(
    split_gateway: ThreadServer, target: str, route: str
) -> None:
    for _ in range(2):  # the second time, from what the table remembers of the path
        _, headers, body = raw_get(split_gateway.port, target)
        assert headers["x-gateway-route"] == route
        if route != "_default":
            assert headers["x-gateway-backend"] == "new"
            # The backend sees the path as the client sent it (decoded, as servers do).
            assert json.loads(body)["path"] == urllib.parse.unquote(target)


@pytest.mark.parametrize(
    "target",
    [
        "/-/routes/..%2F..%2Fbooks",
        "/-/routes/../../books",
        "/-/x/%2e%2e/%2e%2e/books",
        "/-%5C..%5Cbooks",
    ],
)
def test_a_path_spelled_under_the_admin_prefix_never_reaches_a_backend(
    split_gateway: ThreadServer, target: str
) -> None:
    for _ in range(2):  # a reserved path is never remembered as a route
        status, headers, body = raw_get(split_gateway.port, target)
        assert status == 404
        assert "x-gateway-backend" not in headers
        assert json.loads(body) == {"error": "no such admin endpoint"}


def test_what_the_front_door_remembers_of_paths_is_bounded(tmp_path: Path) -> None:
    """A table remembers the routes of the paths it served, never the reserved ones,
    and never more than it may hold, whatever paths clients make up."""
    with gateway_client(write_routes(tmp_path, ROUTES_SPLIT)) as client:
        table = client.app.control.table  # type: ignore[attr-defined]
        long = "/books/" + "7" * KNOWN_PATH
        for target in ("/books/7", long, "/-/healthz"):
            assert client.get(target).status_code == 200
        assert client.get("/books/7").headers["x-gateway-route"] == "book"
        assert client.get(long).headers["x-gateway-route"] == "book"
        assert set(table.known) == {("GET", "/books/7")}
        for number in range(KNOWN_MAX):  # one-off paths fill it, and it starts over
            table.remember("GET", f"/made-up/{number}", None)
            assert len(table.known) <= KNOWN_MAX
        assert client.get("/books/7").headers["x-gateway-route"] == "book"
        assert client.get("/made-up/1").headers["x-gateway-route"] == "_default"


@pytest.mark.parametrize(
    "target", ["//-/metrics", "/-/./metrics", "/x/../-/metrics", "/-/%6Detrics"]
)
def test_every_spelling_of_the_metrics_path_is_the_metrics(
    split_gateway: ThreadServer, target: str
) -> None:
    status, headers, body = raw_get(split_gateway.port, target)
    assert status == 200
    assert "x-gateway-backend" not in headers
    assert b"gateway_requests_total" in body


def test_canonical_keeps_the_trailing_slash_and_never_climbs_above_the_root() -> None:
    assert canonical("/books/") == "/books/"
    assert canonical("//books//") == "/books/"
    assert canonical("/books/.") == "/books/"
    assert canonical("/books/..") == "/"
    assert canonical("/../..") == "/"
    assert canonical("/a\\b") == "/a/b"
    assert canonical("/.well-known/x") == "/.well-known/x"


# --- reserved paths in the route file ------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/-/routes", "admin prefix"),
        ("/-/{rest:path}", "admin prefix"),
        ("/-", "admin prefix"),
        ("/-/metrics", "admin prefix"),
    ],
)
def test_a_route_on_a_reserved_path_is_refused(path: str, reason: str) -> None:
    text = ROUTES_SPLIT + f'  - {{id: bad, path: "{path}", backend: new}}\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, "routes.yaml", resolve_imports=False)
    [problem] = info.value.problems
    assert (problem.where.line, problem.where.column) == (9, 21)
    assert reason in problem.message and "could never be served" in problem.message


def test_reserved_paths_follow_the_settings(tmp_path: Path) -> None:
    text = ROUTES_SPLIT + "  - {id: own, path: /stats, backend: new}\n"
    parse_config(text, resolve_imports=False)  # /stats is a path like any other...
    reserved = Settings(metrics_path="/stats").reserved
    with pytest.raises(ConfigError, match="metrics path"):  # ...unless metrics live there
        parse_config(text, resolve_imports=False, reserved=reserved)
    path = write_routes(tmp_path, text)
    check = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", str(path)],
        env={**os.environ, "GATEWAY_METRICS_PATH": "/stats"},
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1
    assert "routes.yaml:9:" in check.stderr and "metrics path" in check.stderr


def test_a_live_reload_to_a_reserved_path_is_refused(tmp_path: Path) -> None:
    path = write_routes(tmp_path, ROUTES_SPLIT)
    with gateway_client(path) as client:
        path.write_text(ROUTES_SPLIT + "  - {id: bad, path: /-/books, backend: new}\n")
        r = client.post("/-/reload")
        assert r.status_code == 422
        assert "admin prefix" in r.json()["problems"][0]
        assert client.get("/-/routes").json()["sha256"] != ""
        assert [x["id"] for x in client.get("/-/routes").json()["routes"]] == ["books", "book"]


# --- who may use the admin API -------------------------------------------------------

ADMIN_READS = ["/-/routes", "/-/shadow", "/-/shadow?route=books", "/-/inventory", "/-/nope"]


@pytest.mark.parametrize("path", ADMIN_READS)
def test_without_token_admin_reads_answer_loopback_only(tmp_path: Path, path: str) -> None:
    routes = write_routes(tmp_path, ROUTES_SPLIT)
    with gateway_client(routes, client=("192.0.2.7", 4000)) as client:
        r = client.get(path)
        assert r.status_code == 403
        assert "loopback" in r.json()["error"]
        assert "books" not in r.text
    with gateway_client(routes) as client:  # loopback
        assert client.get(path).status_code in (200, 404)
        r = client.get(path, headers={"X-Forwarded-For": "192.0.2.7"})
        assert r.status_code == 403  # a loopback proxy relays others' requests


@pytest.mark.parametrize("path", ["/-/healthz", "/-/readyz", "/-/metrics"])
def test_health_probes_and_metrics_stay_open(tmp_path: Path, path: str) -> None:
    routes = write_routes(tmp_path, ROUTES_SPLIT)
    with gateway_client(routes, client=("192.0.2.7", 4000), admin_token="t0ken") as client:
        assert client.get(path).status_code == 200
    with gateway_client(routes, client=("192.0.2.7", 4000)) as client:
        assert client.get(path).status_code == 200


@pytest.mark.parametrize("path", ADMIN_READS)
def test_with_a_token_every_admin_read_needs_it(tmp_path: Path, path: str) -> None:
    routes = write_routes(tmp_path, ROUTES_SPLIT)
    with gateway_client(routes, admin_token="t0ken") as client:  # loopback is not enough
        r = client.get(path)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 403
        ok = client.get(path, headers={"Authorization": "Bearer t0ken"})
        assert ok.status_code in (200, 404)


def test_a_non_loopback_listener_without_token_refuses_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    routes = write_routes(tmp_path, ROUTES_SPLIT)
    with gateway_client(routes, host="0.0.0.0") as client:
        assert client.get("/-/routes").status_code == 200  # from loopback
        r = client.put("/-/routes/books", json={"backend": "legacy"})
        assert r.status_code == 403
        assert "GATEWAY_ADMIN_TOKEN" in r.json()["error"]
        assert client.post("/-/reload").status_code == 403
    assert routes.read_text() == ROUTES_SPLIT
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("non-loopback" in line for line in warnings)


def test_admin_listen_serves_the_admin_api_and_metrics_apart(tmp_path: Path) -> None:
    routes = write_routes(tmp_path, ROUTES_SPLIT)
    with GatewayProcess(routes, admin_listener=True) as gateway:
        for path in ("/-/routes", "/-/healthz", "/-/metrics", "/-//metrics", "/-/nope"):
            r = httpx.get(gateway.url + path, timeout=5)
            assert r.status_code == 404, path
            assert "x-gateway-backend" not in r.headers
        assert httpx.get(gateway.url + "/books", timeout=5).headers["x-gateway-backend"] == "new"
        admin = gateway.admin_url
        assert httpx.get(admin + "/-/routes", timeout=5).json()["default"] == "legacy"
        assert httpx.get(admin + "/-/healthz", timeout=5).status_code == 200
        assert b"gateway_requests_total" in httpx.get(admin + "/-/metrics", timeout=5).content
        r = httpx.get(admin + "/books", timeout=5)  # no traffic on the admin listener
        assert r.status_code == 404
        assert "x-gateway-backend" not in r.headers


def test_admin_listen_must_be_host_and_port() -> None:
    for bad in ("9000", "host:", "host:0", "host:99999", ":9000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            Settings(admin_listen=bad)
    with pytest.raises(ValueError, match="traffic port"):
        Settings(port=9000, admin_listen="127.0.0.1:9000")
    assert Settings(admin_listen="[::1]:9000").admin_address == ("::1", 9000)
