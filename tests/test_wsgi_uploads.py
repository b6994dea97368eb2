"""Request bodies reach a WSGI app whole, as under gunicorn: chunked uploads (of unknown
length) below and past `--wsgi-buffer`, multipart forms, and `Expect: 100-continue`."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator

import httpx
import pytest

from gateway.app import Gateway
from gateway.settings import Settings
from tests.harness import ThreadServer, write_routes

BUFFER = 16 * 1024  # --wsgi-buffer: a body up to this is read before the app runs
SIZES = [pytest.param(100, id="preloaded"), pytest.param(BUFFER * 20, id="streamed")]

TABLE = """\
version: 1
backends:
  legacy: {wsgi: "tests.flask_apps:app"}
default: legacy
"""


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    routes = write_routes(tmp_path_factory.mktemp("uploads"), TABLE)
    with ThreadServer(Gateway(Settings(config=str(routes), wsgi_buffer=BUFFER))) as server:
        yield server.url


def in_chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    """A body httpx sends with `Transfer-Encoding: chunked` (its length unknown)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("size", SIZES)
def test_a_chunked_upload_reaches_the_app_byte_for_byte(url: str, size: int) -> None:
    data = os.urandom(size)
    r = httpx.post(url + "/echo", content=in_chunks(data), timeout=30)
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in r.request.headers
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["x-input-terminated"] == "True"  # as gunicorn says it


@pytest.mark.parametrize("size", SIZES)
def test_a_body_with_content_length_still_reaches_the_app(url: str, size: int) -> None:
    data = os.urandom(size)
    r = httpx.post(url + "/echo", content=data, timeout=30)
    assert r.request.headers["content-length"] == str(size)
    assert r.status_code == 200
    assert r.content == data


@pytest.mark.parametrize("size", SIZES)
def test_a_chunked_multipart_form_reaches_request_form_and_files(url: str, size: int) -> None:
    report = os.urandom(size)
    form = httpx.Request(
        "POST",
        url + "/form",
        data={"title": "Dune", "note": "épice"},
        files={"report": ("report.bin", report, "application/octet-stream")},
    )
    body = form.read()
    headers = {"content-type": form.headers["content-type"]}
    r = httpx.post(url + "/form", content=in_chunks(body), headers=headers, timeout=30)
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 200
    assert r.json() == {
        "form": {"title": "Dune", "note": "épice"},
        "files": {
            "report": {
                "filename": "report.bin",
                "size": size,
                "sha256": hashlib.sha256(report).hexdigest(),
            }
        },
    }


def _read(sock: socket.socket, until: bytes | None = None) -> bytes:
    """What the server sends, up to `until` (None: until it closes)."""
    got = b""
    while until is None or until not in got:
        part = sock.recv(65536)
        if not part:
            break
        got += part
    return got


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_expect_100_continue_gets_the_interim_answer_before_the_body_is_sent(
    url: str, chunked: bool
) -> None:
    data = b"x" * 1000
    port = int(url.rsplit(":", 1)[1])
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: 1000"
    body = b"3e8\r\n" + data + b"\r\n0\r\n\r\n" if chunked else data
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: gateway\r\nExpect: 100-continue\r\n"
            + framing
            + b"\r\nConnection: close\r\n\r\n"
        )
        # Nothing of the body is sent until the server asks for it.
        assert _read(sock, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = _read(sock)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert rest == data
