"""Behind a load balancer: `--forwarded-allow-ips` through a real gateway on loopback.

The tests' peer is always 127.0.0.1, trusted by default; a gateway trusting
only 10.0.0.1 plays the one that an untrusted client reaches. Each backend kind
(a Flask app, the same app behind ProxyFix, a FastAPI app, a url upstream) says
who it takes the client to be and which scheme it spoke.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from gateway.app import Gateway
from gateway.canary import key_point, route_salt
from gateway.settings import Settings
from tests import apps
from tests.harness import GatewayProcess, ThreadServer, gateway_client, write_routes

TABLE = """\
version: 1
backends:
  flask: {wsgi: "tests.forwarded_apps:flask_app"}
  proxyfix: {wsgi: "tests.forwarded_apps:proxyfix_app"}
  fastapi: {asgi: "tests.forwarded_apps:fastapi_app"}
  remote: {url: "UPSTREAM"}
default: remote
routes:
  - {id: flask, path: /flask/who, backend: flask}
  - {id: proxyfix, path: /proxyfix/who, backend: proxyfix}
  - {id: fastapi, path: /fastapi/who, backend: fastapi}
  - {id: ws, path: /fastapi/ws, backend: fastapi}
  - id: split
    path: /split
    backend: fastapi
    canary: {backend: flask, percent: 50, sticky: client_ip}
