"""The WSGI environ an app gets under gunicorn and mounted by the gateway, key by key
(tests/environ_app.py dumps it), for the same raw requests.

Keys that differ by nature (which server it is, its objects, the client's port) are
listed in DOCUMENTED with their reason, as in the README's table; any other
difference fails."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests import fidelity
from tests.fidelity import Case, exchange
from tests.fidelity_servers import gateway, gunicorn, routes, serving
from tests.harness import free_port

# Keys each server gives its own way, present on both sides (README, "Fidelity").
OWN_VALUE: dict[str, str] = {
    "REMOTE_PORT": "the client's port: each exchange is a connection of its own",
    "SERVER_PORT": "the port each server listens on",
    "wsgi.errors": "each server's own error stream (a file-like object either way)",
    "wsgi.input": "each server's own body reader (a file-like object either way)",
    "wsgi.multithread": "the gateway runs WSGI apps on a thread pool; gunicorn's sync workers"
    " run one request at a time",
    "wsgi.multiprocess": "the same: True under the gateway, whatever its --workers",
}
# Keys one server gives and the other does not.
ONE_SIDE: dict[str, str] = {
    "RAW_URI": "gunicorn's own extension (the request target as sent)",
    "SERVER_SOFTWARE": "optional (CGI); gunicorn names itself, the gateway does not",
    "gunicorn.socket": "gunicorn's own extension (the client's socket)",
    "wsgi.early_hints": "gunicorn's own extension (103 Early Hints)",
    "wsgi.file_wrapper": "optional (PEP 3333); frameworks fall back to iterating the file",
    "asgi.scope": "a2wsgi's own extension (the ASGI scope the environ was made from)",
    "HTTP_X_REQUEST_ID": "the gateway's request id, passed to the app for its logs",
}
DOCUMENTED = {**OWN_VALUE, **ONE_SIDE}

# Keys that differ in one case by design.
CASE_DIFFERENCES: dict[str, dict[str, str]] = {
    "forwarded by a proxy on loopback": {
        "REMOTE_ADDR": "the gateway takes the client's address from a trusted proxy's"
        " X-Forwarded-For (uvicorn's meaning); gunicorn gives the proxy's",
    },
}

CASES = [
    Case("plain GET", "/"),
    Case("query", "/items?a=1&a=2&b=%C3%A9&empty=&flag"),
    Case("escaped slash and non-ASCII", "/a%2Fb/caf%C3%A9/%7Eu;p=1"),
    Case("double slashes", "//two//slashes/"),
    Case("absolute-form target", "http://fidelity.example:8080/abs?x=1"),
    Case("repeated headers", "/", headers=[("X-Dup", "one"), ("X-Dup", "two")]),
    Case("cookies in two headers", "/", headers=[("Cookie", "a=1"), ("Cookie", "b=2")]),
    Case("non-ASCII header", "/", headers=[("X-Name", "café".encode())]),
    Case("header with underscores", "/", headers=[("X_Under", "1"), ("X-Under", "2")]),
    Case(
        "form POST",
        "/submit",
        method="POST",
        headers=[("Content-Type", "application/x-www-form-urlencoded")],
        body=b"a=1&b=%C3%A9",
    ),
    Case("POST without a type", "/submit", method="POST", body=b"\x00\x01\x02"),
    Case("empty POST", "/submit", method="POST"),
    Case(
        "chunked POST",
        "/upload",
        method="POST",
        headers=[("Content-Type", "application/octet-stream")],
        body=bytes(range(256)) * 100,
        chunked=True,
    ),
    Case(
        "Expect: 100-continue",
        "/upload",
        method="PUT",
        headers=[("Content-Type", "text/plain")],
        body=b"x" * 5000,
        expect=True,
    ),
    Case("HEAD", "/page", method="HEAD"),
    Case("OPTIONS", "*", method="OPTIONS"),
    Case(
        "forwarded by a proxy on loopback",
        "/",
        headers=[("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https")],
    ),
]

# An app mounted under a prefix: gunicorn told so by SCRIPT_NAME in its environment,
# the gateway by a route's strip_prefix.
PREFIX = "/api/v2"
MOUNTED_CASES = [
    Case("mounted path", f"{PREFIX}/items/7?x=1"),
    Case("mounted escapes", f"{PREFIX}/a%2Fb/caf%C3%A9"),
    Case("mounted root", f"{PREFIX}/"),
    Case(
        "mounted form POST",
        f"{PREFIX}/submit",
        method="POST",
        headers=[("Content-Type", "application/x-www-form-urlencoded")],
        body=b"a=1",
    ),
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    directory = tmp_path_factory.mktemp("environ")
    ports = {"gunicorn": free_port(), "mounted": free_port(), "gateway": free_port()}
    mount = f'{{id: mounted, path: "{PREFIX}/{{rest:path}}", strip_prefix: {PREFIX}, backend: app}}'
    config = routes(directory, 'wsgi: "tests.environ_app:app"', mount)
    alone = gunicorn("tests.environ_app:app", ports["gunicorn"])
    mounted = gunicorn("tests.environ_app:app", ports["mounted"])
    through = gateway(config, ports["gateway"])
    with (
        serving(alone, ports["gunicorn"], directory / "gunicorn.log"),
        serving(mounted, ports["mounted"], directory / "mounted.log", {"SCRIPT_NAME": PREFIX}),
        serving(through, ports["gateway"], directory / "gateway.log"),
    ):
        yield ports


def environ_of(port: int, case: Case) -> dict[str, object]:
    answer = exchange(port, case)
    assert answer.status == 200, (answer.status, answer.body[:300])
    if case.method == "HEAD":
        return {"status": answer.status}
    environ: dict[str, object] = json.loads(answer.body)
    return environ


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in CASES])
def test_the_environ_under_gunicorn_and_mounted_by_the_gateway(
    servers: dict[str, int], case: Case
) -> None:
    alone = environ_of(servers["gunicorn"], case)
    through = environ_of(servers["gateway"], case)
    found = _differences(alone, through, case)
    assert not found, f"{case.method} {case.target}:\n" + "\n".join(found)


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in MOUNTED_CASES])
def test_the_environ_of_an_app_mounted_under_a_prefix(servers: dict[str, int], case: Case) -> None:
    alone = environ_of(servers["mounted"], case)
    through = environ_of(servers["gateway"], case)
    assert (through["SCRIPT_NAME"], alone["SCRIPT_NAME"]) == (PREFIX, PREFIX)
    found = _differences(alone, through, case)
    assert not found, f"{case.method} {case.target}:\n" + "\n".join(found)


def _differences(alone: dict[str, object], through: dict[str, object], case: Case) -> list[str]:
    """Every key that differs and is not documented to, one line each."""
    found = [
        f"{key}: {alone.get(key, '<absent>')!r} alone, {through.get(key, '<absent>')!r} through"
        for key in sorted(set(alone) | set(through))
        if key not in DOCUMENTED
        and key not in CASE_DIFFERENCES.get(case.name, {})
        and alone.get(key, "<absent>") != through.get(key, "<absent>")
    ]
    found += [
        f"{key}: given alone only" if key in alone else f"{key}: given through only"
        for key in OWN_VALUE
        if (key in alone) != (key in through)
    ]
    return found


def test_a_header_name_with_an_underscore_never_reaches_the_app(servers: dict[str, int]) -> None:
    """`X_Forwarded_For` would otherwise pass for `X-Forwarded-For` (gunicorn drops it)."""
    case = Case("underscores", "/", headers=[("X_Forwarded_For", "6.6.6.6"), ("X_Only", "1")])
    for port in (servers["gunicorn"], servers["gateway"]):
        environ = environ_of(port, case)
        assert "HTTP_X_FORWARDED_FOR" not in environ
        assert "HTTP_X_ONLY" not in environ


def test_every_key_allowed_to_differ_is_in_the_readme() -> None:
    listed = fidelity.readme_differences()
    allowed = [*DOCUMENTED, *(k for keys in CASE_DIFFERENCES.values() for k in keys)]
    assert [key for key in allowed if f"`{key}`" not in listed] == []
