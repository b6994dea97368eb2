"""Property-based tests (Hypothesis): the route file checker and path matching.

Runs are bounded (examples, no per-example deadline on a busy machine) so the suite
stays fast; the import checks are off while fuzzing the checker (an import can run
anything).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import Gateway
from gateway.paths import canonical
from gateway.routefile.loading import parse_config
from gateway.routefile.model import ConfigError, GatewayConfig
from gateway.settings import Settings
from gateway.types import Message
from tests.harness import write_routes

BOUNDED = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# --- the checker: any bytes give a table or every problem with its position ------------

VALID = """\
version: 1
backends:
  legacy: {wsgi: "tests.apps:wsgi"}
  new: {asgi: "tests.apps:asgi", timeout: 5}
  remote: {url: "http://127.0.0.1:9"}
default: legacy
routes:
  - id: books
    path: /books/{book_id}
    methods: [GET, PUT]
    backend: new
    canary: {backend: legacy, percent: 10}
  - {id: shelf, path: "/shelf/{rest:path}", backend: &a remote, fallback: legacy}
  - {id: other, path: /other, backend: *a}
"""

# Characters that mean something to YAML or to the checker, and some that do not.
YAML_BITS = [*":-{}[],&*!|>'\"#%@`\n ", "  ", "- ", ": ", "\t", "~", "1e9", "null", "é"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """The valid file with a few bytes cut, repeated or replaced."""
    text = VALID
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 12))
        new = draw(st.one_of(st.sampled_from(YAML_BITS), st.text(max_size=8)))
        text = text[:at] + new + text[at + cut :]
    return text.encode("utf-8", "surrogatepass")


@BOUNDED
@given(st.one_of(st.binary(max_size=600), mutated()))
def test_any_bytes_give_a_table_or_every_problem_with_its_position(data: bytes) -> None:
    try:
        config = parse_config(data, "routes.yaml", resolve_imports=False)
    except ConfigError as exc:
        assert exc.problems
        lines = data.count(b"\n") + 1
        for problem in exc.problems:
            assert problem.where.file == "routes.yaml"
            assert 1 <= problem.where.line <= lines + 1
            assert problem.where.column >= 1
            assert problem.message
    else:
        assert isinstance(config, GatewayConfig)


# --- matching: every spelling lands where its canonical form does ---------------------

TABLE = """\
version: 1
backends:
  legacy: {asgi: "tests.apps:asgi"}
  new: {asgi: "tests.apps:asgi"}
default: legacy
routes:
  - {id: books, path: /books, backend: new}
  - {id: book, path: "/books/{id}", backend: new}
  - {id: slash, path: /books/, methods: [GET], backend: legacy}
  - {id: static, path: "/static/{rest:path}", backend: new}
"""
SEGMENTS = ["books", "static", "-", "metrics", "routes", "healthz", "a", "b.c", "x y", "%41", "é"]


@st.composite
def spelled(draw: st.DrawFn) -> tuple[str, str, str]:
    """(a canonical path, as a client sends it, and another spelling of it: both raw)."""
    parts = draw(st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=5))
    trailing = draw(st.booleans()) and bool(parts)
    path = "/" + "/".join(parts) + ("/" if trailing else "")
    pieces = [urllib.parse.quote(p, safe="") for p in path[1:].split("/")]
    plain = "/" + "/".join(pieces)
    if draw(st.booleans()):  # percent-encode some letters outside the escapes
        pieces = [
            "".join(f"%{ord(c):02X}" if c.isalpha() and draw(st.booleans()) else c for c in p)
            if "%" not in p
            else p
            for p in pieces
        ]
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(pieces) - 1))  # at the end: another path (a '/')
        how = draw(st.sampled_from(["double", "dot", "dotdot", "encoded-dot", "encoded-slash"]))
        extra = {
            "double": [""],
            "dot": ["."],
            "dotdot": ["zz", ".."],
            "encoded-dot": ["%2E"],
            "encoded-slash": ["zz%2F%2E%2E"],
        }[how]
        pieces[at:at] = extra
    raw = "/" + "/".join(pieces)
    return path, plain, raw


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, asyncio.AbstractEventLoop]]:
    path = write_routes(tmp_path_factory.mktemp("props"), TABLE)
    app = Gateway(Settings(config=str(path)))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(app.startup())
    yield app, loop
    loop.run_until_complete(app.shutdown())
    loop.close()


def where(app: Gateway, loop: asyncio.AbstractEventLoop, raw: str) -> tuple[int, str | None]:
    """(status, the route that answered, None for the gateway's own answer) of GET raw."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": urllib.parse.unquote(raw),  # as uvicorn decodes it
        "raw_path": raw.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    loop.run_until_complete(app(scope, receive, send))
    start = sent[0]
    headers = dict(start["headers"])
    route = headers.get(b"x-gateway-route")
    return start["status"], route.decode() if route else None


@BOUNDED
@given(spelled())
def test_every_spelling_lands_where_its_canonical_form_does(
    gateway: tuple[Gateway, asyncio.AbstractEventLoop], spelling: tuple[str, str, str]
) -> None:
    app, loop = gateway
    path, plain, raw = spelling
    assert canonical(urllib.parse.unquote(raw)) == path
    assert where(app, loop, raw) == where(app, loop, plain)


@BOUNDED
@given(st.text(alphabet="/.\\-abc%2Fe", max_size=30))
def test_nothing_spelled_under_the_reserved_prefix_reaches_a_backend(
    gateway: tuple[Gateway, asyncio.AbstractEventLoop], tail: str
) -> None:
    app, loop = gateway
    _, route = where(app, loop, "/-/" + tail)
    assert route is None
