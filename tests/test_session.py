"""Shared login with the demo pair: the legacy app's session, seen and changed by the new app.

Requests go through an in-process gateway; the legacy app's own pages say whether it
sees a user (its nav shows the name), so "the legacy app agrees" is its own answer.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import httpx
import pytest
from flask import Flask
from starlette.testclient import TestClient

from gateway.app import Gateway
from gateway.settings import Settings
from legacy_flask.app import app as legacy_app
from tests.harness import SHARED_LOGIN_TABLE, ThreadServer, gateway_client, write_routes

TABLE = SHARED_LOGIN_TABLE


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with gateway_client(write_routes(tmp_path, TABLE)) as client:
        yield client


def log_in(client: TestClient, user: str = "alice", password: str = "wonderland") -> str:
    """Log in on the legacy login page; the session cookie's value."""
    response = client.post("/ui/login", data={"username": user, "password": password})
    assert response.status_code == 200  # the redirect to the book list, followed
    assert f'<span id="user">{user}</span>' in response.text
    return client.cookies["session"]


def legacy_sees(client: TestClient, cookie: str | None = None) -> str | None:
    """The user the legacy app's own page shows (None: the "Log in" link)."""
    headers = {"cookie": f"session={cookie}"} if cookie is not None else {}
    html = client.get("/ui/", headers=headers).text
    if '<span id="user">' not in html:
        assert '<a href="/ui/login">Log in</a>' in html
        return None
    return html.split('<span id="user">')[1].split("<")[0]


def test_the_new_app_sees_the_user_the_legacy_app_logged_in(client: TestClient) -> None:
    anonymous = client.get("/me")
    assert anonymous.status_code == 401
    assert anonymous.json() == {"error": "unauthorized"}
    assert anonymous.headers["x-gateway-backend"] == "new"
    log_in(client)
    me = client.get("/me")
    assert (me.status_code, me.json()) == (200, {"user": "alice"})
    assert me.headers["x-gateway-backend"] == "new"
    assert "set-cookie" not in me.headers  # reading is not writing


def test_logout_on_the_new_side_logs_out_of_the_legacy_app(client: TestClient) -> None:
    log_in(client)
    response = client.post("/logout")
    assert response.status_code == 204
    assert response.headers["x-gateway-backend"] == "new"
    # The deletion Flask itself sends for an emptied session.
    assert response.headers["set-cookie"] == (
        "session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/"
    )
    assert legacy_sees(client) is None
    assert client.get("/me").status_code == 401


def test_logout_on_the_legacy_side_logs_out_of_the_new_app(client: TestClient) -> None:
    log_in(client)
    page = client.post("/ui/logout")
    assert "Logged out" in page.text
    assert client.get("/me").status_code == 401


def test_the_legacy_login_rejects_a_wrong_password(client: TestClient) -> None:
    response = client.post("/ui/login", data={"username": "alice", "password": "alice"})
    assert response.status_code == 401
    assert "Wrong user name or password" in response.text
    assert client.get("/me").status_code == 401


def _signed(app: Flask, data: dict[str, str]) -> str:
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    assert serializer is not None
    value: str = serializer.dumps(data)
    return value


def _tampered() -> str:
    _, stamp, signature = _signed(legacy_app, {"user": "alice"}).split(".")
    forged = _signed(legacy_app, {"user": "bob"}).split(".")[0]
    return ".".join((forged, stamp, signature))  # bob's payload under alice's signature


def _other_key() -> str:
    other = Flask("other")
    other.secret_key = "another key"
    return _signed(other, {"user": "alice"})


def _expired() -> str:
    lifetime = legacy_app.permanent_session_lifetime.total_seconds()
    with mock.patch("itsdangerous.timed.time.time", return_value=time.time() - lifetime - 60):
        return _signed(legacy_app, {"user": "alice"})


