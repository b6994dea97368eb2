"""Never die, always answer: backends that break the protocols get the documented JSON
5xx with the request id, metrics never record an invalid code, and a backend module
that exits on import is a rejected file, never a dead process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gateway import http as gateway_http
from gateway.app import Gateway
from gateway.http import _problem, start_problem
from gateway.routefile.loading import parse_config
from gateway.routefile.model import ConfigError
from gateway.settings import Settings
from tests.harness import BOOKS_ON_NEW, GatewayProcess, ThreadServer, gateway_client, write_routes
from tests.raw_upstream import RawUpstream

BROKEN = {
    "/body-before-start": ("asgi", "tests.apps:body_before_start"),
    "/str-headers": ("asgi", "tests.apps:str_headers"),
    "/crlf-header-app": ("asgi", "tests.apps:crlf_header"),
    "/status-zero": ("asgi", "tests.apps:status_zero"),
    "/cancelled": ("asgi", "tests.apps:cancelled"),
    "/wsgi-never-starts": ("wsgi", "tests.apps:wsgi_never_starts"),
}
UPSTREAM = ["/crlf-header", "/status-999", "/status-42", "/binary-header", "/garbage"]


@pytest.fixture(scope="module")
def broken_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    with RawUpstream() as upstream:
        lines = ["version: 1", "backends:", f'  raw: {{url: "{upstream.url}"}}']
        routes = ["routes:"]
        for i, (path, (kind, target)) in enumerate(BROKEN.items()):
            lines.append(f'  b{i}: {{{kind}: "{target}"}}')
            routes.append(f"  - {{id: r{i}, path: {path}, backend: b{i}}}")
        text = "\n".join([*lines, "default: raw", *routes]) + "\n"
        path = write_routes(tmp_path_factory.mktemp("broken"), text)
        with ThreadServer(Gateway(Settings(config=str(path)))) as server:
            yield server


@pytest.mark.parametrize("path", [*BROKEN, *UPSTREAM])
def test_a_protocol_error_gets_the_json_5xx_with_the_request_id(
    broken_gateway: ThreadServer, path: str
) -> None:
    r = httpx.get(broken_gateway.url + path, headers={"X-Request-ID": "req-1"}, timeout=10)
    assert r.status_code in (500, 502)
    body = r.json()
    assert body["request_id"] == "req-1" == r.headers["x-request-id"]
    assert body["kind"] in ("protocol", "exception")
    assert "set-cookie" not in r.headers
    assert httpx.get(broken_gateway.url + "/-/healthz", timeout=5).status_code == 200


def test_metrics_never_record_an_invalid_code(broken_gateway: ThreadServer) -> None:
    for path in [*BROKEN, *UPSTREAM]:
        httpx.get(broken_gateway.url + path, timeout=10)
    text = httpx.get(broken_gateway.url + "/-/metrics", timeout=10).text
    codes = {
        sample.labels["code"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "code" in sample.labels
    }
    assert codes, text
    assert all(100 <= int(code) <= 599 for code in codes), codes


# --- a backend module that exits on import -------------------------------------------

EXITING = [
    "tests.bad_imports.exits",
    "tests.bad_imports.parses_argv",
    "tests.bad_imports.interrupts",
]


def table(module: str) -> str:
    return f"""\
version: 1
backends:
  legacy: {{wsgi: "tests.apps:wsgi"}}
  bad: {{asgi: "{module}:app"}}
