"""Shared login with a Flask-Login app of its own session interface (another cookie name,
another signing salt), and across the migration policies: fallback and shadow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from flask import Flask
from starlette.testclient import TestClient

from tests.harness import gateway_client, write_routes
from tests.login_apps import SaltedSessions

BACKENDS = """\
version: 1
backends:
  legacy: {wsgi: "tests.login_apps:flask_login_app"}
  new: {asgi: "tests.login_apps:partner", session_from: legacy}
  plain: {asgi: "tests.login_apps:starlette_partner", session_from: legacy}
default: legacy
"""


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    table = (
        BACKENDS
        + """\
routes:
  - {id: me, path: /me, backend: new}
  - {id: login-as, path: "/login-as/{name}", backend: new}
  - {id: logout, path: /logout, backend: new}
  - {id: keys, path: /state-keys, backend: new}
  - {id: ws, path: /ws-me, backend: new}
  - {id: plain, path: /plain-me, backend: plain}
"""
    )
    with gateway_client(write_routes(tmp_path, table)) as client:
        yield client


def test_the_new_side_sees_a_flask_login_user(client: TestClient) -> None:
    assert client.get("/me").status_code == 401
    assert "legacy_session" not in client.get("/state-keys").json()  # absent when anonymous
    assert client.post("/login/alice").status_code == 200
    assert "login_sid" in client.cookies  # the app's own cookie name
    me = client.get("/me")
    assert (me.status_code, me.json(), me.headers["x-gateway-backend"]) == (
        200,
        {"user": "alice"},
        "new",
    )
    assert "legacy_session" in client.get("/state-keys").json()


def test_a_plain_starlette_app_sees_the_user_too(client: TestClient) -> None:
    anonymous = client.get("/plain-me")
    assert (anonymous.status_code, anonymous.text) == (401, "Unauthorized")  # Starlette's own
    client.post("/login/bob")
    assert client.get("/plain-me").json() == {"user": "bob"}


def _signed(data: dict[str, Any], key: str = "flask-login-test-key", age: float = 0) -> str:
    app = Flask("signer")
    app.secret_key = key
    serializer = SaltedSessions().get_signing_serializer(app)
    assert serializer is not None
    with mock.patch("itsdangerous.timed.time.time", return_value=time.time() - age):
        value: str = serializer.dumps(data)
    return value


ALICE = {"_user_id": "alice", "_fresh": True}


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param(
            ".".join([_signed({"_user_id": "bob"}).split(".")[0], *_signed(ALICE).split(".")[1:]]),
            id="tampered",
        ),
        pytest.param(_signed(ALICE, key="another key"), id="other-key"),
        pytest.param(_signed(ALICE, age=32 * 86400), id="expired"),  # Flask's 31 days
    ],
)
def test_a_cookie_flask_rejects_is_anonymous_on_both_sides(client: TestClient, cookie: str) -> None:
    assert client.get("/me", headers={"cookie": f"login_sid={_signed(ALICE)}"}).json() == {
        "user": "alice"
    }  # the control: a cookie the app signed itself
    headers = {"cookie": f"login_sid={cookie}"}
    assert client.get("/me", headers=headers).status_code == 401
    assert client.get("/legacy-me", headers=headers).status_code == 401


def test_a_websocket_sees_the_session_too(client: TestClient) -> None:
    with client.websocket_connect("/ws-me") as ws:
        assert ws.receive_json() == {"user": None}
    client.post("/login/bob")
    with client.websocket_connect("/ws-me") as ws:
        assert ws.receive_json() == {"user": "bob"}


def test_logging_out_with_flask_login_is_seen_by_the_new_side(client: TestClient) -> None:
    client.post("/login/alice")
    assert client.post("/legacy-logout").status_code == 204
    assert client.get("/me").status_code == 401


def test_logging_out_on_the_new_side_logs_flask_login_out(client: TestClient) -> None:
    client.post("/login/alice")
    response = client.post("/logout")
    assert response.headers["set-cookie"].startswith("login_sid=; Expires=Thu, 01 Jan 1970")
    assert client.get("/legacy-me").status_code == 401


def test_a_session_written_by_the_new_side_is_set_as_flask_sets_it(client: TestClient) -> None:
    flask_set = client.post("/login/alice").headers["set-cookie"]
    client.cookies.clear()
    response = client.post("/login-as/bob")
    assert response.status_code == 200
    ours = response.headers["set-cookie"]
    # Same cookie name and attributes (HttpOnly, Path, SameSite) as Flask-Login's login.
    assert ours.split("=", 1)[0] == flask_set.split("=", 1)[0] == "login_sid"
    assert ours.split(";", 1)[1] == flask_set.split(";", 1)[1]
    legacy = client.get("/legacy-me")
    assert (legacy.status_code, legacy.json()) == (200, {"user": "bob"})
    assert client.get("/me").json() == {"user": "bob"}


def test_a_cookie_under_flask_s_default_salt_is_anonymous(client: TestClient) -> None:
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    from tests.login_apps import flask_login_app

    # Right key and cookie name, Flask's default salt: only a re-implementation reads it.
    default = SecureCookieSessionInterface().get_signing_serializer(flask_login_app)
    assert default is not None and isinstance(flask_login_app, Flask)
    cookie = default.dumps({"_user_id": "alice", "_fresh": True})
    headers = {"cookie": f"login_sid={cookie}"}
    assert client.get("/me", headers=headers).status_code == 401
    assert client.get("/legacy-me", headers=headers).status_code == 401


def test_a_fallback_replay_carries_the_same_session(tmp_path: Path) -> None:
    table = (
        BACKENDS
        + """\
routes:
  - {id: me, path: /me, methods: [GET], backend: new, fallback: legacy}
"""
    )
    with gateway_client(write_routes(tmp_path, table)) as client:
        client.post("/login/alice")
        response = client.get("/me", headers={"x-fail": "1"})  # the new side fails
        assert response.headers["x-gateway-backend"] == "legacy"
        assert (response.status_code, response.json()) == (200, {"user": "alice"})


def test_a_shadow_copy_carries_the_same_session(tmp_path: Path) -> None:
    table = (
        BACKENDS
        + """\
routes:
  - {id: me, path: /me, methods: [GET], backend: legacy, shadow: {backend: new}}
"""
    )
    with gateway_client(write_routes(tmp_path, table)) as client:
        client.post("/login/alice")
        cookie = client.cookies["login_sid"]
        assert client.get("/me").json() == {"user": "alice"}
        deadline = time.monotonic() + 10
        while True:
            report = client.get("/-/shadow").json()
            counts = report["routes"].get("me", {}).get("counts", {})
            if sum(counts.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert counts["match"] == 1, report  # without the session the new side says 401
        assert cookie not in str(report)
