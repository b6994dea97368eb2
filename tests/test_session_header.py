"""Shared login toward a remote (`url:`) backend: the signed header, both ways.

The upstream is a real uvicorn server on loopback that verifies the header with
`gateway.session_header` (standard library only), as a receiving app would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gateway import session_header
from gateway.session_header import BadSessionHeader, sign, verify
from tests.harness import ThreadServer, gateway_client, write_routes

KEY = "a key the gateway shares with the upstream"


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadServer]:
    monkeypatch.setenv(session_header.KEY_ENV, KEY)
    from tests.login_apps import upstream as app

    with ThreadServer(app) as server:
        yield server


def table(url: str, header: str = "") -> str:
    extra = f", session_header: {header}" if header else ""
    return f"""\
version: 1
backends:
  legacy: {{wsgi: "legacy_flask.app:app"}}
  remote: {{url: "{url}", session_from: legacy{extra}}}
default: legacy
routes:
  - {{id: remote, path: "/remote/{{rest:path}}", backend: remote}}
"""


@pytest.fixture
def client(tmp_path: Path, upstream: ThreadServer) -> Iterator[TestClient]:
    with gateway_client(write_routes(tmp_path, table(upstream.url))) as client:
        yield client


def log_in(client: TestClient) -> None:
    response = client.post("/ui/login", data={"username": "alice", "password": "wonderland"})
    assert response.status_code == 200


def test_the_upstream_gets_the_session_signed(client: TestClient) -> None:
    anonymous = client.get("/remote/echo").json()
    assert anonymous == {"received": 1, "verified": True, "session": None}
    log_in(client)
    echo = client.get("/remote/echo").json()
    assert echo["verified"] is True
    assert echo["session"]["user"] == "alice"


@pytest.mark.parametrize(
    "sent",
    [
        "not a signed value",
        sign({"user": "mallory"}, b"some other key"),
        sign({"user": "mallory"}, KEY.encode()),  # even one signed with the key: a replay
    ],
)
def test_a_client_sent_session_header_never_reaches_the_upstream(
    client: TestClient, sent: str
) -> None:
    for name in ("X-Legacy-Session", "x-legacy-session"):
        echo = client.get("/remote/echo", headers={name: sent}).json()
        assert echo == {"received": 1, "verified": True, "session": None}


def test_the_header_name_is_configurable(tmp_path: Path, upstream: ThreadServer) -> None:
    path = write_routes(tmp_path, table(upstream.url, "X-Shop-Login"))
    with gateway_client(path) as client:
        # The upstream looks for the default name: it now finds only what the client sent.
        echo = client.get("/remote/echo", headers={"x-shop-login": "forged"}).json()
        assert echo["received"] == 0


def test_the_upstream_logs_in_and_out_through_a_response_header(client: TestClient) -> None:
    response = client.post("/remote/login-as/bob")
    assert response.status_code == 200
    assert "x-legacy-session" not in response.headers
    assert response.headers["set-cookie"].startswith("session=")
    assert response.headers["set-cookie"].endswith("; HttpOnly; Path=/")
    assert '<span id="user">bob</span>' in client.get("/ui/").text  # the legacy app agrees
    response = client.post("/remote/logout")
    assert "x-legacy-session" not in response.headers
    assert response.headers["set-cookie"].startswith("session=; Expires=Thu, 01 Jan 1970")
    assert '<span id="user">' not in client.get("/ui/").text


def test_a_response_header_with_a_bad_signature_is_dropped(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    log_in(client)
    response = client.post("/remote/forged")
    assert response.status_code == 200
    assert "x-legacy-session" not in response.headers
    assert "set-cookie" not in response.headers
    assert '<span id="user">alice</span>' in client.get("/ui/").text
    assert "session write ignored: backend=remote" in caplog.text
    assert "mallory" not in caplog.text


def test_a_url_backend_sharing_a_session_needs_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(session_header.KEY_ENV, raising=False)
    path = write_routes(tmp_path, table("http://127.0.0.1:9"))
    with pytest.raises(RuntimeError, match="GATEWAY_SESSION_KEY"), gateway_client(path):
        pass
    assert "set GATEWAY_SESSION_KEY" in caplog.text


def test_verify_rejects_what_the_key_holder_did_not_sign() -> None:
    key = b"k"
    good = sign({"user": "alice"}, key)
    assert verify(good, key) == {"user": "alice"}
    assert verify(sign(None, key), key) is None
    payload, mac = good.split(".")
    other_payload = sign({"user": "bob"}, key).split(".")[0]
    for bad in (
        f"{other_payload}.{mac}",
        good + "x",
        sign({"user": "alice"}, b"other"),
        payload,
        "é.é",
        "",
    ):
        with pytest.raises(BadSessionHeader):
            verify(bad, key)
    with pytest.raises(BadSessionHeader, match="expired"):
        verify(sign({"user": "alice"}, key, now=time.time() - 120), key)
    with pytest.raises(BadSessionHeader, match="JSON object"):
        verify(sign([1], key), key)  # type: ignore[arg-type]


def test_the_session_is_not_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log_in(client)
    cookie = client.cookies["session"]
    client.get("/remote/echo")
    assert cookie not in caplog.text