default: legacy
"""


@pytest.mark.parametrize("module", EXITING)
def test_check_rejects_a_module_that_exits_on_import(module: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(table(module), "routes.yaml")
    [problem] = info.value.problems
    assert (problem.where.line, problem.where.column) == (4, 15)
    assert "must not exit" in problem.message


@pytest.mark.parametrize("module", EXITING)
def test_gateway_check_reports_it_and_exits_1(tmp_path: Path, module: str) -> None:
    path = write_routes(tmp_path, table(module))
    check = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", str(path)], capture_output=True, text=True
    )
    assert check.returncode == 1
    assert "routes.yaml:4:15:" in check.stderr and "must not exit" in check.stderr


def test_a_live_reload_to_such_a_file_is_rejected_and_the_gateway_serves_on(
    tmp_path: Path,
) -> None:
    good = 'version: 1\nbackends:\n  legacy: {wsgi: "tests.apps:wsgi"}\ndefault: legacy\n'
    path = write_routes(tmp_path, good)
    with GatewayProcess(path) as gateway:
        for module in EXITING:
            path.write_text(table(module))
            r = httpx.post(gateway.url + "/-/reload", timeout=10)
            assert r.status_code == 422
            assert "must not exit" in r.json()["problems"][0]
            assert httpx.get(gateway.url + "/x", timeout=5).status_code == 200
        assert gateway.proc is not None and gateway.proc.poll() is None


def test_serve_refuses_to_start_on_such_a_file(tmp_path: Path) -> None:
    path = write_routes(tmp_path, table(EXITING[0]))
    with pytest.raises(RuntimeError, match="must not exit"), GatewayProcess(path):
        pass


# --- smaller: each gets a clean answer or a limit with a clear message ---------------


@pytest.mark.parametrize("body", ["[" * 60_000, "[" * 30_000 + "]" * 30_000])
def test_admin_json_nested_60000_deep_is_a_clean_400(tmp_path: Path, body: str) -> None:
    path = write_routes(tmp_path, BOOKS_ON_NEW)
    with gateway_client(path) as client:
        r = client.put(
            "/-/routes/books", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == 400  # was 500 (RecursionError)
        assert "the body must be" in r.json()["error"]
        assert client.get("/-/healthz").status_code == 200
    assert path.read_text() == BOOKS_ON_NEW


def test_a_template_of_1500_segments_is_refused_with_a_clear_message() -> None:
    template = "/" + "/".join(f"s{i}" for i in range(1500))
    with pytest.raises(ConfigError) as info:
        parse_config(BOOKS_ON_NEW + f"  - {{id: deep, path: {template}, backend: new}}\n")
    [problem] = info.value.problems
    assert "has 1500 segments; a route path has at most 100" in problem.message
    assert problem.where.line == 8
    hundred = "/" + "/".join(f"s{i}" for i in range(100))
    parse_config(BOOKS_ON_NEW + f"  - {{id: deep, path: {hundred}, backend: new}}\n")


def test_typo_hints_stay_linear_1500_routes_by_1500_backends() -> None:
    lines = ["version: 1", "backends:"]
    lines += [f"  svc{i}: {{url: 'http://127.0.0.1:{1000 + i}'}}" for i in range(1500)]
    lines += ["routes:"]
    lines += [f"  - {{id: r{i}, path: /p{i}, backend: svx{i}}}" for i in range(1500)]
    started = time.process_time()
    with pytest.raises(ConfigError) as info:
        parse_config("\n".join(lines) + "\n", resolve_imports=False)
    took = time.process_time() - started
    assert len(info.value.problems) == 1500
    assert "did you mean 'svc0'" in info.value.problems[0].message
    assert took < 5, took  # ~0.7 s here; every typo against every name took 10 s and more


def test_hints_still_suggest_among_many_names() -> None:
    lines = ["version: 1", "backends:"]
    lines += [f"  service-{i}: {{url: 'http://127.0.0.1:{1000 + i}'}}" for i in range(300)]
    lines += ["routes:", "  - {id: r, path: /p, backend: servise-42}"]
    with pytest.raises(ConfigError, match="did you mean 'service-42'"):
        parse_config("\n".join(lines) + "\n", resolve_imports=False)


def test_a_malformed_path_and_a_duplicate_id_are_both_reported() -> None:
    text = BOOKS_ON_NEW + "  - {id: books, path: '/b/{x', backend: new}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, resolve_imports=False)
    messages = [p.message for p in info.value.problems]
    assert len(messages) == 2, messages
    assert "already used at line 7" in messages[0]
    assert "malformed" in messages[1]


# --- flips on every valid file ---------------------------------------------------------

ANCHORED = """\
version: 1
backends:
  legacy: {wsgi: "tests.apps:wsgi"}
  new: {asgi: "tests.apps:asgi"}
  "on": {asgi: "tests.apps:asgi"}
  "null": {asgi: "tests.apps:asgi"}
