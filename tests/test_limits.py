"""One client, or one backend, must not starve the others: the gateway's limits.

Every limit is tested on its failure path (the status a client gets, and that the
gateway keeps serving the others) with short limits set by the test itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.routefile.loading import parse_config
from gateway.routefile.model import DEFAULT_TIMEOUT
from tests.harness import gateway_client, write_routes

KINDS = """\
version: 1
backends:
  legacy: {wsgi: "tests.limit_apps:wsgi"%s}
  new: {asgi: "tests.apps:asgi"%s}
  remote: {url: "http://127.0.0.1:9"%s}
"""


@pytest.mark.parametrize(("extra", "limit"), [("", DEFAULT_TIMEOUT), (", timeout: 0", None)])
def test_every_backend_kind_has_the_same_time_limit(extra: str, limit: float | None) -> None:
    config = parse_config(KINDS % (extra, extra, extra), "routes.yaml", resolve_imports=False)
    assert DEFAULT_TIMEOUT == 30.0
    assert {b.name: b.time_limit for b in config.backends} == {
        "legacy": limit,
        "new": limit,
        "remote": limit,
    }


def test_a_hung_wsgi_handler_gets_a_504(tmp_path: Path) -> None:
    routes = write_routes(tmp_path, KINDS % (", timeout: 0.2", "", "") + "default: legacy\n")
    with gateway_client(routes) as client:
        r = client.get("/hang")
        assert r.status_code == 504
        assert r.json()["kind"] == "timeout"
        assert r.json()["backend"] == "legacy"
        assert client.get("/fine").json()["ok"] is True
