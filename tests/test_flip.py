"""`gateway flip` and the admin API: the file on disk, auth, and answers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.routefile.editing import flip
from tests.harness import gateway_client

COMMENTED = """\
# Route table of the shop.   Keep this header!
version: 1

backends:
  legacy: {wsgi: "tests.apps:wsgi"}   # Flask
  new:    {asgi: "tests.apps:asgi"}   # FastAPI

default: legacy   # anything unclaimed

routes:
  # The list endpoint moved first.
  - id: books.list
    path: /books
    methods: [GET]
    backend: new        # flipped on 2026-11-01
  - id: books.get
    path: "/books/{book_id}"
    backend: 'legacy'
  - {id: books.create, path: /books, methods: [POST], backend: "legacy"}
"""


@pytest.fixture
def routes(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(COMMENTED)
    return path


def test_flip_changes_only_that_value(routes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flip", "books.list", "legacy", "--config", str(routes)]) == 0
    assert routes.read_text() == COMMENTED.replace(
        "    backend: new        # flipped", "    backend: legacy        # flipped"
    )
    assert capsys.readouterr().out == f"{routes}: books.list -> legacy\n"


def test_flip_keeps_the_quoting_style(routes: Path) -> None:
    assert main(["flip", "books.get", "new", "--config", str(routes)]) == 0
    assert main(["flip", "books.create", "new", "--config", str(routes)]) == 0
    assert routes.read_text() == COMMENTED.replace("backend: 'legacy'", "backend: 'new'").replace(
        'backend: "legacy"}', 'backend: "new"}'
    )


def test_flip_all_is_the_emergency_switch(routes: Path) -> None:
    assert main(["flip", "--all", "legacy", "--config", str(routes)]) == 0
    assert routes.read_text() == COMMENTED.replace(
        "    backend: new        # flipped", "    backend: legacy        # flipped"
    )
    assert main(["flip", "--all", "new", "--config", str(routes)]) == 0
    text = routes.read_text()
    assert text.count("backend: new") == 1 and "'new'" in text and '"new"' in text


def test_flip_is_atomic_rename_and_keeps_the_mode(routes: Path) -> None:
    os.chmod(routes, 0o640)
    inode = routes.stat().st_ino
    assert main(["flip", "books.get", "new", "--config", str(routes)]) == 0
    assert routes.stat().st_ino != inode  # a new file renamed over the old one
    assert routes.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in routes.parent.iterdir()] == ["routes.yaml"]  # no temp left


def test_flip_through_a_symlink_edits_the_target(tmp_path: Path) -> None:
    real = tmp_path / "config" / "routes.yaml"
    real.parent.mkdir()
    real.write_text(COMMENTED)
    link = tmp_path / "routes.yaml"
    link.symlink_to(real)
    assert main(["flip", "books.get", "new", "--config", str(link)]) == 0
    assert link.is_symlink()
    assert "backend: 'new'" in real.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["flip", "zzz", "new"],
            "unknown route 'zzz' (use one of: books.create, books.get, books.list); "
            "nothing was changed",
        ),
        (["flip", "books.gte", "new"], "unknown route 'books.gte' (did you mean 'books.get'?);"),
        (["flip", "books.get", "newer"], "unknown backend 'newer' (did you mean 'new'?);"),
        (["flip", "books.get", "redis"], "unknown backend 'redis' (use one of: legacy, new);"),
        (["flip", "--all", "gone"], "unknown backend 'gone'"),
    ],
)
def test_flip_refuses_unknown_names_and_changes_nothing(
    routes: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args, "--config", str(routes)]) == 1
    assert message in capsys.readouterr().err
    assert routes.read_text() == COMMENTED


def test_flip_refuses_an_invalid_file(routes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = COMMENTED.replace("methods: [GET]", "methods: [GOT]")
    routes.write_text(broken)
    assert main(["flip", "books.get", "new", "--config", str(routes)]) == 1
    err = capsys.readouterr().err
    assert f"{routes}:14:15: route 'books.list': unknown HTTP method 'GOT'" in err
    assert routes.read_text() == broken


def test_flip_to_the_same_backend_changes_nothing(
    routes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inode = routes.stat().st_ino
    assert main(["flip", "books.list", "new", "--config", str(routes)]) == 0
    assert "already on new" in capsys.readouterr().out
    assert routes.stat().st_ino == inode


# --- admin API -----------------------------------------------------------------


def test_flip_with_expect_changes_only_routes_still_on_the_expected_backend() -> None:
    """The guard an automatic rollback uses: it must not undo an operator's flip."""
    data = COMMENTED.encode()
    # books.get is on legacy, not on new: a rollback expecting new changes nothing.
    unchanged = flip("books.get", "legacy", expect="new")(data, "routes.yaml")
    assert (unchanged.changed, unchanged.data) == ([], data)
    moved = flip("books.get", "new", expect="legacy")(data, "routes.yaml")
    assert moved.changed == ["books.get"]
    assert moved.data == data.replace(b"backend: 'legacy'", b"backend: 'new'")
    # Every route, but only those on the expected side.
    every = flip(None, "legacy", expect="new")(data, "routes.yaml")
    assert every.changed == ["books.list"]
    assert every.config.route("books.list").backend == "legacy"