@pytest.mark.parametrize("make", [_tampered, _other_key, _expired])
def test_a_cookie_flask_rejects_is_anonymous_on_both_sides(
    client: TestClient, make: object, caplog: pytest.LogCaptureFixture
) -> None:
    assert legacy_sees(client, _signed(legacy_app, {"user": "alice"})) == "alice"  # the control
    cookie = make()  # type: ignore[operator]
    me = client.get("/me", headers={"cookie": f"session={cookie}"})
    assert (me.status_code, me.json()) == (401, {"error": "unauthorized"})
    assert legacy_sees(client, cookie) is None
    assert cookie not in caplog.text


def test_ui_changes_need_a_login_and_go_on_after_it(client: TestClient) -> None:
    form = client.get("/ui/books/new", follow_redirects=False)
    assert form.status_code == 303
    assert form.headers["location"] == "/ui/login?next=/ui/books/new"
    refused = client.post("/ui/books/new", data={"title": "Emma", "author": "Jane Austen"})
    assert "Log in to change books" in refused.text
    assert client.get("/books").json() == []
    login = client.post(
        "/ui/login",
        data={"username": "bob", "password": "builder", "next": "/ui/books/new"},
    )
    assert login.url.path == "/ui/books/new"
    created = client.post("/ui/books/new", data={"title": "Emma", "author": "Jane Austen"})
    assert "Book created" in created.text
    client.post("/logout")  # on the new side
    book_id = client.get("/books").json()[0]["id"]
    deleted = client.post(f"/ui/books/{book_id}/delete")
    assert "Log in to change books" in deleted.text
    assert len(client.get("/books").json()) == 1


def test_the_login_page_only_redirects_within_the_site(client: TestClient) -> None:
    response = client.post(
        "/ui/login",
        data={"username": "alice", "password": "wonderland", "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/ui/"


def test_a_session_is_never_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cookie = log_in(client)
    client.get("/me")
    client.post("/logout")
    assert cookie not in caplog.text
    assert "alice" not in caplog.text


def test_a_session_is_in_no_metric_and_no_admin_answer(client: TestClient) -> None:
    cookie = log_in(client)
    client.get("/me")
    for path in ("/-/metrics", "/-/routes", "/-/shadow"):
        text = client.get(path).text
        assert cookie not in text, path
        assert "alice" not in text, path


def test_a_session_read_waits_for_a_thread_of_the_legacy_pool_then_503(tmp_path: Path) -> None:
    """The session is opened on a thread of the Flask backend's own pool, taken like a
    request's: with its one thread held, a logged-in request to the new app gets the
    gateway's 503 within --wsgi-wait (never an anonymous 401); an anonymous one needs
    no thread."""
    table = TABLE.replace('"legacy_flask.app:app"}', '"legacy_flask.app:app", threads: 1}')
    settings = Settings(
        config=str(write_routes(tmp_path, table)), wsgi_wait=0.3, wsgi_buffer=16, body_timeout=3
    )
    with ThreadServer(Gateway(settings)) as server, httpx.Client(base_url=server.url) as client:
        login = {"username": "alice", "password": "wonderland"}
        assert client.post("/ui/login", data=login, follow_redirects=True).status_code == 200
        assert client.get("/me").json() == {"user": "alice"}
        # A login form whose upload stalls past the buffer: the page reads it on the
        # legacy app's one thread, which it holds until --body-timeout ends it.
        stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        stalled.sendall(
            b"POST /ui/login HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" + b"username=" * 10
        )
        time.sleep(0.5)
        started = time.monotonic()
        busy = client.get("/me")
        assert busy.status_code == 503
        assert busy.json()["kind"] == "busy"
        assert busy.headers["x-gateway-backend"] == "new"
        assert time.monotonic() - started < 2.5  # the bounded wait, not the thread's release
        anonymous = httpx.get(server.url + "/me")
        assert (anonymous.status_code, anonymous.json()) == (401, {"error": "unauthorized"})
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := stalled.recv(65536):
                answer += chunk
        stalled.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert client.get("/me").json() == {"user": "alice"}
