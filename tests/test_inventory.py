"""`gateway inventory`, `check` warnings, `flip --all` and `init` on the demo bookstore."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import Gateway
from gateway.cli import main
from gateway.settings import Settings
from tests.harness import ROOT, GatewayProcess, ThreadServer, free_port, gateway_client

DEMO = (ROOT / "routes.yaml").read_text()

# Every endpoint of the two demo apps, with its status under the shipped routes.yaml.
SHIPPED = {
    ("GET", "/books/events"): ("new-only", "books.events", "new"),
    ("GET", "/docs"): ("new-only", "_default", "legacy"),
    ("GET", "/docs/oauth2-redirect"): ("new-only", "_default", "legacy"),
    ("GET", "/openapi.json"): ("new-only", "_default", "legacy"),
    ("GET", "/redoc"): ("new-only", "_default", "legacy"),
    ("GET", "/books"): ("migrated", "books.list", "new"),
    ("GET", "/books/{book_id}"): ("migrated", "books.get", "new"),
    ("GET", "/me"): ("migrated", "me", "new"),
    ("POST", "/logout"): ("migrated", "logout", "new"),
    ("POST", "/books"): ("ready", "_default", "legacy"),
    ("PUT", "/books/{book_id}"): ("ready", "_default", "legacy"),
    ("DELETE", "/books/{book_id}"): ("ready", "_default", "legacy"),
    ("GET", "/static/{filename:path}"): ("legacy-only", "_default", "legacy"),
    ("GET", "/ui/"): ("legacy-only", "_default", "legacy"),
    ("GET", "/ui/books/new"): ("legacy-only", "_default", "legacy"),
    ("POST", "/ui/books/new"): ("legacy-only", "_default", "legacy"),
    ("GET", "/ui/books/{book_id}"): ("legacy-only", "_default", "legacy"),
    ("POST", "/ui/books/{book_id}/delete"): ("legacy-only", "_default", "legacy"),
    ("GET", "/ui/books/{book_id}/edit"): ("legacy-only", "_default", "legacy"),
    ("POST", "/ui/books/{book_id}/edit"): ("legacy-only", "_default", "legacy"),
    ("GET", "/ui/login"): ("legacy-only", "_default", "legacy"),
    ("POST", "/ui/login"): ("legacy-only", "_default", "legacy"),
    ("POST", "/ui/logout"): ("legacy-only", "_default", "legacy"),
}


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(DEMO)
    return path


def inventory(capsys: pytest.CaptureFixture[str], config: Path, *extra: str) -> dict[str, Any]:
    capsys.readouterr()  # what earlier commands printed
    assert main(["inventory", "--config", str(config), "--json", *extra]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def statuses(doc: dict[str, Any]) -> dict[tuple[str, str], tuple[str, str, str]]:
    return {
        (e["method"], e["path"]): (e["status"], e["route"], e["backend"]) for e in doc["endpoints"]
    }


def test_shipped_table_statuses_and_summary(capsys: pytest.CaptureFixture[str], demo: Path) -> None:
    doc = inventory(capsys, demo)
    assert statuses(doc) == SHIPPED
    assert doc["legacy"] == "legacy"
    summary = doc["summary"]
    assert {k: summary[k] for k in ("endpoints", "migrated", "canary", "shadowed", "ready")} == {
        "endpoints": 23,
        "migrated": 4,
        "canary": 0,
        "shadowed": 0,
        "ready": 3,
    }
    assert summary["legacy-only"] == 11 and summary["new-only"] == 5
    assert summary["unreachable"] == 0 and summary["traffic_share_new"] is None
    assert (summary["legacy_migrated"], summary["legacy_endpoints"]) == (4, 18)
    by_key = {(e["method"], e["path"]): e for e in doc["endpoints"]}
    events = by_key[("GET", "/books/events")]
    assert events["routed"] is True and events["implemented_by"] == ["new"]
    assert by_key[("GET", "/docs")]["routed"] is False and by_key[("GET", "/docs")]["hidden"]
    assert by_key[("GET", "/books")]["implemented_by"] == ["legacy", "new"]
    assert by_key[("GET", "/books")]["names"] == {"legacy": "api.list_books", "new": "list_books"}
    assert all(e["traffic"] is None for e in doc["endpoints"])
    # unreachable first, then the order of the statuses
    order = [e["status"] for e in doc["endpoints"]]
    assert order == sorted(order, key=["new-only", "migrated", "ready", "legacy-only"].index)


def test_plain_table_is_grouped_by_status_with_the_summary_line(
    capsys: pytest.CaptureFixture[str], demo: Path
) -> None:
    assert main(["inventory", "--config", str(demo)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["STATUS", "METHOD", "PATH"]
    assert out[1].split()[:5] == ["new-only", "(routed)", "GET", "/books/events", "books.events"]
    assert out[-1] == (
        "4 of 18 endpoints migrated (23 endpoints: 5 new-only, 4 migrated, 3 ready, 11 legacy-only)"
    )


def test_statuses_after_flips_canary_shadow_and_a_misrouting(
    capsys: pytest.CaptureFixture[str], demo: Path
) -> None:
    assert main(["flip", "books.list", "legacy", "--config", str(demo)]) == 0
    assert main(["canary", "books.list", "10", "--backend", "new", "--config", str(demo)]) == 0
    assert main(["flip", "books.get", "legacy", "--config", str(demo)]) == 0
    text = demo.read_text()
    text += (
        "  - id: books.update\n    path: /books/{id}\n    methods: [PUT]\n    backend: legacy\n"
        "    shadow: {backend: new}\n"
        "  - id: ui.home\n    path: /ui/\n    backend: new\n"
        "  - id: ui.book\n    path: /ui/books/{id}\n    methods: [GET]\n    backend: legacy\n"
        "    canary: {backend: new, percent: 5}\n"
    )
    demo.write_text(text)
    capsys.readouterr()
    doc = inventory(capsys, demo)
    found = statuses(doc)
    assert found[("GET", "/books")] == ("canary", "books.list", "legacy")
    assert found[("GET", "/books/{book_id}")] == ("ready", "books.get", "legacy")
    assert found[("PUT", "/books/{book_id}")] == ("shadowed", "books.update", "legacy")
    assert found[("GET", "/ui/")] == ("unreachable", "ui.home", "new")
    # a canary to a side that lacks the endpoint misroutes 5% of it
    assert found[("GET", "/ui/books/{book_id}")] == ("unreachable", "ui.book", "legacy")
    # ... and so does its route claim /ui/books/new, as the gateway's matcher would
    assert found[("GET", "/ui/books/new")] == ("unreachable", "ui.book", "legacy")
    assert found[("GET", "/books/events")] == ("new-only", "books.events", "new")
    assert doc["endpoints"][0]["path"] == "/ui/"  # the misrouting comes first
    summary = doc["summary"]
    assert (summary["canary"], summary["shadowed"], summary["unreachable"]) == (1, 1, 3)
    # GET /me and POST /logout stay on new
    assert (summary["migrated"], summary["ready"], summary["legacy_migrated"]) == (2, 3, 2)

    # gateway check warns (exit 0), and --strict fails on the warning
    capsys.readouterr()
    assert main(["check", str(demo)]) == 0
    err = capsys.readouterr().err
    assert "warning: unreachable: GET /ui/ is sent by route 'ui.home' to 'new'" in err
    assert main(["check", "--strict", str(demo)]) == 1
    assert "3 warning(s), failing (--strict)" in capsys.readouterr().err


def test_legacy_backend_override(capsys: pytest.CaptureFixture[str], demo: Path) -> None:
    doc = inventory(capsys, demo, "--legacy-backend", "new")
    assert doc["legacy"] == "new"
    found = statuses(doc)
    assert found[("GET", "/ui/")][0] == "new-only"
    assert found[("GET", "/books/events")][0] == "legacy-only"
    assert main(["inventory", "--config", str(demo), "--legacy-backend", "nope"]) == 1
    assert "unknown legacy backend 'nope'" in capsys.readouterr().err


def test_flip_all_legacy_leaves_books_events_unless_forced(
    capsys: pytest.CaptureFixture[str], demo: Path
) -> None:
    assert main(["flip", "--all", "legacy", "--config", str(demo)]) == 0
    out = capsys.readouterr().out
    assert "books.list, books.get, me, logout -> legacy" in out
    assert (
        "left books.events as it was: 'legacy' does not implement GET /books/events "
        "(--force flips it anyway)" in out
    )
    found = statuses(inventory(capsys, demo))
    assert found[("GET", "/books/events")] == ("new-only", "books.events", "new")
    assert found[("GET", "/books")] == ("ready", "books.list", "legacy")
    assert main(["check", "--strict", str(demo)]) == 0
    # again: nothing left to flip, and the route it leaves is still named
    before = demo.read_bytes()
    assert main(["flip", "--all", "legacy", "--config", str(demo)]) == 0
    out = capsys.readouterr().out
    assert "every other route already on legacy; nothing to change" in out
    assert "left books.events as it was" in out
    assert demo.read_bytes() == before

    assert main(["flip", "--all", "legacy", "--force", "--config", str(demo)]) == 0
    assert "books.events -> legacy" in capsys.readouterr().out
    found = statuses(inventory(capsys, demo))
    assert found[("GET", "/books/events")] == ("unreachable", "books.events", "legacy")
    assert main(["check", "--strict", str(demo)]) == 1


def test_flip_all_to_a_backend_it_cannot_read_flips_every_route_and_says_so(
    capsys: pytest.CaptureFixture[str], demo: Path
) -> None:
    # a url backend without `openapi:` is not inspected: nothing is known to leave out
    demo.write_text(
        DEMO.replace(
            "  # remote: {url:", '  remote: {url: "http://127.0.0.1:9"}\n  # remote: {url:'
        )
    )
    assert main(["flip", "--all", "remote", "--config", str(demo)]) == 0
    captured = capsys.readouterr()
    assert "books.list, books.get, books.events, me, logout -> remote" in captured.out
    assert "left " not in captured.out
    assert (
        "note: cannot tell which routes 'remote' implements (a url backend without 'openapi:' "
        "(its endpoints are unknown)); flipped every route" in captured.err
    )
    assert demo.read_text().count("backend: remote") == 5


def test_init_writes_a_file_that_passes_check_and_never_overwrites(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "starter.yaml"
    args = ["init", "--legacy", "legacy_flask.app:app", "--new", "new_fastapi.app:app"]
    assert main([*args, "-o", str(out)]) == 0
    text = out.read_text()
    assert 'legacy: {wsgi: "legacy_flask.app:app"}' in text
    assert 'new: {asgi: "new_fastapi.app:app"}' in text
    assert "default: legacy" in text
    capsys.readouterr()
    assert main(["check", "--strict", str(out)]) == 0
    assert capsys.readouterr().err == ""
    doc = inventory(capsys, out)
    found = statuses(doc)
    # one route per ready endpoint, on legacy, named after the legacy endpoint
    assert found[("GET", "/books")] == ("ready", "api.list_books", "legacy")
    assert found[("POST", "/books")] == ("ready", "api.create_book", "legacy")
    assert found[("GET", "/books/{book_id}")] == ("ready", "api.get_book", "legacy")
    assert found[("PUT", "/books/{book_id}")] == ("ready", "api.update_book", "legacy")
    assert found[("DELETE", "/books/{book_id}")] == ("ready", "api.delete_book", "legacy")
    # /books/{book_id} would claim /books/events for legacy: init routes it to new
    assert found[("GET", "/books/events")] == ("new-only", "book_events", "new")
    assert doc["summary"]["unreachable"] == 0
    # flipping one is a one-word change
    assert main(["flip", "api.get_book", "new", "--config", str(out)]) == 0
    assert statuses(inventory(capsys, out))[("GET", "/books/{book_id}")][0] == "migrated"

    before = out.read_bytes()
    assert main([*args, "-o", str(out)]) == 1
    assert "already exists; init never overwrites a file" in capsys.readouterr().err
    assert out.read_bytes() == before
    # without -o: standard output
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("# Route table written by `gateway init`")


def test_init_refuses_an_app_that_cannot_be_imported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "starter.yaml"
    code = main(
        ["init", "--legacy", "nowhere.app:app", "--new", "new_fastapi.app:app", "-o", str(out)]
    )
    assert code == 1
    assert "gateway init: --legacy nowhere.app:app: importing 'nowhere.app:app' raised" in (
        capsys.readouterr().err
    )
    assert not out.exists()


def _wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_live_figures_from_a_served_gateway_with_two_workers(
    capsys: pytest.CaptureFixture[str], demo: Path
) -> None:
    with GatewayProcess(demo, "--workers", "2") as gw:
        with httpx.Client(base_url=gw.url, timeout=30, trust_env=False) as client:
            for _ in range(3):
                assert client.post("/books", json={"title": "T", "author": "A"}).status_code == 201
            for _ in range(5):
                assert client.get("/books").status_code == 200
            for _ in range(2):
                assert client.get("/books/1").status_code == 200
            assert client.get("/books/999").status_code == 404
            assert client.get("/ui/").status_code == 200

            def counted() -> dict[str, Any] | None:
                # A request is counted once its answer is sent: the client may be quicker.
                found = client.get("/-/inventory").json()
                total = sum(
                    data["requests"]
                    for entry in found["routes"].values()
                    for data in entry["backends"].values()
                )
                return found if total == 12 else None

            report = _wait_for(counted)
            assert report is not None
        assert statuses(report) == SHIPPED
        routes = report["routes"]
        assert routes["books.list"]["backends"]["new"]["requests"] == 5
        assert routes["books.list"]["backends"]["new"]["error_ratio"] == 0
        assert routes["books.list"]["backends"]["new"]["p99_seconds"] > 0
        assert routes["books.get"]["backends"]["new"]["requests"] == 3
        assert routes["_default"]["backends"]["legacy"]["requests"] == 4
        by_key = {(e["method"], e["path"]): e for e in report["endpoints"]}
        assert by_key[("GET", "/books")]["traffic"] == {"new": 5}
        assert by_key[("GET", "/books/{book_id}")]["traffic"] == {"new": 3}
        assert by_key[("POST", "/books")]["traffic"] is None  # _default claims many
        assert report["summary"]["traffic_share_new"] == round(8 / 12, 4)

        # the CLI takes the same figures from the running gateway
        doc = inventory(capsys, demo, "--url", gw.url)
        assert doc["routes"] == routes
        assert doc["summary"]["traffic_share_new"] == round(8 / 12, 4)

        capsys.readouterr()
        assert main(["inventory", "--config", str(demo), "--url", gw.url]) == 0
        text = capsys.readouterr().out
        assert "books.list -> new: 5 requests, 0.00% 5xx, p99 <= " in text
        assert "migrated               GET     /books                          books.list" in text
        assert text.rstrip().endswith("; 66.7% of requests served by new sides")

        # after a flip, the traffic moves back and the statuses follow the file
        assert main(["flip", "books.list", "legacy", "--config", str(demo)]) == 0

        sent_after_flip = 0

        def flipped() -> bool:
            nonlocal sent_after_flip
            sent_after_flip += 1
            r = httpx.get(gw.url + "/books", timeout=30, trust_env=False)
            return r.headers.get("x-gateway-backend") == "legacy"

        assert _wait_for(flipped)
        for _ in range(3):
            httpx.get(gw.url + "/books", timeout=30, trust_env=False)
        sent_after_flip += 3

        def settled() -> dict[str, Any] | None:
            r = httpx.get(gw.url + "/-/inventory", timeout=30, trust_env=False).json()
            found = statuses(r)[("GET", "/books")]
            return r if found == ("ready", "books.list", "legacy") else None

        after = _wait_for(settled)
        assert after is not None
        listed = after["routes"]["books.list"]["backends"]
        # Every request is counted once; the polls and the three after them may have
        # met a worker that had not reloaded yet, so only the total is exact.
        assert listed["new"]["requests"] >= 5 and listed["legacy"]["requests"] >= 1
        assert listed["new"]["requests"] + listed["legacy"]["requests"] == 5 + sent_after_flip
        ep = {(e["method"], e["path"]): e for e in after["endpoints"]}[("GET", "/books")]
        assert ep["traffic"] == {name: data["requests"] for name, data in listed.items()}
    capsys.readouterr()
    assert main(["inventory", "--config", str(demo), "--url", gw.url]) == 1
    assert "gateway inventory: cannot read" in capsys.readouterr().err


def test_inventory_endpoint_without_metrics_has_no_figures(demo: Path) -> None:
    with gateway_client(demo, metrics=False) as client:
        report = client.get("/-/inventory").json()
    assert statuses(report) == SHIPPED
    assert report["routes"] is None and report["summary"]["traffic_share_new"] is None
    assert all(e["traffic"] is None for e in report["endpoints"])


def test_inventory_endpoint_counts_shadow_results_and_errors(tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(
        DEMO.replace(
            "default: legacy",
            f"  down: {{url: 'http://127.0.0.1:{free_port()}'}}\ndefault: legacy",
        ).replace(
            "    path: /books\n    methods: [GET]\n    backend: new\n",
            "    path: /books\n    methods: [GET]\n    backend: legacy\n"
            "    shadow: {backend: new}\n"
            "  - {id: books.delete, path: '/books/{id}', methods: [DELETE], backend: down}\n",
        )
    )
    with gateway_client(config) as client:
        for _ in range(3):
            assert client.get("/books").status_code == 200
        for _ in range(2):
            assert client.delete("/books/1").status_code == 502

        def shadowed() -> dict[str, Any] | None:
            found = client.get("/-/inventory").json()
            shadow = found["routes"].get("books.list", {}).get("shadow") or {}
            return found if sum(shadow.values()) == 3 else None

        report = _wait_for(shadowed)
    assert report is not None
    routes = report["routes"]
    assert routes["books.list"]["shadow"] == {"match": 3, "mismatch": 0, "error": 0, "dropped": 0}
    assert routes["books.list"]["backends"]["legacy"]["requests"] == 3
    down = routes["books.delete"]["backends"]["down"]
    assert (down["requests"], down["error_ratio"]) == (2, 1.0)
    found = {(e["method"], e["path"]): e for e in report["endpoints"]}
    assert found[("GET", "/books")]["status"] == "shadowed"
    assert found[("GET", "/books")]["traffic"] == {"legacy": 3}
    # a url backend without openapi: not inspected, so not called a misrouting
    assert found[("DELETE", "/books/{book_id}")]["status"] == "migrated"
    assert found[("DELETE", "/books/{book_id}")]["traffic"] == {"down": 2}
    assert report["backends"]["down"]["inspected"] is False
    assert report["summary"]["traffic_share_new"] == round(2 / 5, 4)


def test_inventory_url_sends_the_admin_token(
    capsys: pytest.CaptureFixture[str], demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway with an admin token gives its figures to `inventory --url` only with
    GATEWAY_ADMIN_TOKEN set, as `gateway serve` reads it; without, the CLI says so."""
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)
    with ThreadServer(Gateway(Settings(config=str(demo), admin_token="t0ken"))) as server:
        assert main(["inventory", "--config", str(demo), "--url", server.url]) == 1
        err = capsys.readouterr().err
        assert "it answered 401" in err and "set GATEWAY_ADMIN_TOKEN" in err
        monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "t0ken")
        assert main(["inventory", "--config", str(demo), "--url", server.url]) == 0
        assert "served by new sides" in capsys.readouterr().out
