"""httpbin (Flask, from PyPI) answers the same alone and behind the gateway.

Two pairs, one table of requests (tests/fidelity_cases.py), each answer compared
after removing only what a proxy may change (tests/fidelity.py):

- the app alone under gunicorn (sync) against the gateway mounting it (`wsgi:`);
- the same gunicorn reached through nginx (a typical reverse-proxy config) against
  it reached through the gateway's `url:` backend.

What still differs is listed here with its reason, and in the README's table."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Iterator

import pytest

from tests import fidelity
from tests.fidelity import (
    GATEWAY_HOP,
    NGINX_HOP,
    Answer,
    Body,
    Case,
    differences,
    exchange_both,
)
from tests.fidelity_cases import HTTP_CASES
from tests.fidelity_servers import gateway, gunicorn, nginx, nginx_binary, routes, serving
from tests.harness import ROOT, free_port

CASES = [pytest.param(case, id=case.name) for case in HTTP_CASES]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """gunicorn alone, nginx in front of it, and a gateway on each side's terms."""
    directory = tmp_path_factory.mktemp("httpbin")
    ports = {name: free_port() for name in ("gunicorn", "nginx", "wsgi", "url")}
    wsgi_dir, url_dir = directory / "wsgi", directory / "url"
    wsgi_dir.mkdir()
    url_dir.mkdir()
    wsgi = routes(wsgi_dir, 'wsgi: "httpbin:app"')
    url = routes(url_dir, f'url: "http://127.0.0.1:{ports["gunicorn"]}"')
    with (
        serving(
            gunicorn("httpbin:app", ports["gunicorn"], workers=3),
            ports["gunicorn"],
            directory / "gunicorn.log",
        ),
        serving(
            nginx(directory, ports["nginx"], ports["gunicorn"]),
            ports["nginx"],
            directory / "nginx.out",
        ),
        serving(gateway(wsgi, ports["wsgi"]), ports["wsgi"], directory / "wsgi.log"),
        serving(gateway(url, ports["url"]), ports["url"], directory / "url.log"),
    ):
        yield ports


# httpbin's own doing, checked for exactly what it is: it refuses a chunked upload
# (501) unless SERVER_SOFTWARE names gunicorn, which the gateway does not claim to be.
# (A chunked upload reaches a WSGI app whole: tests/test_fidelity_environ.py.)
CHUNKED_REFUSED = b"Chunked requests are not supported for server"


def _compare(alone: Answer, through: Answer, case: Case, hop: frozenset[str]) -> None:
    found = differences(alone, through, Body(hop))
    assert not found, f"{case.method} {case.target}:\n" + "\n".join(found)


@pytest.mark.parametrize("case", CASES)
def test_httpbin_under_gunicorn_and_mounted_by_the_gateway(
    servers: dict[str, int], case: Case
) -> None:
    alone, through = exchange_both(servers["gunicorn"], servers["wsgi"], case)
    if case.chunked:
        assert alone.status == 200, alone.body[:300]
        assert (through.status, CHUNKED_REFUSED in through.body) == (501, True), through.body
        return
    _compare(alone, through, case, GATEWAY_HOP)


@pytest.mark.parametrize("case", CASES)
def test_httpbin_behind_nginx_and_behind_a_url_backend(servers: dict[str, int], case: Case) -> None:
    alone, through = exchange_both(servers["nginx"], servers["url"], case)
    _compare(alone, through, case, NGINX_HOP)


def test_every_header_allowed_to_differ_is_in_the_readme() -> None:
    listed = fidelity.readme_differences().lower()
    assert [name for name in NGINX_HOP if f"`{name}" not in listed] == []


def test_make_finds_the_nginx_the_suite_runs() -> None:
    """`make unit` runs deploy/nginx/ensure-nginx, which installs Debian's nginx only
    when none is there: here it finds the one the suite runs, and says where."""
    script = ROOT / "deploy" / "nginx" / "ensure-nginx"
    assert script.stat().st_mode & stat.S_IXUSR
    run = subprocess.run([str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"ensure-nginx: {nginx_binary()} (nginx/")