def test_routes_endpoint_describes_the_live_table(routes: Path) -> None:
    with gateway_client(routes) as client:
        body = client.get("/-/routes").json()
    assert body["version"] == 1
    assert body["source"] == str(routes)
    assert body["default"] == "legacy"
    assert body["last_error"] is None
    assert len(body["sha256"]) == 64
    assert body["loaded_at"].endswith("Z")
    assert body["routes"] == [
        {"id": "books.list", "path": "/books", "methods": ["GET"], "backend": "new"},
        {"id": "books.get", "path": "/books/{book_id}", "methods": None, "backend": "legacy"},
        {"id": "books.create", "path": "/books", "methods": ["POST"], "backend": "legacy"},
    ]


def test_put_route_persists_and_applies_at_once(routes: Path) -> None:
    with gateway_client(routes, watch_interval=5) as client:
        assert client.get("/books/1").headers["x-gateway-backend"] == "legacy"
        r = client.put("/-/routes/books.get", json={"backend": "new"})
        assert r.status_code == 200
        assert r.json() == {
            "route": {
                "id": "books.get",
                "path": "/books/{book_id}",
                "methods": None,
                "backend": "new",
            },
            "changed": True,
        }
        # Applied on this worker at once, without waiting for the watcher.
        assert client.get("/books/1").headers["x-gateway-backend"] == "new"
    assert routes.read_text() == COMMENTED.replace("backend: 'legacy'", "backend: 'new'")


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        (
            "/-/routes/books.nope",
            {"backend": "new"},
            404,
            "unknown route 'books.nope' (did you mean 'books.get'?)",
        ),
        (
            "/-/routes/books.get",
            {"backend": "newer"},
            422,
            "unknown backend 'newer' (did you mean 'new'?)",
        ),
        (
            "/-/routes/books.get",
            {"backend": 3},
            400,
            'the body must be {"backend": "<name>"} or {"canary": {"percent": <0-100>}} '
            '(with "backend" in canary to add one)',
        ),
        (
            "/-/routes/books.get",
            {"backend": "new", "x": 1},
            400,
            'the body must be {"backend": "<name>"} or {"canary": {"percent": <0-100>}} '
            '(with "backend" in canary to add one)',
        ),
    ],
)
def test_put_route_errors(routes: Path, path: str, body: object, status: int, error: str) -> None:
    with gateway_client(routes) as client:
        r = client.put(path, json=body)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] == error
    assert routes.read_text() == COMMENTED


def test_without_token_changes_are_loopback_only(routes: Path) -> None:
    with gateway_client(routes, client=("192.0.2.7", 4000)) as client:
        assert client.get("/-/routes").status_code == 403  # reads too (tests/test_security.py)
        assert client.get("/-/healthz").json() == {"status": "ok"}
        r = client.put("/-/routes/books.get", json={"backend": "new"})
        assert r.status_code == 403
        assert "loopback" in r.json()["error"]
        assert client.post("/-/reload").status_code == 403
    assert routes.read_text() == COMMENTED


def test_with_token_changes_need_the_bearer_token(routes: Path) -> None:
    with gateway_client(routes, client=("127.0.0.1", 4000), admin_token="s3cret") as client:
        r = client.put("/-/routes/books.get", json={"backend": "new"})
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = client.put(
            "/-/routes/books.get",
            json={"backend": "new"},
            headers={"Authorization": "Bearer wrong"},
        )
        assert r.status_code == 403
        assert routes.read_text() == COMMENTED
        r = client.put(
            "/-/routes/books.get",
            json={"backend": "new"},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert r.status_code == 200
    with gateway_client(routes, client=("192.0.2.7", 4000), admin_token="s3cret") as client:
        r = client.post("/-/reload", headers={"Authorization": "bearer s3cret"})
        assert r.status_code == 200  # a token lets remote clients in
    # The token as a Secret mounted from a file gives it: with its newline.
    with gateway_client(routes, client=("192.0.2.7", 4000), admin_token="s3cret\n") as client:
        r = client.post("/-/reload", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200
        r = client.post("/-/reload", headers={"Authorization": "Bearer s3cre"})
        assert r.status_code == 403
    with gateway_client(routes, client=("192.0.2.7", 4000), admin_token=" \n") as client:
        r = client.post("/-/reload", headers={"Authorization": "Bearer  "})
        assert r.status_code == 403  # a blank token is none: loopback clients only
        assert "loopback" in r.json()["error"]


def test_unknown_admin_paths_and_methods(routes: Path) -> None:
    with gateway_client(routes) as client:
        assert client.get("/-/nope", headers={"X-Request-ID": "a1"}).headers["x-request-id"] == "a1"
        assert client.get("/-/nope").status_code == 404
        assert client.get("/-/nope").json() == {"error": "no such admin endpoint"}
        assert client.delete("/-/routes").status_code == 405
        assert client.get("/-/reload").status_code == 405


def test_readyz_reports_ready_once_the_table_is_live(routes: Path) -> None:
    from starlette.testclient import TestClient

    from gateway.app import Gateway
    from gateway.settings import Settings

    app = Gateway(Settings(config=str(routes)))
    assert TestClient(app).get("/-/readyz").status_code == 503  # no lifespan run: no table
    with TestClient(app) as client:
        assert client.get("/-/readyz").json() == {"status": "ready"}