default: legacy
routes:
  - {id: a, path: /a, backend: &migrated new}
  - {id: b, path: /b, backend: *migrated}
  - id: c
    path: /c
    backend: *migrated  # the same anchor, in block style
"""


def backends_of(text: str) -> dict[str, str]:
    return {r.id: r.backend for r in parse_config(text, resolve_imports=False).routes}


@pytest.mark.parametrize("route", ["a", "b", "c"])
def test_a_route_written_as_an_alias_flips_alone(tmp_path: Path, route: str) -> None:
    path = write_routes(tmp_path, ANCHORED)
    with gateway_client(path) as client:
        r = client.put(f"/-/routes/{route}", json={"backend": "legacy"})
        assert r.status_code == 200, r.text  # was 409: the edit broke the anchor
        assert client.get(f"/{route}").headers["x-gateway-backend"] == "legacy"
    expected = {"a": "new", "b": "new", "c": "new", route: "legacy"}
    assert backends_of(path.read_text()) == expected
    assert "# the same anchor, in block style" in path.read_text()


def test_flip_all_on_a_file_with_aliases(tmp_path: Path) -> None:
    path = write_routes(tmp_path, ANCHORED)
    flip = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "flip", "--all", "legacy", "--config", str(path)],
        capture_output=True,
        text=True,
    )
    assert flip.returncode == 0, flip.stderr
    assert backends_of(path.read_text()) == {"a": "legacy", "b": "legacy", "c": "legacy"}


@pytest.mark.parametrize("name", ["on", "null"])
def test_a_backend_named_like_a_yaml_constant_reads_back_as_its_name(
    tmp_path: Path, name: str
) -> None:
    path = write_routes(tmp_path, ANCHORED)
    with gateway_client(path) as client:
        r = client.put("/-/routes/b", json={"backend": name})
        assert r.status_code == 200, r.text
        assert r.json()["route"]["backend"] == name
        r = client.put("/-/routes/c", json={"canary": {"percent": 10, "backend": name}})
        assert r.status_code == 200, r.text
    assert backends_of(path.read_text())["b"] == name
    assert f'backend: "{name}"' in path.read_text()


class _Bytes(bytes):
    pass


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ([], None),
        ([(b"content-type", b"text/plain"), (b"x-a", b"")], None),
        ([(b"x-token!#$%&'*+-.^_`|~09AZaz", b"any \t visible \x80\xff bytes")], None),
        ([(b"x-a", b"1"), (b"x-b", b"2", b"3")], "not a (name, value) pair"),
        ([(b"x-a", b"1", b"2")], "not a (name, value) pair"),
        ([(b"x-a",)], "not a (name, value) pair"),
        ([b"x-a"], "not a (name, value) pair"),
        ([1], "not a (name, value) pair"),
        ([(b"x-a", b"1"), ("x-b", b"2")], "not bytes (str, bytes)"),
        ([(b"x-a", 2)], "not bytes (bytes, int)"),
        ([(b"x-a", bytearray(b"1"))], "not bytes (bytes, bytearray)"),
        ([(b"", b"1")], "characters HTTP does not allow"),
        ([(b"x a", b"1")], "characters HTTP does not allow"),
        ([(b"x:a", b"1")], "characters HTTP does not allow"),
        ([(b"x-a\n", b"1")], "characters HTTP does not allow"),
        ([(b"x-a", b"1"), (b"x-b", b"2\r\nSet-Cookie: a=b")], "characters HTTP does not allow"),
        ([(b"x-a", b"1\n")], "characters HTTP does not allow"),
        ([(b"x-a", b"\x00")], "characters HTTP does not allow"),
        ([[b"x-a", b"1"]], None),  # a list is a pair too, as servers read one
        ([(_Bytes(b"x-a"), _Bytes(b"1"))], None),
        ([{b"x-a", b"1"}], "not a (name, value) pair"),
        ([(b"x-a", memoryview(b"1"))], "not bytes (bytes, memoryview)"),
        ([(memoryview(b"content-type"), b"1")], "not bytes (memoryview, bytes)"),
        ([(b"content-type", b"text/plain"), (b"content-type", b"a\r\nb")], "does not allow"),
    ],
)
def test_every_header_of_a_response_start_is_checked(
    headers: list[object], problem: str | None
) -> None:
    """The checks run over all the headers at once: each rule holds for any header of
    the list, not only the first."""
    found = start_problem({"type": "http.response.start", "status": 200, "headers": headers})
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


@pytest.mark.parametrize("status", [0, 199, 600, "200", True, None, 200.0])
def test_a_response_start_needs_a_status_http_has(status: object) -> None:
    found = start_problem({"type": "http.response.start", "status": status})
    assert found == f"invalid status {status!r}"


def test_a_status_may_be_an_int_of_another_type() -> None:
    start = {"type": "http.response.start", "status": HTTPStatus.CREATED, "headers": []}
    assert start_problem(start) is None


_NAMES = [b"x-a", b"content-type", b"X-A", b"", b"x a", b"x:a", b"\xff", b"x\x00"]
_VALUES = [b"", b"1", b"a\r\nb", b"\x00", b"\n", b"\r", b"\t\x80\xff", b"ok\x00"]


def test_the_quick_check_says_what_the_full_one_says_of_every_pair() -> None:
    """A start clears the quick check exactly when it clears the step-by-step one, and
    what is found wrong is named the same: every pair of these headers, in either order."""
    pairs = [(name, value) for name in _NAMES for value in _VALUES]
    for status in (200, 600):
        for first in pairs:
            for second in pairs:
                start = {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [first, second],
                }
                assert start_problem(start) == _problem(start), start


def test_the_names_found_to_be_tokens_are_bounded_and_still_checked_past_it() -> None:
    """Names an app answers with are checked once and kept (`http._TOKEN_NAMES`), at
    most its limit of them; past it, a new name is still checked, each time."""
    memo = gateway_http._TOKEN_NAMES
    for number in range(memo.limit + 100):
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"x-%d" % number, b"v")],
        }
        assert start_problem(start) is None
        assert len(memo) <= memo.limit
    assert len(memo) == memo.limit
    for bad in (b"x a", b"x:a", b"", b"x\x00"):
        start = {"type": "http.response.start", "status": 200, "headers": [(bad, b"v")]}
        assert start_problem(start) == _problem(start) is not None
    assert len(memo) == memo.limit


_ITEM = (
    st.sampled_from(_NAMES + _VALUES)
    | st.binary(max_size=4)
    | st.text(max_size=3)
    | st.integers()
    | st.builds(bytearray, st.sampled_from(_VALUES))
    | st.builds(memoryview, st.sampled_from(_NAMES))
)
_HEADER = (
    st.tuples(_ITEM, _ITEM) | st.lists(_ITEM, max_size=3) | st.tuples(_ITEM, _ITEM, _ITEM) | _ITEM
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_HEADER, max_size=4), st.sampled_from([200, 599, 600, True, "200", None]))
def test_the_quick_check_says_what_the_full_one_says_of_any_shape(
    headers: list[object], status: object
) -> None:
    """The same, on headers of any shape an app could send."""
    start = {"type": "http.response.start", "status": status, "headers": headers}
    assert start_problem(start) == _problem(start)
