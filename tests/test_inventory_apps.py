"""The inventory of real apps this repo did not write (httpbin on Flask, httpbinx on
FastAPI, from PyPI), and of every app shape the reader knows or must refuse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.inventory.joining import read_backends
from gateway.routefile.loading import load_config
from tests.harness import ThreadServer, free_port

# The legacy httpbin (Flask, 56 rules) and its FastAPI port httpbinx (one router that
# includes eleven, two of them hidden from the schema, plus a static mount).
HTTPBIN = """\
version: 1
backends:
  legacy: {wsgi: "httpbin:app"}
  new: {asgi: "httpbinx.main:app"}
default: legacy
routes:
  - {id: anything, path: /anything, methods: [GET, POST], backend: new}
  - {id: status, path: "/status/{code}", backend: new}
  - {id: robots, path: /robots.txt, methods: [GET], backend: new}
  - {id: get, path: /get, methods: [GET], backend: legacy, shadow: {backend: new}}
  - {id: uuid, path: /uuid, methods: [GET], backend: legacy, canary: {backend: new, percent: 10}}
  - {id: favicon, path: /favicon.ico, backend: new}
"""


def inventory(capsys: pytest.CaptureFixture[str], config: Path, *extra: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["inventory", "--config", str(config), "--json", *extra]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def by_key(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["method"], e["path"]): e for e in doc["endpoints"]}


def test_httpbin_against_httpbinx(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(HTTPBIN)
    doc = inventory(capsys, config)
    assert doc["backends"]["legacy"] == {"inspected": True, "endpoints": 82, "reason": None}
    assert doc["backends"]["new"] == {"inspected": True, "endpoints": 67, "reason": None}
    # By hand: 61 endpoints in both apps, 21 in httpbin alone, 6 in httpbinx alone.
    # unreachable: /status/{codes} DELETE, PATCH, POST, PUT, TRACE (httpbinx has GET only)
    #   and /robots.txt (httpbinx spells it /robot.txt): 6 of httpbin's 21;
    # migrated: GET and POST /anything, GET /status/{codes}; canary /uuid; shadowed /get;
    # ready: the other 61 - 5 = 56; legacy-only: 21 - 6 = 15.
    summary = doc["summary"]
    assert {k: v for k, v in summary.items() if k != "traffic_share_new"} == {
        "endpoints": 88,
        "unreachable": 6,
        "new-only": 6,
        "canary": 1,
        "migrated": 3,
        "shadowed": 1,
        "ready": 56,
        "legacy-only": 15,
        "legacy_endpoints": 82,
        "legacy_migrated": 3,
    }
    found = by_key(doc)
    for method in ("DELETE", "PATCH", "POST", "PUT", "TRACE"):
        assert found[(method, "/status/{codes}")]["status"] == "unreachable"
    assert found[("GET", "/status/{codes}")]["status"] == "migrated"
    assert found[("GET", "/robots.txt")]["status"] == "unreachable"
    assert found[("GET", "/robot.txt")] | {"names": None} == {
        "method": "GET",
        "path": "/robot.txt",
        "status": "new-only",
        "route": "_default",
        "backend": "legacy",
        "implemented_by": ["new"],
        "traffic": None,
        "canary": None,
        "shadowed": False,
        "names": None,
        "hidden": False,
        "routed": False,
    }
    assert found[("GET", "/favicon.ico")]["routed"] is True
    assert found[("GET", "/favicon.ico")]["hidden"] is True  # include_in_schema=False
    assert found[("GET", "/uuid")]["canary"] == {"backend": "new", "percent": 10.0}
    assert found[("GET", "/uuid")]["status"] == "canary"
    assert found[("GET", "/get")]["status"] == "shadowed"
    assert found[("DELETE", "/anything")]["status"] == "ready"
    # parameter names differ, the shape is the same: one endpoint
    basic = found[("GET", "/basic-auth/{user}/{passwd}")]
    assert basic["status"] == "ready" and basic["hidden"] is True  # a router included hidden
    assert basic["names"] == {"legacy": "basic_auth", "new": "basic_auth"}
    static = found[("GET", "/static/{filename:path}")]  # a Flask rule and a Starlette mount
    assert static["implemented_by"] == ["legacy", "new"] and static["status"] == "ready"
    assert found[("GET", "/anything/{anything:path}")]["status"] == "legacy-only"
    assert found[("GET", "/digest-auth/{qop}/{user}/{passwd}")]["status"] == "legacy-only"

    capsys.readouterr()
    assert main(["check", str(config)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: unreachable:") == 6
    assert "GET /robots.txt is sent by route 'robots' to 'new', which does not implement it" in err
    assert main(["check", "--strict", str(config)]) == 1


@pytest.mark.filterwarnings("ignore:Duplicate Operation ID")  # httpbinx's own, harmless
def test_httpbinx_as_a_remote_backend_read_from_its_openapi(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with ThreadServer(_httpbinx()) as server:
        config = tmp_path / "routes.yaml"
        config.write_text(
            "version: 1\nbackends:\n"
            '  legacy: {wsgi: "httpbin:app"}\n'
            f"  remote: {{url: {server.url!r}, openapi: /openapi.json}}\n"
            f"  wrong: {{url: {server.url!r}, openapi: /nope.json}}\n"
            f"  gone: {{url: 'http://127.0.0.1:{free_port()}', openapi: /openapi.json}}\n"
            "default: legacy\n"
            "routes:\n  - {id: get, path: /get, methods: [GET], backend: remote}\n"
        )
        doc = inventory(capsys, config)
    # The schema leaves out the 10 endpoints httpbinx hides (the docs, favicon, the auth
    # and response-inspection routers) and the static mount: 67 - 11.
    assert doc["backends"]["remote"]["endpoints"] == 56
    found = by_key(doc)
    assert found[("GET", "/get")]["status"] == "migrated"
    assert found[("GET", "/get")]["names"]["remote"] == "get_get_get"
    assert found[("GET", "/basic-auth/{user}/{passwd}")]["status"] == "legacy-only"
    assert found[("POST", "/post")]["status"] == "ready"
    assert doc["backends"]["wrong"]["reason"] == (
        f"{server.url}/nope.json answered 404, not an OpenAPI document"
    )
    assert doc["backends"]["gone"]["reason"].startswith("cannot fetch http://127.0.0.1:")


def _httpbinx() -> Any:
    from httpbinx.main import app

    return app


def test_a_remote_backend_path_shifts_its_document(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "api.yaml").write_text(
        "openapi: 3.0.0\npaths:\n"
        "  /v1/books/{id}: {get: {operationId: getBook}, head: {}}\n"
        "  /v1/books: {post: {operationId: addBook}}\n"
        "  /health: {get: {operationId: health}}\n"
    )
    config = tmp_path / "routes.yaml"
    config.write_text(
        "version: 1\nbackends:\n"
        '  legacy: {wsgi: "legacy_flask.app:app"}\n'
        "  remote: {url: 'http://127.0.0.1:9/v1', openapi: api.yaml}\n"
        "  blind: {url: 'http://127.0.0.1:9'}\n"
        "default: legacy\n"
    )
    doc = inventory(capsys, config)
    found = by_key(doc)
    assert found[("GET", "/books/{book_id}")]["implemented_by"] == ["legacy", "remote"]
    assert found[("POST", "/books")]["names"] == {"legacy": "api.create_book", "remote": "addBook"}
    assert ("GET", "/health") not in found  # outside /v1: the gateway never sends it there
    assert ("HEAD", "/books/{id}") not in found
    assert doc["backends"]["blind"] == {
        "inspected": False,
        "endpoints": None,
        "reason": "a url backend without 'openapi:' (its endpoints are unknown)",
    }
    capsys.readouterr()
    assert main(["inventory", "--config", str(config)]) == 0
    assert "note: backend 'blind' not inspected: a url backend without 'openapi:'" in (
        capsys.readouterr().out
    )


def test_openapi_key_is_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(
        "version: 1\nbackends:\n"
        '  legacy: {wsgi: "legacy_flask.app:app", openapi: /openapi.json}\n'
        "  remote: {url: 'http://127.0.0.1:9', openapi: ''}\n"
        "default: legacy\n"
    )
    assert main(["check", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{config}:3:42: backend 'legacy': 'openapi' is for url backends" in err
    assert "backend 'remote': 'openapi' (a path such as /openapi.json, or a file) must be" in err
    config.write_text(
        "version: 1\nbackends:\n"
        '  legacy: {wsgi: "legacy_flask.app:app"}\n'
        "  remote: {url: 'http://127.0.0.1:9', openapi: missing.json}\n"
        "default: legacy\n"
    )
    assert main(["check", "--strict", str(config)]) == 0  # a note is not a warning
    assert "note: backend 'remote' not inspected: cannot read the OpenAPI file" in (
        capsys.readouterr().err
    )


def test_every_app_shape_is_read(tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(
        "version: 1\nbackends:\n"
        '  legacy: {wsgi: "tests.inventory_apps:werkzeug_app"}\n'
        '  star: {asgi: "tests.inventory_apps:starlette_app"}\n'
        "default: legacy\n"
    )
    reads = read_backends(load_config(config))
    endpoints = {(e.method, e.path): e for e in reads["star"].endpoints or ()}
    assert set(endpoints) == {
        ("GET", "/"),
        ("GET", "/items"),  # an HTTPEndpoint: the methods it defines
        ("POST", "/items"),
        ("WEBSOCKET", "/ws"),
        ("GET", "/sub/hello/{name}"),  # mounts, nested
        ("GET", "/sub/deep/x"),
        ("WEBSOCKET", "/fast/live/{room}"),  # a FastAPI app mounted in Starlette
        ("GET", "/fast/metrics"),
        ("PUT", "/fast/v2/things/{thing_id}"),  # {thing_id:int}
        ("GET", "/fast/v2/admin/stats"),  # a router included in a router, hidden
        ("*", "/raw/{path:path}"),  # an app with no routes of its own: every method
        ("GET", "/files/{name}"),  # {name}.txt: the whole segment
        ("DELETE", "/files/{name}"),
    }
    assert endpoints[("GET", "/fast/v2/admin/stats")].hidden
    assert not endpoints[("PUT", "/fast/v2/things/{thing_id}")].hidden
    legacy = {(e.method, e.path) for e in reads["legacy"].endpoints or ()}
    assert legacy == {("*", "/"), ("*", "/f/{name}")}  # a Werkzeug rule without methods


def test_apps_that_cannot_be_read_are_reported_not_fatal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(
        "version: 1\nbackends:\n"
        '  legacy: {wsgi: "legacy_flask.app:app"}\n'
        '  exits: {asgi: "tests.inventory_exits:app"}\n'
        '  plain: {wsgi: "tests.inventory_apps:plain_wsgi"}\n'
        "default: legacy\n"
        "routes:\n  - {id: x, path: /x, backend: exits}\n"
    )
    doc = inventory(capsys, config)
    assert doc["backends"]["exits"] == {
        "inspected": False,
        "endpoints": None,
        "reason": "importing 'tests.inventory_exits:app' raised SystemExit(3)",
    }
    assert doc["backends"]["plain"]["reason"] == (
        "a builtins.function has no route table the gateway can read (Flask or Werkzeug "
        "url_map, Starlette or FastAPI routes)"
    )
    assert doc["summary"]["legacy-only"] == 18  # legacy is read all the same
    # gateway check refuses the file, and says why, rather than exiting with the app
    assert main(["check", str(config)]) == 1
    assert (
        "cannot import 'tests.inventory_exits:app': importing 'tests.inventory_exits' "
        "raised SystemExit(3)" in capsys.readouterr().err
    )


def test_check_warns_about_app_routes_the_gateway_hides(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(
        "version: 1\nbackends:\n"
        '  legacy: {wsgi: "legacy_flask.app:app"}\n'
        '  fast: {asgi: "tests.inventory_apps:fastapi_app"}\n'
        "default: legacy\n"
    )
    # The gateway's metrics live under its own prefix: the app's /metrics stays the app's.
    assert main(["check", "--strict", str(config)]) == 0
    assert "hidden" not in capsys.readouterr().err
    monkeypatch.setenv("GATEWAY_METRICS_PATH", "/metrics")  # moved onto the app's path
    assert main(["check", str(config)]) == 0
    err = capsys.readouterr().err
    assert (
        "warning: hidden: GET /metrics of fast is answered by the gateway itself, "
        "the metrics path (/metrics)" in err
    )
    assert main(["check", "--strict", str(config)]) == 1


def test_init_on_httpbin_and_httpbinx(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "routes.yaml"
    args = ["init", "--legacy", "httpbin:app", "--new", "httpbinx.main:app", "-o", str(out)]
    assert main(args) == 0
    text = out.read_text()
    assert 'legacy: {wsgi: "httpbin:app"}' in text and 'new: {asgi: "httpbinx.main:app"}' in text
    capsys.readouterr()
    assert main(["check", "--strict", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    summary = inventory(capsys, out)["summary"]
    # every endpoint in both apps has its route on legacy; nothing else is routed
    assert (summary["ready"], summary["legacy-only"], summary["new-only"]) == (61, 21, 6)
    assert summary["unreachable"] == summary["migrated"] == 0
    assert text.count("    backend: legacy") == 61
