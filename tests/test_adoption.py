"""A team's own apps: app factories, imported from next to the route file (or --app-dir)
without PYTHONPATH, by `check` and by every `serve` worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT, GatewayProcess, gateway_client, write_routes

SHOP = """\
import os
from pathlib import Path

def create_app():
    with Path(__file__).with_name("calls.log").open("a") as log:
        log.write(f"{os.getpid()}\\n")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"shop " + environ["PATH_INFO"].encode()]

    return app

def broken():
    raise RuntimeError("no database configured")

not_a_factory = 42

def plain(environ, start_response, *rest):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain"]
"""

SERVICE = """\
def build():
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"service " + scope["path"].encode()})
    return app
"""

TABLE = """\
version: 1
backends:
  legacy: {wsgi: "shop:create_app()"}
  new: {asgi: "svc.main:build()"}
default: legacy
routes:
  - {id: svc, path: /svc, backend: new}
"""


def _project(folder: Path) -> Path:
    """A team's checkout: its apps, and its route file next to them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shop.py").write_text(SHOP)
    (folder / "svc").mkdir()
    (folder / "svc" / "__init__.py").write_text("")
    (folder / "svc" / "main.py").write_text(SERVICE)
    return write_routes(folder, TABLE)


def _gateway(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The `gateway` command, run elsewhere and with nothing of the apps' on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "gateway.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_check_imports_apps_next_to_the_route_file_and_never_calls_a_factory(
    tmp_path: Path,
) -> None:
    routes = _project(tmp_path / "team")
    done = _gateway("check", str(routes), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{routes}: OK (1 routes, 2 backends")
    assert not (tmp_path / "team" / "calls.log").exists()


def test_app_dir_says_where_apps_are_when_not_beside_the_route_file(tmp_path: Path) -> None:
    _project(tmp_path / "code")
    routes = write_routes(tmp_path, TABLE)  # the route file elsewhere
    done = _gateway("check", str(routes), cwd=tmp_path / "code" / "svc")
    assert done.returncode == 1
    assert "cannot import 'shop:create_app()': module 'shop' not found" in done.stderr
    assert "--app-dir" in done.stderr
    done = _gateway("check", str(routes), "--app-dir", str(tmp_path / "code"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = _gateway("routes", str(routes), "--app-dir", "code", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_check_and_routes_take_the_route_file_as_serve_and_flip_do(tmp_path: Path) -> None:
    """`--config FILE`, the spelling of serve, flip and inventory, or the file alone."""
    routes = _project(tmp_path / "team")
    done = _gateway("check", "--config", "team/routes.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("team/routes.yaml: OK (1 routes")
    done = _gateway("routes", "--config", str(routes), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].split() == ["svc", "*", "/svc", "new"]
    done = _gateway("routes", str(routes), "--config", str(routes), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = _gateway("check", "team/routes.yaml", "--config", "other.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "check: two route files given (team/routes.yaml, other.yaml)" in done.stderr


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path: Path) -> None:
    """`gateway routes | head -1`: the pipe closes before the table is written."""
    routes = _project(tmp_path / "team")
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        command = [sys.executable, "-m", "gateway.cli", "routes", str(routes)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            command, stdout=write_end, stderr=subprocess.PIPE, text=True, env=env, timeout=60
        )
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert done.stderr == ""


def test_check_refuses_a_factory_that_is_not_callable(tmp_path: Path) -> None:
    routes = _project(tmp_path / "team")
    routes.write_text(TABLE.replace("create_app()", "not_a_factory()"))
    done = _gateway("check", str(routes), cwd=tmp_path)
    assert done.returncode == 1
    assert "'shop:not_a_factory()': 'not_a_factory' is not a factory (it is not callable)" in (
        done.stderr
    )
    routes.write_text(TABLE.replace("create_app()", "create_app(1)"))
    done = _gateway("check", str(routes), cwd=tmp_path)
    assert "is not an import path; write it as 'package.module:app'" in done.stderr


def test_check_refuses_a_factory_named_without_its_call(tmp_path: Path) -> None:
    """`create_app` for `create_app()` would pass and then fail every request."""
    routes = _project(tmp_path / "team")
    routes.write_text(TABLE.replace("create_app()", "create_app").replace("build()", "build"))
    done = _gateway("check", str(routes), cwd=tmp_path)
    assert done.returncode == 1
    assert (
        "'shop:create_app' is a function that does not take an app's arguments "
        "(environ, start_response); if it makes the app, write 'shop:create_app()'"
    ) in done.stderr
    assert (
        "'svc.main:build' is a function that does not take an app's arguments "
        "(scope, receive, send); if it makes the app, write 'svc.main:build()'"
    ) in done.stderr
    assert not (tmp_path / "team" / "calls.log").exists()
    routes.write_text(TABLE.replace("create_app()", "plain"))  # a function that is the app
    done = _gateway("check", str(routes), cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_each_worker_calls_the_factories_once_at_startup(tmp_path: Path) -> None:
    routes = _project(tmp_path / "team")
    with GatewayProcess(routes, "--workers", "2") as gw:
        for _ in range(10):
            assert httpx.get(gw.url + "/a/b", timeout=10).text == "shop /a/b"
            assert httpx.get(gw.url + "/svc", timeout=10).text == "service /svc"
    calls = (tmp_path / "team" / "calls.log").read_text().split()
    assert len(calls) == 2  # one per worker, none per request
    assert len(set(calls)) == 2


def test_a_factory_that_raises_stops_the_start_with_its_reason(tmp_path: Path) -> None:
    routes = _project(tmp_path / "team")
    routes.write_text(TABLE.replace("create_app()", "broken()"))
    sys.path.insert(0, str(tmp_path / "team"))
    try:
        with pytest.raises(RuntimeError) as info, gateway_client(routes):
            pass
    finally:
        sys.path.remove(str(tmp_path / "team"))
        for name in ("shop", "svc", "svc.main"):
            sys.modules.pop(name, None)
    assert str(info.value) == (
        "backend 'legacy' did not load: shop:broken() raised RuntimeError('no database configured')"
    )


def test_init_imports_the_apps_from_where_its_file_goes(tmp_path: Path) -> None:
    """Run as installed (the `gateway` script, whose own directory is first on sys.path,
    not the current one): the apps beside the file -o names, else in the current
    directory, where the file printed is to be saved."""
    team = tmp_path / "team"
    (team / "svc").mkdir(parents=True)
    (team / "shop.py").write_text(
        "from flask import Flask\n\ndef create_app():\n    app = Flask(__name__)\n"
        "    app.add_url_rule('/orders', 'orders', lambda: 'orders')\n    return app\n"
    )
    (team / "svc" / "__init__.py").write_text("")
    (team / "svc" / "main.py").write_text(
        "from fastapi import FastAPI\n\napp = FastAPI()\napp.get('/orders')(lambda: 'orders')\n"
    )
    script = Path(sys.executable).with_name("gateway")
    command = [str(script), "init", "--legacy", "shop:create_app()", "--new", "svc.main:app"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    here = subprocess.run(command, cwd=team, env=env, capture_output=True, text=True, timeout=60)
    assert here.returncode == 0, here.stderr
    assert 'legacy: {wsgi: "shop:create_app()"}' in here.stdout
    written = team / "starter.yaml"
    beside = subprocess.run(
        [*command, "-o", str(written)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert beside.returncode == 0, beside.stderr
    assert written.read_text() == here.stdout
