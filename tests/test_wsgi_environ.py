"""The WSGI environ of a request (`gateway.wsgi_environ`): a2wsgi's, key for key,
plus `wsgi.input_terminated`, with a route's prefix as the mount point."""

from __future__ import annotations

import io
from typing import Any

import pytest
from a2wsgi.wsgi import build_environ

from gateway import wsgi_environ
from gateway.wsgi_environ import environ_of

SCOPE: dict[str, Any] = {
    "type": "http",
    "http_version": "1.1",
    "server": ("127.0.0.1", 8000),
    "client": ("10.0.0.7", 50123),
    "scheme": "https",
    "method": "POST",
    "root_path": "",
    "path": "/caf\u00e9/x y",
    "query_string": b"a=1&b=%C3%A9",
    "headers": [
        (b"host", b"example.test"),
        (b"content-type", b"application/json"),
        (b"content-length", b"12"),
        (b"x-many", b"one"),
        (b"accept", b"*/*"),
        (b"x-many", b"two"),
        (b"x-latin", "\u00e9t\u00e9".encode("latin-1")),
    ],
}


@pytest.mark.parametrize(
    "scope",
    [
        SCOPE,
        {**SCOPE, "client": None, "server": None, "headers": []},
        {**SCOPE, "http_version": "2", "method": "GET", "query_string": b""},
    ],
)
def test_the_environ_is_a2wsgis_plus_input_terminated(
    scope: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCRIPT_NAME", raising=False)  # a2wsgi would read it
    body = io.BytesIO()
    ours = environ_of(scope, body, "")
    theirs = dict(build_environ(scope, body))  # type: ignore[arg-type]
    assert ours.pop("wsgi.input_terminated") is True
    assert ours == theirs


def test_repeated_headers_are_joined_and_the_body_headers_have_no_http_prefix() -> None:
    environ = environ_of(SCOPE, io.BytesIO(), "")
    assert environ["HTTP_X_MANY"] == "one,two"
    assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"]) == ("application/json", "12")
    assert "HTTP_CONTENT_TYPE" not in environ
    assert environ["HTTP_X_LATIN"] == "\u00e9t\u00e9"


def test_a_prefix_is_the_mount_point_and_wins_over_the_process_script_name() -> None:
    scope = {**SCOPE, "root_path": "/api", "path": "/api/caf\u00e9"}
    environ = environ_of(scope, io.BytesIO(), "/elsewhere")
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/api", "/caf\u00c3\u00a9")
    plain = environ_of(SCOPE, io.BytesIO(), "/elsewhere")
    assert (plain["SCRIPT_NAME"], plain["PATH_INFO"]) == ("/elsewhere", "/caf\u00c3\u00a9/x y")


def test_the_process_script_name_is_read_as_wsgi_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPT_NAME", "/caf\u00e9")
    assert wsgi_environ.process_script_name() == "/caf\u00c3\u00a9"
    monkeypatch.delenv("SCRIPT_NAME")
    assert wsgi_environ.process_script_name() == ""


def test_made_up_header_names_do_not_grow_the_key_cache_without_bound() -> None:
    headers = [(f"x-made-up-{i}".encode(), b"v") for i in range(2 * wsgi_environ._KEYS.limit)]
    environ = environ_of({**SCOPE, "headers": headers}, io.BytesIO(), "")
    assert len(wsgi_environ._KEYS) <= wsgi_environ._KEYS.limit
    assert all(environ[f"HTTP_X_MADE_UP_{i}"] == "v" for i in range(len(headers)))