"""
IN_PROCESS = ["/flask/who", "/proxyfix/who", "/fastapi/who"]
# What a client sends to claim another address and https.
SPOOFED = {
    "Host": "books.example.org",
    "X-Forwarded-For": "203.0.113.66",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "1",
    "X-Forwarded-Prefix": "/evil",
    "X-Real-IP": "203.0.113.67",
    "Forwarded": "for=203.0.113.68;proto=https",
}


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with ThreadServer(apps.asgi) as upstream:
        folder = tmp_path_factory.mktemp("forwarded")
        yield write_routes(folder, TABLE.replace("UPSTREAM", upstream.url))


def _gateway(routes: Path, **settings: Any) -> ThreadServer:
    return ThreadServer(Gateway(Settings(config=str(routes), **settings)))


@pytest.fixture(scope="module")
def trusting(routes: Path) -> Iterator[str]:
    """A gateway with the default trust: its loopback peer is a trusted proxy."""
    with _gateway(routes) as server:
        yield server.url


@pytest.fixture(scope="module")
def untrusting(routes: Path) -> Iterator[str]:
    """A gateway trusting 10.0.0.1 only: its loopback peer is any client."""
    with _gateway(routes, forwarded_allow_ips="10.0.0.1") as server:
        yield server.url


def _get(url: str, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = httpx.get(url + path, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    seen: dict[str, Any] = r.json()
    return seen


def _client(url: str, forwarded_for: str, path: str = "/fastapi/who") -> str:
    client: str = _get(url, path, {"X-Forwarded-For": forwarded_for})["client"]
    return client


# --- a trusted proxy -------------------------------------------------------------------


@pytest.mark.parametrize("path", IN_PROCESS)
def test_a_trusted_proxy_names_the_client_and_its_scheme_to_in_process_apps(
    trusting: str, path: str
) -> None:
    sent = {
        "Host": "books.example.org",
        "X-Forwarded-For": "198.51.100.2",
        "X-Forwarded-Proto": "https",
    }
    seen = _get(trusting, path, sent)
    assert seen["client"] == "198.51.100.2"
    assert seen["scheme"] == "https"
    assert seen["url"] == f"https://books.example.org{path}"  # url_for(_external=True)
    # The proxy's headers stay, as the app would get them behind that proxy alone.
    assert seen["forwarded"] == {"x-forwarded-for": "198.51.100.2", "x-forwarded-proto": "https"}


def test_a_trusted_proxys_chain_is_extended_for_a_url_upstream(trusting: str) -> None:
    sent = {
        "Host": "books.example.org",
        "X-Forwarded-For": "203.0.113.7, 198.51.100.2",
        "X-Forwarded-Proto": "https",
    }
    headers = _get(trusting, "/anything", sent)["headers"]
    assert headers["x-forwarded-for"] == "203.0.113.7, 198.51.100.2, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == "books.example.org"
    assert headers["x-forwarded-port"] == "443"
    # The gateway's own hop: the peer it got the request from, over plain http.
    assert headers["forwarded"] == "for=127.0.0.1;host=books.example.org;proto=http"


def test_the_client_is_the_right_most_hop_that_is_not_a_trusted_proxy(routes: Path) -> None:
    with _gateway(routes, forwarded_allow_ips="127.0.0.1, 10.0.0.0/8") as gateway:
        url = gateway.url
        # 10.1.2.3 is a trusted inner proxy; what lies left of the client is its own word.
        assert _client(url, "203.0.113.66, 198.51.100.2, 10.1.2.3") == "198.51.100.2"
        assert _client(url, "198.51.100.2:51234, 10.1.2.3") == "198.51.100.2"  # a port
        assert _client(url, "2001:db8::5") == "2001:db8::5"
        assert _client(url, "10.0.0.5, 10.1.2.3") == "10.0.0.5"  # all trusted: the first
        # A hop no address names: the client stays the peer.
        assert _client(url, "198.51.100.2, unknown") == "127.0.0.1"
        # The same header given twice is one chain.
        r = httpx.get(
            url + "/fastapi/who",
            headers=[("X-Forwarded-For", "198.51.100.2"), ("X-Forwarded-For", "10.1.2.3")],
            timeout=10,
        )
        assert r.json()["client"] == "198.51.100.2"


def test_every_peer_is_trusted_with_a_star(routes: Path) -> None:
    with _gateway(routes, forwarded_allow_ips="*") as gateway:
        # Every hop is trusted: the client is the first, as uvicorn takes it.
        assert _client(gateway.url, "203.0.113.7, 198.51.100.2") == "203.0.113.7"


def test_rfc_7239_forwarded_names_the_client_when_there_is_no_x_forwarded_header(
    trusting: str,
) -> None:
    sent = {"Forwarded": 'for=203.0.113.66;proto=http, for="[2001:db8::9]:4711";proto=https'}
    for path in IN_PROCESS:
        seen = _get(trusting, path, sent)
        assert (seen["client"], seen["scheme"]) == ("2001:db8::9", "https"), path
    # With both kinds, X-Forwarded-For and -Proto decide (uvicorn's meaning).
    both = {**sent, "X-Forwarded-For": "198.51.100.2"}
    assert _get(trusting, "/fastapi/who", both)["client"] == "198.51.100.2"
    assert _get(trusting, "/fastapi/who", both)["scheme"] == "http"
    # An unreadable Forwarded header says nothing.
    assert _get(trusting, "/fastapi/who", {"Forwarded": 'for="unterminated'})["client"] == (
        "127.0.0.1"
    )


def test_a_websocket_gets_the_forwarded_client_and_secure_scheme(trusting: str) -> None:
    url = trusting.replace("http://", "ws://") + "/fastapi/ws"
    headers = {"X-Forwarded-For": "198.51.100.2", "X-Forwarded-Proto": "https"}
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"client": "198.51.100.2", "scheme": "wss"}


def test_client_ip_canaries_split_on_the_forwarded_client(trusting: str) -> None:
    salt = route_salt("split")
    sides: dict[str, str] = {}
    for i in range(40):
        address = f"198.51.100.{i + 1}"
        expected = "flask" if key_point(salt, address.encode()) < 0.5 else "fastapi"
        for _ in range(2):  # the same client, the same side every time
            assert _get(trusting, "/split", {"X-Forwarded-For": address})["app"] == expected
        sides[address] = expected
    assert set(sides.values()) == {"flask", "fastapi"}  # not all on the proxy's side


# --- a peer that is not trusted ----------------------------------------------------------


@pytest.mark.parametrize("path", IN_PROCESS)
def test_an_untrusted_peers_forwarded_headers_never_reach_an_app(
    untrusting: str, path: str
) -> None:
    seen = _get(untrusting, path, SPOOFED)
    assert seen["client"] == "127.0.0.1"  # ProxyFix too: it got nothing to believe
    assert seen["scheme"] == "http"
    assert seen["url"] == f"http://books.example.org{path}"
    assert seen["forwarded"] == {}


def test_an_untrusted_peer_starts_a_fresh_chain_for_a_url_upstream(untrusting: str) -> None:
    headers = _get(untrusting, "/anything", SPOOFED)["headers"]
    forwarded = {k: v for k, v in headers.items() if k.startswith("x-forwarded-")}
    assert forwarded == {
        "x-forwarded-for": "127.0.0.1",
        "x-forwarded-proto": "http",
        "x-forwarded-host": "books.example.org",
        "x-forwarded-port": "80",
    }
    assert headers["forwarded"] == "for=127.0.0.1;host=books.example.org;proto=http"
    assert "x-real-ip" not in headers


def test_an_untrusted_peer_is_its_own_canary_key(untrusting: str) -> None:
    side = "flask" if key_point(route_salt("split"), b"127.0.0.1") < 0.5 else "fastapi"
    for i in range(20):
        sent = {"X-Forwarded-For": f"198.51.100.{i + 1}"}
        assert _get(untrusting, "/split", sent)["app"] == side


# --- the admin API judges the real peer ----------------------------------------------


def test_the_admin_api_judges_the_socket_peer_not_the_forwarded_client(
    untrusting: str, tmp_path: Path, routes: Path
) -> None:
    # A loopback peer relaying with forwarded headers is a proxy, believed or not.
    assert httpx.get(untrusting + "/-/routes", timeout=10).status_code == 200
    r = httpx.get(untrusting + "/-/routes", headers={"X-Forwarded-For": "127.0.0.1"}, timeout=10)
    assert r.status_code == 403
    assert "loopback" in r.json()["error"]
    # A remote peer naming a loopback client, trusted with '*': the client it names is
    # what the apps see, and the admin API still refuses the peer.
    with gateway_client(routes, client=("192.0.2.7", 4000), forwarded_allow_ips="*") as client:
        loopback = {"X-Forwarded-For": "127.0.0.1"}
        assert client.get("/fastapi/who", headers=loopback).json()["client"] == "127.0.0.1"
        assert client.get("/-/routes", headers=loopback).status_code == 403
        assert client.get("/-/healthz", headers=loopback).status_code == 200
    # With a token, the admin API answers through a trusted proxy.
    with gateway_client(routes, forwarded_allow_ips="192.0.2.7", admin_token="t0ken") as client:
        sent = {"X-Forwarded-For": "198.51.100.2", "Authorization": "Bearer t0ken"}
        assert client.get("/-/routes", headers=sent).status_code == 200


# --- gateway serve -----------------------------------------------------------------------


def test_serve_takes_the_setting_from_its_flag_and_its_variable(routes: Path) -> None:
    flag = ("--forwarded-allow-ips", "127.0.0.0/8", "--access-log", "--log-format", "json")
    with GatewayProcess(routes, *flag) as gateway:
        assert _client(gateway.url, "203.0.113.7") == "203.0.113.7"
        # uvicorn's access line names the client the proxy forwarded for.
        lines = [json.loads(line) for line in gateway.log().splitlines() if '"client_addr"' in line]
        assert [
            line["client_addr"] for line in lines if "/fastapi/who" in line["request_line"]
        ] == ["203.0.113.7:0"]
    env = {"GATEWAY_FORWARDED_ALLOW_IPS": "10.0.0.1"}
    with GatewayProcess(routes, env=env) as gateway:
        assert _client(gateway.url, "203.0.113.7") == "127.0.0.1"
