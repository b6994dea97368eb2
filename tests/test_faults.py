"""Never die, always answer: backends that break the protocols get the documented JSON
5xx with the request id, metrics never record an invalid code, and a backend module
that exits on import is a rejected file, never a dead process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.settings import Settings
from tests.harness import ThreadServer, write_routes
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
    text = httpx.get(broken_gateway.url + "/metrics", timeout=10).text
    codes = {
        sample.labels["code"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "code" in sample.labels
    }
    assert codes, text
    assert all(100 <= int(code) <= 599 for code in codes), codes
