"""httpbinx (httpbin's FastAPI port, from PyPI) answers the same under uvicorn alone
and mounted by the gateway (`asgi:`), and the same uvicorn answers the same behind
nginx and behind a `url:` backend, request by request (tests/fidelity_cases.py),
after removing only what a proxy may change (tests/fidelity.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fidelity import GATEWAY_HOP, NGINX_HOP, Body, Case, differences, exchange_both
from tests.fidelity_cases import HTTP_CASES
from tests.fidelity_servers import gateway, nginx, routes, serving, uvicorn
from tests.harness import free_port


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    directory = tmp_path_factory.mktemp("httpbinx")
    ports = {name: free_port() for name in ("uvicorn", "gateway", "nginx", "url")}
    (directory / "asgi").mkdir()
    (directory / "url").mkdir()
    mounted = routes(directory / "asgi", 'asgi: "httpbinx.main:app"')
    remote = routes(directory / "url", f'url: "http://127.0.0.1:{ports["uvicorn"]}"')
    with (
        serving(uvicorn("httpbinx.main:app", ports["uvicorn"]), ports["uvicorn"], directory / "a"),
        serving(gateway(mounted, ports["gateway"]), ports["gateway"], directory / "g.log"),
        serving(
            nginx(directory, ports["nginx"], ports["uvicorn"]), ports["nginx"], directory / "n"
        ),
        serving(gateway(remote, ports["url"]), ports["url"], directory / "url.log"),
    ):
        yield ports


# httpbinx 1.11.1 raises on a few endpoints (a route name it lacks, HTTPBasic misused,
# a static file looked up from the working directory, ranges not written): there the
# cases compare Starlette's own plain-text 500, which the gateway must relay as sent.
@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in HTTP_CASES])
def test_httpbinx_under_uvicorn_and_mounted_by_the_gateway(
    servers: dict[str, int], case: Case
) -> None:
    alone, through = exchange_both(servers["uvicorn"], servers["gateway"], case)
    found = differences(alone, through, Body(GATEWAY_HOP))
    assert not found, f"{case.method} {case.target}:\n" + "\n".join(found)


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in HTTP_CASES])
def test_httpbinx_behind_nginx_and_behind_a_url_backend(
    servers: dict[str, int], case: Case
) -> None:
    alone, through = exchange_both(servers["nginx"], servers["url"], case, together=not case.seeded)
    found = differences(alone, through, Body(NGINX_HOP))
    assert not found, f"{case.method} {case.target}:\n" + "\n".join(found)
